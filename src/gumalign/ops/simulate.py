"""The `simulate` operation: simulated subtomograms (or the seed's s_a/s_b pairs) with ground-truth orientations, as in
the Gum-Net paper (S3.2.1); see gumalign.cli.simulate for the imaging model in words.

    from gumalign.ops import SimulateRequest, simulate

    simulate(SimulateRequest(structures=("builtin:proteasome",), out=Path("sim"), n=100, snr=0.1, jobs=2))

Torch runs one thread per worker while simulating (parallelism comes from ``jobs``); the caller's thread count is
restored afterwards.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.ops.runtime import Runtime


@dataclass(frozen=True)
class SimulateRequest:
    """What `gumalign simulate` is asked (the CLI's --help gives each option's meaning; all lengths in voxels)."""

    structures: tuple[str, ...]
    out: Path
    n: int = 100
    snr: float = 0.1
    tilt_range: tuple[float, float] = (-60.0, 60.0)
    tilt_step: float = 1.0
    max_shift: float = 7.0
    box: int = 32
    voxel_size: float = 12.0
    resolution: float = 12.0
    weighting: str = "mass"  # or 'atomic-number'
    no_ctf: bool = False
    no_mtf: bool = False
    noise_mtf: bool = False
    defocus: float = -2.0
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.07
    envelope_sigma: float = 0.4
    mtf_sigma: float = 0.4
    pairs: bool = False
    ctf_images: bool = False
    seed: int = 0
    jobs: int = 1
    overwrite: bool = False


@dataclass
class SimulateReport:
    out: Path
    star: Path
    n: int
    names: list[str]

    def summary(self) -> dict:
        return {"n": self.n, "structures": ",".join(self.names), "star": str(self.star), "out": str(self.out)}


def check_request(r: SimulateRequest) -> None:
    """Refuse bad values with one line (a GumalignError), before any work."""
    if not r.structures:
        raise GumalignError("give at least one --structure (a model file, a map or builtin:NAME; see --list-structures)")
    if r.ctf_images and r.pairs:
        raise GumalignError("--ctf-images writes particles' 3D CTFs; the seed's pairs (--pairs) have none")
    if r.n < 1:
        raise GumalignError(f"--n must be at least 1, got {r.n}")
    if math.isnan(r.snr) or r.snr <= 0:
        raise GumalignError(f"--snr must be positive (inf for no noise), got {r.snr:g}")
    if r.box < 8:
        raise GumalignError(f"--box must be at least 8, got {r.box}")
    if not r.voxel_size > 0:
        raise GumalignError(f"--voxel-size must be positive, got {r.voxel_size:g}")
    if not r.resolution > 0:
        raise GumalignError(f"--resolution must be positive, got {r.resolution:g}")
    lo, hi = r.tilt_range
    if not -90 <= lo <= hi <= 90:
        raise GumalignError(f"--tilt-range must satisfy -90 <= min <= max <= 90, got {lo:g} {hi:g}")
    if not r.tilt_step > 0:
        raise GumalignError(f"--tilt-step must be positive, got {r.tilt_step:g}")
    if not 0 <= r.max_shift <= r.box / 2:
        raise GumalignError(f"--max-shift must be between 0 and half the box ({r.box // 2}), got {r.max_shift:g}")
    if r.jobs < 1:
        raise GumalignError(f"--jobs must be at least 1, got {r.jobs}")
    if r.weighting not in ("mass", "atomic-number"):
        raise GumalignError(f"--weighting must be mass or atomic-number, got {r.weighting!r}")


def command_line(r: SimulateRequest) -> str:
    """The full command with every setting spelled out, so rerunning it reproduces the data exactly."""
    settings = asdict(r)
    parts = ["gumalign", "simulate"]
    for spec in settings["structures"]:
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


def _make_names_unique(structures) -> None:
    seen: dict[str, int] = {}
    for item in structures:
        count = seen.get(item.name, 0) + 1
        seen[item.name] = count
        if count > 1:
            item.name = f"{item.name}_{count}"


def simulate(request: SimulateRequest, runtime: Runtime | None = None) -> SimulateReport:
    """Write the simulated set of ``request`` into ``request.out`` (see gumalign.simulate.dataset.write_dataset)."""
    import dataclasses

    from gumalign.io.atomic import check_output_folder as check_writable_folder
    from gumalign.simulate.dataset import SimulationPlan, check_output_folder, write_dataset
    from gumalign.simulate.imaging import ImagingParams
    from gumalign.simulate.structures import load_structure

    check_request(request)
    runtime = runtime or Runtime()
    out = Path(request.out)
    # Parallelism comes from the worker threads (--jobs): torch gets one thread each, whatever the runtime says.
    runtime = dataclasses.replace(runtime, threads=1, device="cpu")
    with runtime.applied():
        weights = "mass" if request.weighting == "mass" else "atomic_number"
        loaded = [load_structure(spec, box=request.box, voxel_size=request.voxel_size, resolution=request.resolution,
                                 weighting=weights) for spec in request.structures]
        _make_names_unique(loaded)
        for item in loaded:
            if item.radius_voxels is not None and item.radius_voxels + request.max_shift > request.box / 2 - 0.5:
                runtime.log(f"note: {item.name} reaches {item.radius_voxels:.1f} voxels from its centre; with shifts "
                            f"up to {request.max_shift:g} some particles are cut by the box edge")
        params = ImagingParams(
            voltage_kv=request.voltage, defocus_um=request.defocus, cs_mm=request.cs,
            amplitude_contrast=request.amplitude_contrast, envelope_sigma=request.envelope_sigma,
            mtf_sigma=request.mtf_sigma, ctf=not request.no_ctf, mtf=not request.no_mtf, noise_mtf=request.noise_mtf,
        )
        plan = SimulationPlan(
            structures=loaded, n=request.n, snr=None if math.isinf(request.snr) else request.snr,
            tilt_range=tuple(request.tilt_range), tilt_step=request.tilt_step, max_shift=request.max_shift,
            params=params, seed=request.seed, pairs=request.pairs, command=command_line(request),
            ctf_images=request.ctf_images,
        )
        check_output_folder(out, request.overwrite)
        check_writable_folder(out)
        what = "pairs" if request.pairs else "particles"
        with runtime.progress(f"simulating {what}", request.n) as advance:
            write_dataset(plan, out, jobs=request.jobs, overwrite=request.overwrite, progress=advance)
    star = out / ("pairs.star" if request.pairs else "particles.star")
    snr = "none" if math.isinf(request.snr) else f"{request.snr:g}"
    runtime.log(f"wrote {request.n} {what} of {', '.join(s.name for s in loaded)} ({request.box}³, "
                f"{request.voxel_size:g} Å, SNR {snr}) to {out}/; ground truth in {star}")
    return SimulateReport(out, star, request.n, [s.name for s in loaded])
