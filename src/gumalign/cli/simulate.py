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

import math
import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import check_output_folder as check_writable_folder
from gumalign.cli._common import fail, handle_errors, info, out_console, progress_bar


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No log output or progress bar.")] = False,
) -> None:
    """Simulate subtomograms (or the seed's s_a/s_b pairs) with ground-truth orientations and shifts."""
    if list_structures:
        _print_builtins()
        return
    if not structure:
        raise fail("give at least one --structure (a model file, a map or builtin:NAME; see --list-structures)")
    if out is None:
        raise fail("--out is required")
    if ctf_images and pairs:
        raise fail("--ctf-images writes particles' 3D CTFs; the seed's pairs (--pairs) have none")
    _validate(n=n, snr=snr, box=box, voxel_size=voxel_size, resolution=resolution, tilt_range=tilt_range,
              tilt_step=tilt_step, max_shift=max_shift, jobs=jobs)

    import torch

    from gumalign.simulate.dataset import SimulationPlan, check_output_folder, write_dataset
    from gumalign.simulate.imaging import ImagingParams
    from gumalign.simulate.structures import load_structure

    torch.set_num_threads(1)  # parallelism comes from --jobs worker threads
    weights = "mass" if weighting == WeightingChoice.mass else "atomic_number"
    loaded = [load_structure(spec, box=box, voxel_size=voxel_size, resolution=resolution, weighting=weights)
              for spec in structure]
    _make_names_unique(loaded)
    for item in loaded:
        if item.radius_voxels is not None and item.radius_voxels + max_shift > box / 2 - 0.5:
            info(f"note: {item.name} reaches {item.radius_voxels:.1f} voxels from its centre; with shifts up to "
                 f"{max_shift:g} some particles are cut by the box edge", quiet)

    params = ImagingParams(
        voltage_kv=voltage, defocus_um=defocus, cs_mm=cs, amplitude_contrast=amplitude_contrast,
        envelope_sigma=envelope_sigma, mtf_sigma=mtf_sigma, ctf=not no_ctf, mtf=not no_mtf,
        noise_mtf=noise_mtf,
    )
    plan = SimulationPlan(
        structures=loaded, n=n, snr=None if math.isinf(snr) else snr, tilt_range=tuple(tilt_range),
        tilt_step=tilt_step, max_shift=max_shift, params=params, seed=seed, pairs=pairs, command="",
        ctf_images=ctf_images,
    )
    plan.command = _command_line(dict(
        structure=structure, out=out, n=n, snr=snr, tilt_range=tilt_range, tilt_step=tilt_step, max_shift=max_shift,
        box=box, voxel_size=voxel_size, resolution=resolution, weighting=weighting.value, no_ctf=no_ctf,
        no_mtf=no_mtf, noise_mtf=noise_mtf, defocus=defocus, voltage=voltage, cs=cs, amplitude_contrast=amplitude_contrast,
        envelope_sigma=envelope_sigma, mtf_sigma=mtf_sigma, pairs=pairs, seed=seed, jobs=jobs,
        ctf_images=ctf_images,
    ))
    check_output_folder(out, overwrite)
    check_writable_folder(out)
    what = "pairs" if pairs else "particles"
    with progress_bar(f"simulating {what}", total=n, quiet=quiet) as advance:
        write_dataset(plan, out, jobs=jobs, overwrite=overwrite, progress=advance)
    star = out / ("pairs.star" if pairs else "particles.star")
    info(f"wrote {n} {what} of {', '.join(s.name for s in loaded)} ({box}³, {voxel_size:g} Å, SNR "
         f"{'none' if math.isinf(snr) else f'{snr:g}'}) to {out}/; ground truth in {star}", quiet)


def _validate(*, n, snr, box, voxel_size, resolution, tilt_range, tilt_step, max_shift, jobs) -> None:
    """Refuse bad option values with one line and exit status 2."""
    if n < 1:
        raise fail(f"--n must be at least 1, got {n}")
    if math.isnan(snr) or snr <= 0:
        raise fail(f"--snr must be positive (inf for no noise), got {snr:g}")
    if box < 8:
        raise fail(f"--box must be at least 8, got {box}")
    if not voxel_size > 0:
        raise fail(f"--voxel-size must be positive, got {voxel_size:g}")
    if not resolution > 0:
        raise fail(f"--resolution must be positive, got {resolution:g}")
    lo, hi = tilt_range
    if not -90 <= lo <= hi <= 90:
        raise fail(f"--tilt-range must satisfy -90 <= min <= max <= 90, got {lo:g} {hi:g}")
    if not tilt_step > 0:
        raise fail(f"--tilt-step must be positive, got {tilt_step:g}")
    if not 0 <= max_shift <= box / 2:
        raise fail(f"--max-shift must be between 0 and half the box ({box // 2}), got {max_shift:g}")
    if jobs < 1:
        raise fail(f"--jobs must be at least 1, got {jobs}")


def _make_names_unique(structures) -> None:
    seen: dict[str, int] = {}
    for item in structures:
        count = seen.get(item.name, 0) + 1
        seen[item.name] = count
        if count > 1:
            item.name = f"{item.name}_{count}"


def _command_line(settings: dict) -> str:
    """The full command with every setting spelled out, so rerunning it reproduces the data exactly."""
    parts = ["gumalign", "simulate"]
    for spec in settings["structure"]:
        parts += ["--structure", spec]
    parts += ["--n", str(settings["n"]), "--snr", f"{settings['snr']:g}"]
    parts += ["--tilt-range", f"{settings['tilt_range'][0]:g}", f"{settings['tilt_range'][1]:g}"]
    for option in ("tilt_step", "max_shift", "box", "voxel_size", "resolution"):
        parts += ["--" + option.replace("_", "-"), f"{settings[option]:g}"]
    parts += ["--weighting", settings["weighting"]]
    for flag in ("no_ctf", "no_mtf", "noise_mtf", "pairs", "ctf_images"):
        if settings[flag]:
            parts.append("--" + flag.replace("_", "-"))
    for option in ("defocus", "voltage", "cs", "amplitude_contrast", "envelope_sigma", "mtf_sigma"):
        parts += ["--" + option.replace("_", "-"), f"{settings[option]:g}"]
    # --jobs is left out: it does not change the output.
    parts += ["--seed", str(settings["seed"]), "--out", str(settings["out"])]
    return shlex.join(parts)


def _print_builtins() -> None:
    from gumalign.simulate.templates import list_builtin_templates, template_record

    record = template_record()
    out_console.print(
        f"built-in templates ({record['box']}³, {record['voxel_size']:g} Å voxels, {record['resolution']:g} Å "
        f"resolution); use --structure builtin:NAME",
        soft_wrap=True,
    )
    for template in list_builtin_templates():
        out_console.print(
            f"  {template.name:16s} {template.pdb_id:5s} {template.mass_kda:7.1f} kDa  radius "
            f"{template.radius_voxels:4.1f} vox  {template.title}",
            markup=False,
            soft_wrap=True,
        )
