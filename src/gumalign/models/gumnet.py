"""Gum-Net (Zeng & Xu, CVPR 2020) in PyTorch, its three ablations and a compact variant.

Architecture (seed S2, Figures S2-S5; aitom models/Gum_Net.py), for 32³ inputs:

- Siamese feature extractor: five 3×3×3 convolutions (32, 64, 128, 256, 512 filters, bias on) whose weights are
  shared by the two streams, while each stream has its own batch-norm layers. conv -> ReLU -> BN -> DCT spectral
  pooling, four times (30³ -> 26³ keeping 22³, 24³ -> 18³ keeping 15³, 16³ -> 12³ keeping 10³, 10³ -> 8³ keeping 7³),
  then conv5 (8³ -> 6³) -> BN (no ReLU) -> L2 normalisation over channels at every voxel.
- Siamese matching: c_ab = corr(v_a, v_b) and c_ba = corr(v_b, v_a), 216 channels on 6³, each L2-normalised over
  channels; each through its own two 'valid' 3×3×3 convolutions (1024 filters) -> BN -> ReLU (6³ -> 4³ -> 2³);
  flattened and concatenated; Dense 2000 -> Dense 2000 (both linear) -> Dense 6 -> sigmoid. Dense 6 starts with
  zero weights and a bias drawn from U[-0.5, 0.5).
- Ablations (seed S2): ``mp``/``ap`` replace the four spectral pooling layers by two 2×2×2 max/average pooling layers
  with 'same' convolutions (32³ -> conv1, conv2 -> pool 16³ -> conv3, conv4 -> pool 8³ -> conv5 'valid' 6³; the
  pooling after conv2 and conv4 is our reading of Figures S3/S4); ``sc`` computes c_ab only.
- Full-SO(3) one-pass heads (ours, issue 13; gumalign.models.so3): ``head='anchors'`` scores K anchor rotations and
  regresses a 6D residual rotation per anchor (EPN-style); ``head='hypotheses'`` predicts K free 6D rotations with a
  confidence each. Both keep the Siamese features and correlation branches; their FC layers have ReLUs (Gum-Net's are
  linear) and they predict no translation (the aligner's FFT search finds it). ``forward`` returns the packed
  (B, 7K) outputs; :meth:`GumNet.hypotheses` unpacks them into (logits (B, K), rotations (B, K, 3, 3)).
- ``gumnet-compact`` (ours, for shipping): the same layers with half-width features (16..256) and a narrow matching
  head (128 filters per branch, FC 256): about 4 M parameters, 16 MB in float32, and about 4× cheaper per pair,
  so it trains on a CPU. ``gumnet-tiny`` exists for tests and smoke runs only.

Stream 'a' is the volume the transformer moves (s_a: the reference), stream 'b' the target (s_b: the particle).
Weights are initialised as Keras does (Glorot-uniform kernels, zero biases), from a seed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch

from gumalign.architectures import ARCH_HELP  # noqa: F401  (the names' one description)
from torch import nn

from gumalign.errors import GumalignError
from gumalign.models.dct import SpectralPool3d
from gumalign.models.layers import feature_correlation, l2_normalise_channels

BOX = 32
# (input size, output size, kept DCT coefficients) of the four spectral pooling layers for a 32³ input.
SPECTRAL_STAGES = ((30, 26, 22), (24, 18, 15), (16, 12, 10), (10, 8, 7))
FEATURE_SIZE = 6  # the feature grid after conv5: 6³ = 216 positions, hence 216 correlation channels
STREAMS = ("a", "b")


@dataclass(frozen=True)
class GumNetConfig:
    """Everything needed to rebuild a Gum-Net variant (stored in every weight file's record).

    Attributes:
        arch: the name it was built from.
        box: input box size N (only 32 is supported: the layer sizes are fixed by it).
        feature_channels: filters of conv1..conv5.
        pooling: 'spectral' (Gum-Net), 'max' (MP) or 'avg' (AP).
        siamese: True for c_ab and c_ba, False for c_ab only (SC).
        head_channels: filters of the two convolutions of each matching branch.
        fc_units: width of the two fully connected layers.
        bn_momentum: torch BatchNorm momentum (Keras' default momentum 0.99 is torch's 0.01).
        bn_eps: BatchNorm epsilon (Keras' default 1e-3).
        rotation: how the three rotation outputs become a matrix: 'zyz' (the seed's Euler angles) or 'rotvec'
            (a rotation vector within ``max_angle_deg``; see gumalign.models.transformer.params_to_rigid).
        max_angle_deg: range of 'rotvec' rotations.
        head: 'gumnet' (the seed's six sigmoid outputs), 'anchors' or 'hypotheses' (full-SO(3) heads, see the module
            docstring).
        anchors: the anchor set of the 'anchors' head: 'icosahedral' (60) or 'fibonacci' (``n_anchors``); the
            'hypotheses' head uses 'identity'.
        n_anchors: K, the number of anchors or hypotheses.
    """

    arch: str
    box: int = BOX
    feature_channels: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512)
    pooling: str = "spectral"
    siamese: bool = True
    head_channels: int = 1024
    fc_units: int = 2000
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    rotation: str = "zyz"
    max_angle_deg: float = 180.0
    head: str = "gumnet"
    anchors: str = "icosahedral"
    n_anchors: int = 60

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if self.head == "gumnet":  # records and checkpoints of the seed's head stay as they were before the new heads
            for key in ("head", "anchors", "n_anchors"):
                values.pop(key)
        return values

    @property
    def one_pass(self) -> bool:
        """Whether the head covers SO(3) in one pass (a K-hypothesis head) rather than six transform outputs."""
        return self.head != "gumnet"

    @staticmethod
    def from_dict(values: dict) -> "GumNetConfig":
        known = {f.name for f in dataclasses.fields(GumNetConfig)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown Gum-Net configuration keys: {sorted(unknown)}")
        values = dict(values)
        if "feature_channels" in values:
            values["feature_channels"] = tuple(int(c) for c in values["feature_channels"])
        return GumNetConfig(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


ARCHITECTURES: dict[str, GumNetConfig] = {
    "gumnet": GumNetConfig("gumnet"),
    "gumnet-compact": GumNetConfig(
        "gumnet-compact", feature_channels=(16, 32, 64, 128, 256), head_channels=128, fc_units=256, bn_momentum=0.1
    ),
    "gumnet-compact-local": GumNetConfig(
        "gumnet-compact-local", feature_channels=(16, 32, 64, 128, 256), head_channels=128, fc_units=256,
        bn_momentum=0.1, rotation="rotvec", max_angle_deg=60.0,
    ),
    "mp": GumNetConfig("mp", pooling="max"),
    "ap": GumNetConfig("ap", pooling="avg"),
    "sc": GumNetConfig("sc", siamese=False),
    "gumnet-tiny": GumNetConfig(
        "gumnet-tiny", feature_channels=(4, 8, 8, 16, 16), head_channels=16, fc_units=32, bn_momentum=0.1
    ),
    # Full-SO(3) one-pass heads (issue 13). Compact widths for shipping; 'small' halves them again for CPU budgets.
    "gumnet-so3": GumNetConfig(
        "gumnet-so3", feature_channels=(16, 32, 64, 128, 256), head_channels=128, fc_units=256, bn_momentum=0.1,
        head="anchors", anchors="icosahedral", n_anchors=60,
    ),
    "gumnet-so3-mh": GumNetConfig(
        "gumnet-so3-mh", feature_channels=(16, 32, 64, 128, 256), head_channels=128, fc_units=256, bn_momentum=0.1,
        head="hypotheses", anchors="identity", n_anchors=4,
    ),
    "gumnet-so3-small": GumNetConfig(
        "gumnet-so3-small", feature_channels=(8, 16, 32, 64, 128), head_channels=64, fc_units=256, bn_momentum=0.1,
        head="anchors", anchors="icosahedral", n_anchors=60,
    ),
    "gumnet-so3-mh-small": GumNetConfig(
        "gumnet-so3-mh-small", feature_channels=(8, 16, 32, 64, 128), head_channels=64, fc_units=256,
        bn_momentum=0.1, head="hypotheses", anchors="identity", n_anchors=4,
    ),
    "gumnet-so3-tiny": GumNetConfig(
        "gumnet-so3-tiny", feature_channels=(4, 8, 8, 16, 16), head_channels=16, fc_units=32, bn_momentum=0.1,
        head="anchors", anchors="icosahedral", n_anchors=60,
    ),
}


def _batch_norm(channels: int, config: GumNetConfig) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


class FeatureExtractor(nn.Module):
    """Siamese feature extractor: shared convolutions, one set of batch norms per stream ('a', 'b').

    Input (B, 1, 32, 32, 32); output (B, C5, 6, 6, 6) features, unit L2 norm over channels at every voxel.
    """

    def __init__(self, config: GumNetConfig):
        super().__init__()
        chans = (1,) + tuple(config.feature_channels)
        same = config.pooling != "spectral"
        self.convs = nn.ModuleList(
            nn.Conv3d(chans[i], chans[i + 1], 3, padding=1 if (same and i < 4) else 0) for i in range(5)
        )
        self.norms = nn.ModuleDict(
            {s: nn.ModuleList(_batch_norm(chans[i + 1], config) for i in range(5)) for s in STREAMS}
        )
        if config.pooling == "spectral":
            pools = [SpectralPool3d(*stage) for stage in SPECTRAL_STAGES]
        elif config.pooling in ("max", "avg"):
            pool = nn.MaxPool3d if config.pooling == "max" else nn.AvgPool3d
            pools = [nn.Identity(), pool(2), nn.Identity(), pool(2)]
        else:
            raise ValueError(f"unknown pooling {config.pooling!r}")
        self.pools = nn.ModuleList(pools)

    def forward(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        norms = self.norms[stream]
        for i in range(4):
            x = self.pools[i](norms[i](torch.relu(self.convs[i](x))))
        return l2_normalise_channels(norms[4](self.convs[4](x)))


class MatchingBranch(nn.Module):
    """Two 'valid' 3×3×3 convolutions with BN and ReLU on a 216-channel 6³ correlation map; output flattened 2³·H."""

    def __init__(self, in_channels: int, config: GumNetConfig):
        super().__init__()
        h = config.head_channels
        self.layers = nn.Sequential(
            nn.Conv3d(in_channels, h, 3), _batch_norm(h, config), nn.ReLU(),
            nn.Conv3d(h, h, 3), _batch_norm(h, config), nn.ReLU(),
            nn.Flatten(),
        )

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        return self.layers(corr)


class GumNet(nn.Module):
    """Gum-Net: estimates the rigid transform carrying s_a onto s_b.

    ``forward(s_a, s_b)`` takes (B, 32, 32, 32) volumes [z, y, x] (z-scored) and returns (B, 6) sigmoid outputs p;
    :func:`gumalign.models.transformer.params_to_rigid` turns them into (R, t) with s_b ≈ transform_volumes(s_a, R, t).
    """

    def __init__(self, config: GumNetConfig):
        super().__init__()
        if config.box != BOX:
            raise ValueError(f"Gum-Net's layer sizes are fixed for {BOX}³ inputs, got box {config.box}")
        self.config = config
        self.extractor = FeatureExtractor(config)
        n_corr = FEATURE_SIZE**3
        self.branch_ab = MatchingBranch(n_corr, config)
        self.branch_ba = MatchingBranch(n_corr, config) if config.siamese else None
        flat = (2 if config.siamese else 1) * 8 * config.head_channels
        self.fc1 = nn.Linear(flat, config.fc_units)
        self.fc2 = nn.Linear(config.fc_units, config.fc_units)
        if config.head == "gumnet":
            self.out = nn.Linear(config.fc_units, 6)
        elif config.head in ("anchors", "hypotheses"):
            from gumalign.models.so3 import anchor_rotations

            k = int(config.n_anchors)
            if config.head == "hypotheses" and config.anchors != "identity":
                raise ValueError("the 'hypotheses' head takes anchors='identity'")
            self.logits = nn.Linear(config.fc_units, k)
            self.residual = nn.Linear(config.fc_units, 6 * k)
            # Stored with the weights, so a model always uses the anchors it was trained with.
            self.register_buffer("anchor_set", torch.as_tensor(anchor_rotations(config.anchors, k), dtype=torch.float32))
        else:
            raise ValueError(f"unknown head {config.head!r}; choose gumnet, anchors or hypotheses")

    def reset_parameters(self) -> None:
        """Keras initialisation: Glorot-uniform kernels, zero biases, BN at identity; Dense 6 weights 0, bias U[-0.5, 0.5).

        Uses torch's global generator: call under a seed (see :func:`build_model`).
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                module.reset_parameters()
        if self.config.head == "gumnet":
            nn.init.zeros_(self.out.weight)
            with torch.no_grad():
                self.out.bias.uniform_(-0.5, 0.5)
            return
        with torch.no_grad():  # residuals start near the identity (anchors) or spread out (free hypotheses)
            self.residual.weight.mul_(0.01)
            if self.config.head == "hypotheses":
                self.residual.bias.uniform_(-0.5, 0.5)

    def features(self, volumes: torch.Tensor, stream: str) -> torch.Tensor:
        """(B, 32, 32, 32) volumes -> (B, C5, 6, 6, 6) L2-normalised features of stream 'a' (s_a) or 'b' (s_b)."""
        if volumes.ndim != 4 or tuple(volumes.shape[-3:]) != (BOX,) * 3:
            raise ValueError(f"Gum-Net expects (B, {BOX}, {BOX}, {BOX}) volumes, got {tuple(volumes.shape)}")
        return self.extractor(volumes[:, None], stream)

    def match(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """Features of s_a and s_b (B, C5, 6, 6, 6) -> (B, 6) sigmoid outputs, or (B, 7K) packed hypotheses
        (K logits, then 6K residual outputs) for a one-pass head (see :meth:`hypotheses`)."""
        c_ab = l2_normalise_channels(feature_correlation(f_a, f_b))
        parts = [self.branch_ab(c_ab)]
        if self.branch_ba is not None:
            c_ba = l2_normalise_channels(feature_correlation(f_b, f_a))
            parts.append(self.branch_ba(c_ba))
        if self.config.head == "gumnet":
            x = self.fc2(self.fc1(torch.cat(parts, dim=1)))
            return torch.sigmoid(self.out(x))
        x = torch.relu(self.fc2(torch.relu(self.fc1(torch.cat(parts, dim=1)))))
        return torch.cat([self.logits(x), self.residual(x)], dim=1)

    def hypotheses(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed one-pass outputs (B, 7K) -> (logits (B, K), rotations (B, K, 3, 3) = Δ_k·S_k), RELION A each."""
        from gumalign.models.so3 import sixd_to_matrix

        if self.config.head == "gumnet":
            raise ValueError(f"{self.config.arch!r} has the seed's head, not a one-pass hypothesis head")
        k = int(self.config.n_anchors)
        logits = params[:, :k]
        residual = sixd_to_matrix(params[:, k:].reshape(-1, k, 6))
        return logits, residual @ self.anchor_set.to(residual.dtype)

    def rigid(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 6) outputs -> (rotations (B, 3, 3), shifts (B, 3) voxels) with this model's rotation parameterisation.

        For a one-pass head: the highest-scoring hypothesis and zero shifts (it predicts no translation).
        """
        from gumalign.models.transformer import params_to_rigid

        if self.config.head != "gumnet":
            logits, rotations = self.hypotheses(params)
            best = logits.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            return rotations[rows, best], torch.zeros(len(best), 3, dtype=rotations.dtype, device=rotations.device)
        return params_to_rigid(params, self.config.box, self.config.rotation, self.config.max_angle_deg)

    def forward(self, s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
        return self.match(self.features(s_a, "a"), self.features(s_b, "b"))


def architecture_config(arch: str) -> GumNetConfig:
    """The configuration of a named architecture (GumalignError listing the names when unknown)."""
    if arch not in ARCHITECTURES:
        raise GumalignError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def build_model(arch: str | GumNetConfig, seed: int = 0) -> GumNet:
    """A freshly initialised Gum-Net of a named architecture (see ARCHITECTURES) or an explicit configuration.

    The initialisation depends only on ``seed`` (torch's global generator is left as it was).
    """
    config = arch if isinstance(arch, GumNetConfig) else architecture_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GumNet(config)
        model.reset_parameters()
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_counts() -> dict[str, int]:
    """{architecture: trainable parameters} for every named architecture (builds each once on the CPU)."""
    counts = {}
    for name, config in ARCHITECTURES.items():
        with torch.device("meta"):
            counts[name] = parameter_count(GumNet(config))
    return counts
