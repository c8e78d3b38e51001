"""`gumalign fsc`: Fourier shell correlation and resolution, as RELION postprocess reports them.

Three ways to give the maps: two half maps; --gold-standard --particles (the two halves of an aligned STAR file are
averaged independently, as `gumalign average` does); or one map and --ref, a known structure (reports FSC 0.5 as the
final resolution, 0.143 for half maps). By default both maps are multiplied by a soft spherical mask and the masked FSC
is corrected by phase randomisation beyond where the unmasked FSC first drops below 0.8 (Chen et al. 2013); --mask
gives your own mask and --no-mask skips masking. Writes a RELION-postprocess-style STAR file, an EMDB FSC XML file and
a PNG plot (and, with --gold-standard, the two half maps it names: <out>_half1.mrc, <out>_half2.mrc), and prints one
summary line on stdout:

    resolution_0.143=24.10 resolution_0.5=30.20 final_resolution=24.10 final_threshold=0.143 interpolated_0.143=23.62 ...

Resolutions are RELION's (box·voxel / the last shell at or above the threshold, rlnFinalResolution); the
interpolated_* values interpolate linearly to where the curve crosses it (RELION's --interpolate). Shell 0 is
written at 999 Å, as RELION writes it, and so is a curve that is below the threshold at shell 1. Empty or constant maps
and masks that are zero everywhere are refused. The half maps of --gold-standard are made exactly as `gumalign
average` makes its _half1/_half2 maps (the same constant regulariser), so both ways give the same curve.

Example usage:

    gumalign fsc avg_half1.mrc avg_half2.mrc --out fsc.star
    gumalign fsc --gold-standard --particles aligned.star --tilt-range -60 60
    gumalign fsc avg.mrc --ref template.mrc --no-mask
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import Device, JsonOut, Quiet, Symmetry, Threads


@handle_errors
def command(
    maps: Annotated[
        Optional[List[Path]], typer.Argument(help="Two half maps, or one map with --ref.", show_default=False)
    ] = None,
    ref: Annotated[Optional[Path], typer.Option(help="Known structure to compare one map with (FSC 0.5).")] = None,
    gold_standard: Annotated[
        bool, typer.Option("--gold-standard", help="Average the two half sets of --particles and compare them.")
    ] = False,
    particles: Annotated[Optional[Path], typer.Option("--particles", "-p", help="Aligned particles (STAR).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Mask (MRC, values 0..1) instead of the soft sphere.")] = None,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="No mask, no phase randomisation.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file; .xml and .png go beside it.")] = Path(
        "fsc.star"
    ),
    pixel_size: Annotated[
        Optional[float], typer.Option(help="Voxel size in Å (overrides the headers).", min=0.0)
    ] = None,
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range for --gold-standard when the STAR has no rlnCtfImage."),
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Particles per batch (--gold-standard; default 64).", min=1)] = None,
    device: Device = "auto",
    threads: Threads = None,
    seed: Annotated[int, typer.Option(help="Seed of the phase randomisation.")] = 0,
    sym: Symmetry = "C1",
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Fourier shell correlation of half maps (0.143) or of a map against a reference (0.5), with resolution in Å."""
    from gumalign.ops import FscRequest, fsc

    request = FscRequest(
        maps=tuple(maps or ()), ref=ref, gold_standard=gold_standard, particles=particles, mask=mask, no_mask=no_mask,
        out=out, pixel_size=pixel_size, tilt_range=tuple(tilt_range) if tilt_range is not None else None,
        batch_size=batch_size, seed=seed, symmetry=sym,
    )
    report = fsc(request, cli_runtime(device, threads, quiet))
    print_summary(report.summary(), json_out)
