"""Wedge-compensated averaging of aligned subtomograms, with gold-standard half maps.

Each particle is brought into the reference frame by exactly undoing RELION's meaning (DESIGN.md): a particle made
from the reference with matrix A and origin o (pixels) is ``transform_volumes(reference, A, -o)``, so
``transform_volumes(particle, Aᵀ, Aᵀ·o)`` is the particle in the reference frame. Its observed-region weight w (centred
layout) is rotated by the same Aᵀ about the zero frequency, without the shift (a shift changes phases, not which
frequencies were observed): a rotation of a volume about the box centre rotates its Fourier transform by the same
matrix (gumalign.fourier.layout.rotate_weights, whose boundary rule keeps a fully observed particle fully observed).

In Fourier space the average is a regularised least-squares (Wiener) estimate:

    S(k) = Σ_i w'_i(k)·P'_i(k) / (Σ_i w'_i(k) + λ(k))

where P'_i is the transform of the particle in the reference frame and w'_i its rotated weight. For 0/1 weights and
λ = 0 this is the mean over the particles that observed k: the missing wedge of one particle is filled by the others
instead of pulling the average towards zero there. Frequencies no particle observed stay 0.

λ is the Wiener term 1/SNR of one particle at k (as RELION's 1/τ²). With ``regularisation="auto"`` (default) it is
estimated per Fourier shell from the gold-standard FSC of the two half maps (first made with a small constant λ):
the half map at shell s has SNR = FSC/(1 - FSC) with, on average, m̄ particles behind each coefficient (m̄ the harmonic
mean of Σw' over the shell), so one particle's SNR is FSC/((1 - FSC)·m̄) and λ(s) = m̄·(1 - FSC)/FSC (FSC clipped to
[0.001, 0.999]). Where the signal is strong λ ≪ Σw' and the estimate is the compensated mean; where it is weak the
estimate fades towards 0 in proportion to the number of particles that observed k, so noise from frequencies seen by few
particles is not amplified. The same λ(s) is used for both halves and the full map (it is a per-particle quantity).
A number instead gives a constant λ = regularisation × (number of particles in the map): 0.01 keeps frequencies seen
by almost no particle near zero and scales the rest by at most 1/1.01 (an essentially unfiltered map).
``compensate=False`` gives the plain mean Σ_i p'_i / n (what the wedge does to it is the reason for all the above).

Half maps for validation (``unfiltered_half1/2``, what `gumalign average` writes as _half1/_half2 and what
`gumalign fsc --gold-standard` compares) are RELION's unfiltered half maps: made with the constant λ
(CONSTANT_REGULARISATION per particle, or the number given), never with the Wiener λ(s), which is computed from those
very half maps' FSC and would feed it back into the FSC. So ``fsc half1 half2`` on average's output and
``fsc --gold-standard`` on the same particles compare the same maps. The Wiener-filtered ``half1``/``half2`` serve as
references for realignment (iterative averaging).

Sums are accumulated per half set (rlnRandomSubset 1 and 2) and never mixed: the full map is built from the two sums.
Particles are streamed in batches from a :class:`~gumalign.average.stack.ParticleStack`; the work runs in torch on any
device.

Split runs (gumalign.distributed): the sums are all a map needs, and sums add. Under torchrun each rank accumulates
its contiguous shard of the rows (``world``), in whole batches of the single run, and the ranks all-reduce the
per-half sums before the maps are formed, so every rank holds the maps of all particles; ``--shard I/N`` accumulates
one shard (:func:`accumulate_halves` with ``rows``) and keeps its sums in a file (:func:`save_partial_sums`, npz
without pickle) that `gumalign merge` adds up (:func:`load_partial_sums`, :func:`maps_from_sums`). Every batch is then
the single run's and only the order in which the float64 batch sums are added differs, so the float32 maps equal one
run's (bit for bit in tests/test_distributed.py; a float64 rounding of the order could move a last bit). Batches of
other particles would change each transform at float32 rounding (~1e-7 relative in the maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gumalign.average.stack import ArrayStack, ParticleStack, iter_batches
from gumalign.distributed import SINGLE, World
from gumalign.errors import GumalignError
from gumalign.fourier.grids import shell_index
from gumalign.fourier.layout import centred_to_rfft, rfft_to_centred, rotate_centred, rotate_weights
from gumalign.geometry.transform import transform_volumes
from gumalign.metrics.fsc import fsc
from gumalign.progress import Advance

DEFAULT_REGULARISATION = "auto"
CONSTANT_REGULARISATION = 0.01  # λ per particle for the first-pass half maps of "auto" and when halves are empty
_FSC_CLIP = (1e-3, 0.999)


@dataclass
class AverageResult:
    """Half maps, full map and their bookkeeping.

    Attributes:
        full, half1, half2: (N, N, N) float32 maps [z, y, x] in the reference frame.
        halves: (n,) int, the half set (1 or 2) each particle went into.
        halves_assigned: True when the halves were assigned here (alternating 1, 2, 1, ...) because none were given.
        coverage: (N, N, N) float32 centred layout: Σ rotated weights / number of particles, i.e. the fraction of the
            particles that observed each frequency of the full map (1 everywhere for the plain mean).
        counts: number of particles in half 1 and in half 2.
        wiener_lambda: (N//2 + 1,) λ per shell (per particle) used for all three maps, or None when a constant λ
            (or the plain mean) was used.
        half_fsc: (N//2 + 1,) FSC of the first-pass half maps the Wiener λ came from, or None.
        unfiltered_half1, unfiltered_half2: the half maps with the constant λ (RELION's unfiltered half maps, for
            FSC validation); the same arrays as half1/half2 when a constant λ was used.
    """

    full: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    halves: np.ndarray
    halves_assigned: bool
    coverage: np.ndarray
    counts: tuple[int, int]
    wiener_lambda: np.ndarray | None = None
    half_fsc: np.ndarray | None = None
    unfiltered_half1: np.ndarray | None = None
    unfiltered_half2: np.ndarray | None = None

    def __post_init__(self):
        if self.unfiltered_half1 is None:
            self.unfiltered_half1 = self.half1
        if self.unfiltered_half2 is None:
            self.unfiltered_half2 = self.half2

    def observed_weight(self, minimum_fraction: float | None = None) -> np.ndarray:
        """(N, N, N) float32 centred 0/1 weight of the frequencies the full map holds data for.

        A frequency counts as observed when at least ``minimum_fraction`` of the particles saw it (default: the
        equivalent of half a particle).
        """
        n = max(sum(self.counts), 1)
        fraction = 0.5 / n if minimum_fraction is None else minimum_fraction
        return (self.coverage >= fraction).astype(np.float32)


def assign_halves(n: int, halves: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """The half set of each of n particles: ``halves`` validated, or alternating 1, 2, 1, 2, ... when None.

    Returns:
        (halves (n,) int, assigned_here).
    """
    if halves is None:
        return (np.arange(n) % 2 + 1).astype(int), True
    halves = np.asarray(halves).astype(int)
    if halves.shape != (n,):
        raise GumalignError(f"expected {n} half-set labels, got {halves.shape}")
    bad = set(np.unique(halves).tolist()) - {1, 2}
    if bad:
        raise GumalignError(f"half sets must be 1 or 2, found {sorted(bad)[0]}")
    return halves, False


def to_reference_frame(volumes: torch.Tensor, matrices: torch.Tensor, origins_px: torch.Tensor) -> torch.Tensor:
    """Particles (B, N, N, N) brought into the reference frame: transform_volumes(p, Aᵀ, Aᵀ·o).

    Args:
        volumes: (B, N, N, N) [z, y, x].
        matrices: (B, 3, 3) RELION matrices A.
        origins_px: (B, 3) RELION origins (x, y, z) in pixels (particle centre = coordinate - origin).
    """
    inverse = matrices.transpose(-1, -2)
    return transform_volumes(volumes, inverse, torch.einsum("bij,bj->bi", inverse, origins_px))


class FourierAccumulator:
    """Running sums Σ w'·P' and Σ w' (rfft layout, float64) for one map."""

    def __init__(self, box: int, device: torch.device, compensate: bool = True):
        shape = (box, box, box // 2 + 1)
        self.box = box
        self.compensate = compensate
        self.numerator = torch.zeros(shape, dtype=torch.complex128, device=device)
        self.denominator = torch.zeros(shape, dtype=torch.float64, device=device)
        self.count = 0

    def add(
        self, spectra: torch.Tensor, weights_rfft: torch.Tensor | None, denominator_rfft: torch.Tensor | None = None
    ) -> None:
        """Add (B, N, N, N//2+1) spectra of particles in the reference frame with their rotated rfft weights.

        Args:
            weights_rfft: c, multiplying each spectrum in the numerator (B or 1, ...).
            denominator_rfft: d, summed in the denominator; default c (0/1 observation weights).
        """
        if len(spectra) == 0:
            return
        if self.compensate:
            d = weights_rfft if denominator_rfft is None else denominator_rfft
            self.numerator += (spectra * weights_rfft).sum(dim=0).to(torch.complex128)
            self.denominator += (d.expand(spectra.shape[0], *d.shape[1:]) if len(d) == 1 else d).sum(dim=0).to(
                torch.float64
            )
        else:
            self.numerator += spectra.sum(dim=0).to(torch.complex128)
            self.denominator += float(len(spectra))
        self.count += len(spectra)

    def merged(self, other: "FourierAccumulator") -> "FourierAccumulator":
        out = FourierAccumulator(self.box, self.numerator.device, self.compensate)
        out.numerator = self.numerator + other.numerator
        out.denominator = self.denominator + other.denominator
        out.count = self.count + other.count
        return out

    def volume(self, regularisation: float | torch.Tensor) -> np.ndarray:
        """The (N, N, N) float32 map; zeros when nothing was added.

        Args:
            regularisation: a constant λ per particle (λ = regularisation × count), or an rfft-layout tensor of λ(k).
        """
        if self.count == 0:
            return np.zeros((self.box,) * 3, dtype=np.float32)
        if not self.compensate:
            lam = 0.0
        elif isinstance(regularisation, torch.Tensor):
            lam = regularisation.to(self.denominator.device, torch.float64)
        else:
            lam = float(regularisation) * self.count
        spectrum = self.numerator / (self.denominator + lam).clamp_min(1e-12)
        return torch.fft.irfftn(spectrum, s=(self.box,) * 3, dim=(-3, -2, -1)).float().cpu().numpy()

    def coverage(self) -> np.ndarray:
        """(N, N, N) float32 centred fraction of the particles that observed each frequency."""
        if self.count == 0:
            return np.zeros((self.box,) * 3, dtype=np.float32)
        fraction = (self.denominator / self.count).float().cpu().numpy()
        return rfft_to_centred(fraction, self.box).astype(np.float32)


def wiener_lambda_per_shell(
    half_fsc: np.ndarray, weight_sums: list[torch.Tensor], box: int
) -> np.ndarray:
    """λ(s) = m̄·(1 - FSC)/FSC per shell (see module docstring).

    Args:
        half_fsc: (N//2 + 1,) FSC of the two half maps.
        weight_sums: the rfft-layout Σw' of each half; m̄ is the harmonic mean over a shell's coefficients observed by
            at least half a particle, averaged over the halves.
        box: N.

    Returns:
        (N//2 + 1,) float64 λ per shell.
    """
    shells = shell_index((box,) * 3, "rfft").ravel()
    n_shells = box // 2 + 1
    inside = shells < n_shells
    harmonic = np.zeros(n_shells)
    for sums in weight_sums:
        values = sums.double().cpu().numpy().ravel()
        seen = inside & (values >= 0.5)
        inverse = np.bincount(shells[seen], weights=1.0 / values[seen], minlength=n_shells)
        count = np.bincount(shells[seen], minlength=n_shells)
        harmonic += np.where(inverse > 0, count / np.where(inverse > 0, inverse, 1.0), 1.0)
    harmonic /= len(weight_sums)
    f = np.clip(half_fsc, *_FSC_CLIP)
    return harmonic * (1.0 - f) / f


def _lambda_volume(per_shell: np.ndarray, box: int, device: torch.device) -> torch.Tensor:
    """Per-shell λ spread over the rfft layout (coefficients beyond N//2 take the last shell's value)."""
    shells = np.minimum(shell_index((box,) * 3, "rfft"), box // 2)
    return torch.as_tensor(per_shell[shells], dtype=torch.float64, device=device)


def _take(weights: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """The rows ``select`` of per-particle weights; weights shared by the batch (leading size 1) broadcast."""
    return weights.expand(len(select), *weights.shape[1:]) if len(weights) == 1 else weights[select]


def _as_stack(particles, weights) -> ParticleStack:
    if isinstance(particles, np.ndarray) or isinstance(particles, torch.Tensor):
        return ArrayStack(np.asarray(particles), None if weights is None else np.asarray(weights))
    if weights is not None:
        raise GumalignError("weights are given by the particle stack; pass weights only with an array of particles")
    return particles


def average_particles(
    particles: ParticleStack | np.ndarray,
    matrices: np.ndarray,
    origins_px: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    halves: np.ndarray | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    regularisation: float | str = DEFAULT_REGULARISATION,
    compensate: bool = True,
    progress: Advance | None = None,
    world: World = SINGLE,
    symmetry: str = "C1",
) -> AverageResult:
    """Average particles in the reference frame, per half set, compensating each particle's missing wedge.

    Args:
        particles: a ParticleStack (streamed in batches), or an (n, N, N, N) float array [z, y, x].
        matrices: (n, 3, 3) RELION matrices A (rotate the reference into each particle).
        origins_px: (n, 3) RELION origins (x, y, z) in pixels (ParticleTable.origins_px()).
        weights: with an array of particles only: None (fully observed), (N, N, N) shared or (n, N, N, N) centred
            observed-region weights.
        halves: (n,) half sets 1/2 (rlnRandomSubset) or None to alternate 1, 2, 1, ...
        batch_size: particles per batch (memory ~ batch × N³ × 32 bytes).
        device: torch device for the transforms and sums.
        regularisation: "auto" for the Wiener λ(s) from the half maps' FSC, or a constant λ per particle (see the
            module docstring).
        compensate: False for the plain mean (weights ignored).
        progress: called with the number of particles done after each batch.
        world: the ranks of a torchrun run (gumalign.distributed): each accumulates its shard of the rows (whole
            batches), the sums are all-reduced, and every rank returns the maps of all n particles. Every rank passes
            the same inputs.
        symmetry: a point group (RELION's names and axes): each half's sums are summed over the group before the
            division (symmetrise_sums), so the maps equal their own symmetry images and every particle's wedge is
            filled by its mates; C1 = none.

    Returns:
        An AverageResult.
    """
    stack = _as_stack(particles, weights)
    n = len(stack)
    check_regularisation(regularisation)
    halves, assigned = assign_halves(n, halves)
    rows = world.rows(n, batch_size) if world.size > 1 else None
    sums = accumulate_halves(
        stack, matrices, origins_px, halves, rows=rows, batch_size=batch_size, device=device, compensate=compensate,
        progress=progress,
    )
    reduce_sums(sums, world)
    symmetrise_sums(sums, symmetry)
    return maps_from_sums(sums, halves, assigned, regularisation, device)


def symmetrise_sums(sums: dict[int, "FourierAccumulator"], symmetry: str) -> None:
    """Each half's Σ c·P and Σ d summed over the point group in place (gumalign.fourier.symmetrise, as RELION's
    BackProjector::symmetrise), the count multiplied by the group's order so λ stays per (expanded) particle; the
    halves stay apart. C1: nothing."""
    from gumalign.geometry.symmetry import operators, parse_group

    if parse_group(symmetry) == "C1":
        return
    from gumalign.fourier.symmetrise import symmetrise_fourier_sums

    ops = operators(parse_group(symmetry))
    for h in (1, 2):
        acc = sums[h]
        acc.numerator, acc.denominator = symmetrise_fourier_sums(acc.numerator, acc.denominator, ops)
        acc.count *= len(ops)


def check_regularisation(regularisation: float | str) -> None:
    """'auto' or a number >= 0, else a GumalignError."""
    if isinstance(regularisation, str):
        if regularisation != "auto":
            raise GumalignError(f"regularisation must be 'auto' or a number >= 0, got {regularisation!r}")
    elif not regularisation >= 0:
        raise GumalignError(f"regularisation must be 'auto' or a number >= 0, got {regularisation}")


def accumulate_halves(
    stack: ParticleStack,
    matrices: np.ndarray,
    origins_px: np.ndarray,
    halves: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    compensate: bool = True,
    progress: Advance | None = None,
) -> dict[int, FourierAccumulator]:
    """The Fourier sums of each half set {1, 2} over ``rows`` of the stack (default: all), in batches of
    ``batch_size`` consecutive rows.

    Args:
        matrices, origins_px: (n, 3, 3) and (n, 3) for all n particles of the stack (as average_particles).
        halves: (n,) half set of every particle (assign_halves).
    """
    n = len(stack)
    matrices = np.asarray(matrices, dtype=np.float64)
    origins_px = np.asarray(origins_px, dtype=np.float64)
    if matrices.shape != (n, 3, 3) or origins_px.shape != (n, 3):
        raise GumalignError(f"expected {n} orientations and origins, got {matrices.shape} and {origins_px.shape}")
    if n == 0:
        raise GumalignError("no particles to average")
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=int)
    device = torch.device(device)
    box = stack.box
    load_ctf = getattr(stack, "load_ctf", None)
    sums = {1: FourierAccumulator(box, device, compensate), 2: FourierAccumulator(box, device, compensate)}
    for batch in iter_batches(len(rows), batch_size):
        batch_rows = rows[batch]
        volumes, batch_weights = stack.load(batch_rows)
        a = torch.as_tensor(matrices[batch_rows], dtype=torch.float32, device=device)
        o = torch.as_tensor(origins_px[batch_rows], dtype=torch.float32, device=device)
        aligned = to_reference_frame(torch.as_tensor(volumes, device=device), a, o)
        spectra = torch.fft.rfftn(aligned, dim=(-3, -2, -1))
        numerator_w = denominator_w = None
        if compensate:
            terms = load_ctf(batch_rows) if load_ctf is not None else None
            if terms is None:  # a 0/1 (or fractional) observation weight: c = d = w
                numerator_w = denominator_w = centred_to_rfft(
                    rotate_weights(torch.as_tensor(batch_weights, device=device), a.transpose(-1, -2))
                )
            else:  # RELION's c·P and d (CTF, CTF²; or 1, CTF² for premultiplied data), rotated unclamped
                c, d = (torch.as_tensor(t, device=device) for t in terms)
                numerator_w = centred_to_rfft(rotate_centred(c, a.transpose(-1, -2)))
                denominator_w = centred_to_rfft(rotate_centred(d, a.transpose(-1, -2)).clamp_min(0.0))
        for half, accumulator in sums.items():
            select = torch.as_tensor(np.flatnonzero(halves[batch_rows] == half), device=device)
            accumulator.add(
                spectra[select],
                None if numerator_w is None else _take(numerator_w, select),
                None if denominator_w is None else _take(denominator_w, select),
            )
        if progress is not None:
            progress(len(batch_rows))
    return sums


def reduce_sums(sums: dict[int, FourierAccumulator], world: World) -> None:
    """All-reduce each half's sums and count in place over the ranks of ``world`` (nothing for one process)."""
    if world.size == 1:
        return
    world.sum_(*(t for h in (1, 2) for t in (sums[h].numerator, sums[h].denominator)))
    counts = world.sum_numbers(sums[1].count, sums[2].count)
    sums[1].count, sums[2].count = int(round(counts[0])), int(round(counts[1]))


def add_sums(total: dict[int, FourierAccumulator], more: dict[int, FourierAccumulator]) -> None:
    """``total`` += ``more``, half by half (the shards of a split run, in shard order)."""
    for h in (1, 2):
        if total[h].box != more[h].box or total[h].compensate != more[h].compensate:
            raise GumalignError("partial sums of different boxes or averaging modes cannot be added")
        total[h].numerator += more[h].numerator.to(total[h].numerator.device)
        total[h].denominator += more[h].denominator.to(total[h].denominator.device)
        total[h].count += more[h].count


def maps_from_sums(
    sums: dict[int, FourierAccumulator], halves: np.ndarray, assigned: bool, regularisation: float | str,
    device: torch.device | str = "cpu",
) -> AverageResult:
    """The AverageResult of the per-half sums of all particles (see the module docstring for the maps)."""
    check_regularisation(regularisation)
    device = torch.device(device)
    box, compensate = sums[1].box, sums[1].compensate
    full = sums[1].merged(sums[2])
    lam: float | torch.Tensor = CONSTANT_REGULARISATION if regularisation == "auto" else float(regularisation)
    wiener, half_fsc = None, None
    unfiltered = {h: sums[h].volume(lam) for h in (1, 2)}  # the constant λ: RELION's unfiltered half maps
    filtered = unfiltered
    if regularisation == "auto" and compensate and min(sums[1].count, sums[2].count) > 0:
        half_fsc = fsc(unfiltered[1], unfiltered[2])
        wiener = wiener_lambda_per_shell(half_fsc, [sums[1].denominator, sums[2].denominator], box)
        lam = _lambda_volume(wiener, box, device)
        filtered = {h: sums[h].volume(lam) for h in (1, 2)}
    return AverageResult(
        full=full.volume(lam),
        half1=filtered[1],
        half2=filtered[2],
        unfiltered_half1=unfiltered[1],
        unfiltered_half2=unfiltered[2],
        halves=halves,
        halves_assigned=assigned,
        coverage=full.coverage(),
        # Particles, not the accumulators' counts: with a point group those count every symmetry copy (for λ).
        counts=(int(np.count_nonzero(halves == 1)), int(np.count_nonzero(halves == 2))),
        wiener_lambda=wiener,
        half_fsc=half_fsc,
    )


PARTIAL_SUMS_KIND = "gumalign average partial sums"


def save_partial_sums(path, sums: dict[int, FourierAccumulator], halves: np.ndarray, meta: dict) -> None:
    """Write one shard's per-half sums to ``path`` (.npz, atomically; no pickle): for each half its numerator
    (complex128 rfft layout), denominator (float64) and count, the half set of every particle, and ``meta`` (JSON:
    what the shard was made from, which `gumalign merge` checks and uses)."""
    import json

    from gumalign.io.atomic import atomic_path

    arrays = {"meta": np.array(json.dumps({"kind": PARTIAL_SUMS_KIND, **meta}, sort_keys=True)),
              "halves": np.asarray(halves, dtype=np.int8)}
    for h in (1, 2):
        arrays[f"half{h}_numerator"] = sums[h].numerator.cpu().numpy()
        arrays[f"half{h}_denominator"] = sums[h].denominator.cpu().numpy()
        arrays[f"half{h}_count"] = np.array(sums[h].count, dtype=np.int64)
        arrays[f"half{h}_compensate"] = np.array(sums[h].compensate)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_partial_sums(path, device: torch.device | str = "cpu") -> tuple[dict, dict[int, FourierAccumulator], np.ndarray]:
    """(meta, per-half sums, halves) of a file of :func:`save_partial_sums` (read without pickle)."""
    import json
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("kind") != PARTIAL_SUMS_KIND:
                raise KeyError("kind")
            halves = data["halves"].astype(int)
            sums = {}
            for h in (1, 2):
                numerator = data[f"half{h}_numerator"]
                acc = FourierAccumulator(numerator.shape[0], torch.device(device), bool(data[f"half{h}_compensate"]))
                acc.numerator = torch.from_numpy(numerator).to(device)
                acc.denominator = torch.from_numpy(data[f"half{h}_denominator"]).to(device)
                acc.count = int(data[f"half{h}_count"])
                sums[h] = acc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise GumalignError(f"{path}: not a partial-sums file of `gumalign average --shard` ({exc})") from None
    return meta, sums, halves
