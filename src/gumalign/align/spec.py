"""One aligner specification: the only place an aligner's options and their defaults live.

`align`, `average --iterations`, `cluster`, the benchmarks and Python callers describe the aligner they want as an
:class:`AlignerSpec` and call :meth:`AlignerSpec.build`; the spec turns its fields into each method's constructor
arguments explicitly (no signature filtering), so an option either reaches the method or is refused with one line.

Defaults (the same for every command):
    max_shift: None = half the box, for every method (F&A's constructor alone would otherwise apply the seed's 16,
        which equals half of the paper's 32³ box).
    batch_size: None = the method's own (METHOD_BATCH_SIZES): memory per particle differs by method, not by command.
    angular_step_deg: None = the method's own sampling: H-T's 5° (spherical-harmonic degree 36 samples each Euler
        angle at 180°/36), refine's 6° → 3° → 1.5° schedule; Gum-Net and F&A have no step (the network answers
        directly; F&A's grid follows its bandwidth) and refuse one.
    max_frequency: None = every shell; reaches --refine (and 'local') only; H-T and F&A keep the seed's band of 8.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from gumalign.errors import GumalignError

METHOD_BATCH_SIZES = {"gumnet": 32, "ht": 8, "fa": 8, "local": 32}
# H-T's default spherical-harmonic degree; its SO(3) FFT samples each Euler angle at 180°/degree.
HT_DEFAULT_DEGREE = 36
STEP_METHODS = ("ht", "local")
# The local search's first angular step (then halved: 6 -> 3 -> 1.5, gumalign.align.refine.DEFAULT_STEPS_DEG).
LOCAL_FIRST_STEP_DEG = 6.0


@dataclass(frozen=True)
class AlignerSpec:
    """What aligner to build. See the module docstring for the defaults.

    Attributes:
        method: 'gumnet', 'ht', 'fa' (global searches) or 'local' (a local search from the prior pose).
        refine: follow the method with the local search (gumalign.align.refine), which can only raise scores.
        model: Gum-Net model (built-in name or path); None = the shipped default. Gum-Net only.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        max_shift: longest shift in voxels the aligner may report; None = half the box.
        max_frequency: highest frequency (cycles per box) the local search scores; None = all.
        angular_step_deg: angular sampling of H-T and the local search's first step; None = the method's own.
        batch_size: particles per aligner call; None = METHOD_BATCH_SIZES[method].
        local_levels: the local search's angular steps: step, step/2, ... (``local_levels`` of them).
        local_rounds: at most this many rounds of the local search per step.
        voxel_size: the particles' voxel size in Å, set by the operation from the data (Gum-Net brings particles of
            another box or voxel size to its model's; the other methods work at any sampling and ignore it).
        symmetry: the reference's point group (RELION's names and axes): the aligner scores against the symmetrised
            reference and answers in the asymmetric unit (gumalign.align.symmetric); C1 = none.
    """

    method: str = "gumnet"
    refine: bool = False
    model: str | None = None
    device: str = "auto"
    max_shift: float | None = None
    max_frequency: float | None = None
    angular_step_deg: float | None = None
    batch_size: int | None = None
    local_levels: int = 3
    local_rounds: int = 3
    voxel_size: float | None = None
    symmetry: str = "C1"

    def __post_init__(self) -> None:
        from gumalign.align.registry import METHODS
        from gumalign.geometry.symmetry import parse_group

        object.__setattr__(self, "symmetry", parse_group(self.symmetry))  # 'd7' -> 'D7'; bad names: one line

        if self.method not in METHODS:
            raise GumalignError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.model is not None and self.method != "gumnet":
            raise GumalignError(f"--model names a Gum-Net model; --method {self.method} takes none")
        if self.max_shift is not None and not self.max_shift >= 0:
            raise GumalignError(f"--max-shift must be >= 0, got {self.max_shift}")
        if self.max_frequency is not None and not self.max_frequency >= 1:
            raise GumalignError(f"--max-frequency must be >= 1 cycle per box, got {self.max_frequency}")
        if self.angular_step_deg is not None:
            if not 0 < self.angular_step_deg <= 90:
                raise GumalignError(f"--angular-step must be in (0, 90] degrees, got {self.angular_step_deg}")
            if self.method not in STEP_METHODS and not self.refine:
                raise GumalignError(
                    f"--angular-step sets the sampling of {' and '.join(STEP_METHODS)} and of --refine; "
                    f"--method {self.method} has none"
                )
        if self.batch_size is not None and self.batch_size < 1:
            raise GumalignError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.local_levels < 1 or self.local_rounds < 1:
            raise GumalignError("the local search needs at least one step and one round per step")
        if self.method == "local" and self.refine:
            raise GumalignError("--refine follows a global method with the local search; --method local is that search")

    @property
    def label(self) -> str:
        """'fa', 'gumnet+refine', ...: what the STAR file's gumAlignMethod column records."""
        return self.method + ("+refine" if self.refine else "")

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else METHOD_BATCH_SIZES[self.method]

    def with_device(self, device) -> "AlignerSpec":
        """The same spec on a resolved device (a torch.device or its name)."""
        return replace(self, device=str(device))

    def for_data(self, voxel_size: float | None) -> "AlignerSpec":
        """The same spec for particles of ``voxel_size`` Å (None or 0: unknown)."""
        return replace(self, voxel_size=float(voxel_size) if voxel_size else None)

    def refine_steps_deg(self) -> tuple[float, ...]:
        """The local search's schedule: step, step/2, ... (``local_levels`` steps; the first is 6° by default)."""
        first = self.angular_step_deg if self.angular_step_deg is not None else LOCAL_FIRST_STEP_DEG
        return tuple(first / 2**i for i in range(self.local_levels))

    def method_options(self) -> dict:
        """The keyword arguments of the method's constructor (gumalign.align.registry.METHODS), explicitly."""
        options: dict = {"device": self.device, "batch_size": self.effective_batch_size, "max_shift": self.max_shift}
        if self.method == "gumnet":
            if self.model is not None:
                options["model"] = self.model
            if self.voxel_size is not None:
                options["voxel_size"] = self.voxel_size
        elif self.method == "ht":
            if self.angular_step_deg is not None:
                options["sh_degree"] = int(math.ceil(180.0 / self.angular_step_deg))
        elif self.method == "local":
            options.update(self.refine_options(local=True))
        return options

    def build(self):
        """The aligner this spec describes (an object with gumalign.align.base.Aligner's ``align``)."""
        from gumalign.align import registry

        aligner = registry.get_aligner(
            self.method, refine=self.refine, refine_options=self.refine_options(), **self.method_options()
        )
        if self.symmetry == "C1":
            return aligner
        from gumalign.align.symmetric import SymmetricAligner

        return SymmetricAligner(aligner, self.symmetry)

    def refine_options(self, local: bool = False) -> dict:
        """The local search's options (RefiningAligner, LocalAligner); empty without --refine unless ``local``."""
        if not (self.refine or local):
            return {}
        return {"max_frequency": self.max_frequency, "steps_deg": self.refine_steps_deg(),
                "max_rounds_per_step": self.local_rounds}

    def record(self) -> dict:
        """Every field, JSON-ready (for run keys and provenance)."""
        return asdict(self)
