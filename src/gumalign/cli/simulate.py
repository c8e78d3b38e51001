"""`gumalign simulate`: realistic simulated subtomograms with known orientations, as in the Gum-Net paper (S3.2.1).

Each particle is a template at a uniformly random rotation and a random shift, projected over a tilt series about y,
filtered by the CTF and a detector MTF, given Gaussian noise to reach the SNR, and reconstructed by weighted
back-projection. Output: one MRC per particle, the shared missing-wedge weight (rlnCtfImage; with --ctf-images each
particle's own 3D CTF as RELION writes it), particles.star with the ground truth in RELION's meaning, the noise-free
reference(s) and a README with the command.

Example usage:

    gumalign simulate --structure builtin:proteasome --n 1000 --snr 0.1 --out sim/
    gumalign simulate --structure 3j9i.pdb --structure builtin:rubisco --n 500 --snr 0.05 --jobs 2 --out mixed/
    gumalign simulate --structure builtin:proteasome --pairs --n 10500 --snr 100 --tilt-range -60 60 --out pairs/
    gumalign simulate --structure builtin:proteasome --n 200 --snr 0.1 --ctf-images --out ctf_sim/
    gumalign simulate --list-structures
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import cli_runtime, fail, handle_errors, out_console, print_summary
from gumalign.cli._options import JsonOut, Quiet


class WeightingChoice(str, Enum):
    mass = "mass"
    atomic_number = "atomic-number"


@handle_errors
def command(
    structure: Annotated[
        Optional[List[str]],
        typer.Option(
            "--structure",
            "-s",
            help="Atomic model (PDB/mmCIF, .gz too), density map (.mrc/.map) or builtin:NAME; repeat for a mixed set.",
        ),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of particles (pairs with --pairs).")] = 100,
    snr: Annotated[
        float, typer.Option(help="Target SNR = var(signal)/var(noise) (the seed's c/(1-c)); inf for no noise.")
    ] = 0.1,
    tilt_range: Annotated[
        Tuple[float, float], typer.Option(help="Minimum and maximum tilt in degrees (tilt axis y, beam z).")
    ] = (-60.0, 60.0),
    tilt_step: Annotated[float, typer.Option(help="Tilt increment in degrees.")] = 1.0,
    max_shift: Annotated[float, typer.Option(help="Random shifts up to this many voxels per axis.")] = 7.0,
    box: Annotated[int, typer.Option(help="Box size N in voxels.")] = 32,
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å.")] = 12.0,
    resolution: Annotated[float, typer.Option(help="Resolution in Å of densities made from atomic models.")] = 12.0,
    weighting: Annotated[
        WeightingChoice, typer.Option(help="Atom weights for atomic models.", case_sensitive=False)
    ] = WeightingChoice.mass,
    no_ctf: Annotated[bool, typer.Option("--no-ctf", help="Switch the CTF off.")] = False,
    no_mtf: Annotated[bool, typer.Option("--no-mtf", help="Switch the detector MTF off.")] = False,
    noise_mtf: Annotated[
        bool, typer.Option("--noise-mtf", help="Pass the noise through the MTF too (default: signal only).")
    ] = False,
    defocus: Annotated[float, typer.Option(help="Defocus in µm; negative is underfocus.")] = -2.0,
    voltage: Annotated[float, typer.Option(help="Acceleration voltage in kV.")] = 300.0,
    cs: Annotated[float, typer.Option(help="Spherical aberration in mm.")] = 2.7,
    amplitude_contrast: Annotated[float, typer.Option(help="Amplitude contrast fraction.")] = 0.07,
    envelope_sigma: Annotated[float, typer.Option(help="CTF envelope width as a fraction of Nyquist.")] = 0.4,
    mtf_sigma: Annotated[float, typer.Option(help="MTF Gaussian width as a fraction of Nyquist.")] = 0.4,
    pairs: Annotated[bool, typer.Option("--pairs", help="Write the seed's pairs: s_a (no wedge) and s_b.")] = False,
    ctf_images: Annotated[
        bool,
        typer.Option(
            "--ctf-images",
            help="Write each particle's 3D CTF (wedge × CTF × MTF) as RELION does: ctf/particle_NNNNNN.mrc in the "
            "FFTW half layout, named by rlnCtfImage (default: every particle names the shared 0/1 weight.mrc).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed, same bytes).")] = 0,
    jobs: Annotated[int, typer.Option(help="Worker threads; the output does not depend on it.")] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a folder that holds a simulated set.")
    ] = False,
    list_structures: Annotated[
        bool, typer.Option("--list-structures", help="List the built-in templates and exit.")
    ] = False,
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Simulate subtomograms (or the seed's s_a/s_b pairs) with ground-truth orientations and shifts."""
    if list_structures:
        _print_builtins()
        return
    if not structure:
        raise fail("give at least one --structure (a model file, a map or builtin:NAME; see --list-structures)")
    if out is None:
        raise fail("--out is required")
    from gumalign.ops.simulate import SimulateRequest, simulate

    request = SimulateRequest(
        structures=tuple(structure), out=out, n=n, snr=snr, tilt_range=tuple(tilt_range), tilt_step=tilt_step,
        max_shift=max_shift, box=box, voxel_size=voxel_size, resolution=resolution, weighting=weighting.value,
        no_ctf=no_ctf, no_mtf=no_mtf, noise_mtf=noise_mtf, defocus=defocus, voltage=voltage, cs=cs,
        amplitude_contrast=amplitude_contrast, envelope_sigma=envelope_sigma, mtf_sigma=mtf_sigma, pairs=pairs,
        ctf_images=ctf_images, seed=seed, jobs=jobs, overwrite=overwrite,
    )
    report = simulate(request, cli_runtime("cpu", None, quiet))
    print_summary(report.summary(), json_out)


def _print_builtins() -> None:
    from gumalign.simulate.templates import list_builtin_templates, template_record

    record = template_record()
    out_console.print(
        f"built-in templates ({record['box']}³, {record['voxel_size']:g} Å voxels, {record['resolution']:g} Å "
        f"resolution; symmetric ones in RELION's frame of their point group); use --structure builtin:NAME",
        soft_wrap=True,
    )
    for template in list_builtin_templates():
        out_console.print(
            f"  {template.name:16s} {template.pdb_id:5s} {template.mass_kda:7.1f} kDa  radius "
            f"{template.radius_voxels:4.1f} vox  {template.symmetry:3s}  {template.title}",
            markup=False,
            soft_wrap=True,
        )
