"""Unsupervised Gum-Net training: Adam on 1 - Pearson(s_b, imputed T(s_a)), with checkpoints and exact resume.

Schedule (seed S2): Adam with Keras' time decay, lr_k = lr / (1 + decay·k) at optimizer step k = 0, 1, ... (Keras 2.2
``decay``); Keras' Adam epsilon 1e-7. Each epoch visits the training pairs in an order drawn from a generator seeded by
(seed, epoch), so nothing random needs saving and a resumed run repeats exactly what an uninterrupted one does.
Ground truth, when the data have it, is only used for the validation errors reported after each epoch, except in
supervised mode (``TrainOptions.supervised``, ``gumalign train --supervised``): then the loss is the symmetry-aware
supervised loss of gumalign.models.so3 on the pairs' symmetry mates (cross-entropy on the anchors plus the residual
loss for one-pass heads; min over mates of ||R - R_g||_F² for the seed's head). Translation is not supervised: the
aligner's FFT search finds it.
On the CPU a resumed run is bitwise identical to an uninterrupted one (same thread count); on a GPU it agrees to
rounding only, since CUDA's grid_sample backward accumulates with atomics.

Several ranks (torchrun, ``world``; gumalign.distributed): the model is wrapped in DistributedDataParallel and every
global batch of the single-process schedule is dealt out to the ranks in contiguous pieces (what a
DistributedSampler does, within each batch and without padding), so a step of N ranks is the step of one process:
each rank's loss is weighted by its share of the batch, DDP sums the gradients, and batch normalisation uses the
statistics of the whole batch (synchronised across ranks, :class:`synchronised_batch_norm`); the losses reported and
the validation (split across the ranks and gathered) are those of the whole batch and set. The same seed therefore
gives the same model on 1 or N ranks up to float32 rounding of the changed summation order: a step's gradients agree
to ~1e-6 relative and the running statistics to ~1e-7. Adam moves each parameter by about lr per step whatever the
size of its gradient, so where a gradient is near zero a rounding difference can change a step by up to ~2·lr; after
2 epochs (8 steps) of gumnet-tiny on 14 pairs (tests/test_distributed.py) the parameters of 1 and 2 ranks agree to
2e-8 at the default lr 1e-5 (the test allows 1e-6) and to 5e-3 at lr 1e-3.
Every batch must give each rank at least one pair (--batch-size >= ranks, and the last batch too). Rank 0 writes
the checkpoints; ``resume`` restores every rank from them, on any number of ranks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gumalign.distributed import SINGLE, World
from gumalign.errors import GumalignError
from gumalign.models.gumnet import GumNet
from gumalign.models.transformer import correlation_loss, transform_and_impute
from gumalign.train.checkpoint import load_checkpoint, save_checkpoint
from gumalign.train.data import PairSet

CHECKPOINT_DIR = "checkpoint"
ADAM_EPSILON = 1e-7  # Keras 2.2's K.epsilon()


@dataclass
class TrainOptions:
    """How to train. lr and decay default to the seed's first stage (1e-5, 2e-8).

    ``shift_search`` (ours, not the seed's): add a second loss term that moves s_a by the network's rotation and the
    FFT's best shift for that rotation (gumalign.align.scoring.translation_search, no gradient through the search),
    so the rotation outputs learn from a well-translated s_a from the first step instead of waiting for the
    translation outputs to converge; the aligner uses the network the same way (network rotation, FFT shift).
    """

    epochs: int = 20  # as `gumalign train` (gumalign.ops.train.TrainRequest)
    batch_size: int = 32
    lr: float = 1e-5
    decay: float = 2e-8
    seed: int = 0
    shift_search: bool = False
    supervised: bool = False
    max_cpu_seconds: float | None = None  # stop after the epoch in which this process's CPU time passes this budget
    max_wall_seconds: float | None = None  # likewise for wall-clock time (GPU sessions with a fixed lease)


@dataclass
class Evaluation:
    """Validation results: mean loss and, with ground truth, per-pair rotation (Frobenius) and translation errors."""

    loss: float
    rotation_errors: np.ndarray | None = None
    translation_errors: np.ndarray | None = None
    snr: np.ndarray | None = None
    symmetric_rotation_errors: np.ndarray | None = None

    def summary(self) -> dict:
        """{'loss', 'n', and with ground truth 'rotation_error'/'translation_error' {mean, std}, 'per_snr'};
        with symmetry mates also 'rotation_error_symmetry_aware' {mean, std, median, within_15deg, within_30deg}."""
        out: dict = {"loss": self.loss}
        if self.rotation_errors is None:
            return out
        out.update(_error_stats(self.rotation_errors, self.translation_errors, self.symmetric_rotation_errors))
        if self.snr is not None:
            sym = self.symmetric_rotation_errors
            out["per_snr"] = {
                f"{value:g}": _error_stats(
                    self.rotation_errors[self.snr == value], self.translation_errors[self.snr == value],
                    None if sym is None else sym[self.snr == value],
                )
                for value in np.unique(self.snr)
            }
        return out


# Frobenius rotation errors of 15° and 30° (2·sqrt(2)·sin(θ/2)).
WITHIN_15 = 2 * np.sqrt(2) * np.sin(np.radians(15) / 2)
WITHIN_30 = 2 * np.sqrt(2) * np.sin(np.radians(30) / 2)


def rotation_stats(errors: np.ndarray) -> dict:
    """{mean, std, median, within_15deg, within_30deg} of Frobenius rotation errors."""
    errors = np.asarray(errors, dtype=np.float64)
    return {
        "mean": float(np.mean(errors)), "std": float(np.std(errors)), "median": float(np.median(errors)),
        "within_15deg": float(np.mean(errors <= WITHIN_15)), "within_30deg": float(np.mean(errors <= WITHIN_30)),
    }


def _error_stats(rot: np.ndarray, trans: np.ndarray, sym: np.ndarray | None = None) -> dict:
    out = {
        "n": int(len(rot)),
        "rotation_error": {"mean": float(np.mean(rot)), "std": float(np.std(rot))},
        "translation_error": {"mean": float(np.mean(trans)), "std": float(np.std(trans))},
    }
    if sym is not None:
        out["rotation_error_symmetry_aware"] = rotation_stats(sym)
    return out


def keras_decayed_lr(lr: float, decay: float, step: int) -> float:
    """Keras 2.2's time-based decay: the learning rate used at optimizer step ``step`` (0-based)."""
    return lr / (1.0 + decay * step)


def _to_device(arrays, device) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def pair_loss(
    model: GumNet, s_a, s_b, w_a, w_b=None, shift_search: bool = False, forward=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, params, rotations, shifts) for one batch: the network, the transformer with imputation, the loss.

    With ``shift_search`` the loss is the mean of the network's own term and the term at (network rotation, FFT
    shift); see TrainOptions. ``w_b`` (B or 1, N, N, N) is then needed for the wedge-constrained search.
    ``forward``: what runs the network (the DistributedDataParallel wrapper of ``model``; default ``model``).
    """
    params = (forward or model)(s_a, s_b)
    rotations, shifts = model.rigid(params)
    output = transform_and_impute(s_a, s_b, w_a, rotations, shifts)
    loss = correlation_loss(s_b, output)
    if shift_search:
        from gumalign.align.scoring import translation_search

        with torch.no_grad():
            best_shifts, _ = translation_search(s_a, w_a, s_b, w_b, rotations.detach())
        searched = transform_and_impute(s_a, s_b, w_a, rotations, best_shifts)
        loss = 0.5 * (loss + correlation_loss(s_b, searched))
    return loss, params, rotations, shifts


def supervised_pair_loss(
    model: GumNet, s_a, s_b, mates, forward=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, params, rotations, shifts) for one batch in supervised mode: the symmetry-aware loss of
    gumalign.models.so3 against ``mates`` (B, G, 3, 3); rotations/shifts are the model's top answer."""
    from gumalign.models.so3 import single_rotation_loss, supervised_loss

    params = (forward or model)(s_a, s_b)
    rotations, shifts = model.rigid(params)
    if model.config.one_pass:
        logits, hypotheses = model.hypotheses(params)
        mode = "hypotheses" if model.config.head == "hypotheses" else "anchors"
        loss, _ = supervised_loss(logits, hypotheses, model.anchor_set, mates, mode)
    else:
        loss = single_rotation_loss(rotations, mates)
    return loss, params, rotations, shifts


@torch.no_grad()
def evaluate(
    model: GumNet, pairs: PairSet, batch_size: int, device: torch.device | str, shift_search: bool = False,
    supervised: bool = False, world: World = SINGLE,
) -> Evaluation:
    """Loss and (with ground truth) alignment errors of ``model`` in eval mode on ``pairs`` (symmetry-aware rotation
    errors too when the pairs carry mates). With ``world`` each rank evaluates its contiguous shard of the pairs and
    every rank returns the evaluation of all of them."""
    from gumalign.geometry import rotation_error, translation_error

    if len(pairs) == 0:
        return Evaluation(loss=float("nan"))
    was_training = model.training
    model.eval()
    losses, weights, rots, shifts = [], [], [], []
    mine = world.rows(len(pairs))
    for start in range(0, len(mine), batch_size):
        rows = mine[start : start + batch_size]
        s_a, s_b, w_a, w_b = _to_device(pairs.batch(rows), device)
        if supervised:
            mates = torch.from_numpy(np.ascontiguousarray(pairs.mates_batch(rows))).to(device)
            loss, _, r, t = supervised_pair_loss(model, s_a, s_b, mates)
        else:
            loss, _, r, t = pair_loss(model, s_a, s_b, w_a, w_b, shift_search)
        losses.append(float(loss))
        weights.append(len(rows))
        rots.append(r.double().cpu().numpy())
        shifts.append(t.double().cpu().numpy())
    model.train(was_training)
    if world.size > 1:
        loss = world.sum_numbers(float(np.dot(losses, weights)) if losses else 0.0)[0] / len(pairs)
        local = np.concatenate([np.concatenate(rots).reshape(-1, 9), np.concatenate(shifts)], axis=1) if rots else (
            np.zeros((0, 12)))
        gathered = world.gather_shards(local, len(pairs))
        rots, shifts = [gathered[:, :9].reshape(-1, 3, 3)], [gathered[:, 9:]]
    else:
        loss = float(np.average(losses, weights=weights))
    result = Evaluation(loss=loss, snr=pairs.snr)
    if pairs.has_truth:
        estimates = np.concatenate(rots)
        result.rotation_errors = rotation_error(pairs.rotations, estimates)
        result.translation_errors = translation_error(pairs.shifts, np.concatenate(shifts))
        if pairs.mates is not None:
            result.symmetric_rotation_errors = rotation_error(pairs.mates, estimates[:, None]).min(axis=1)
    return result


def _data_key(train: PairSet, val: PairSet) -> str:
    return f"{train.fingerprint()}:{val.fingerprint()}"


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with the statistics of the whole batch across the ranks (all-reduced sums), in training
    mode: the forward and backward of torch's BatchNorm on the concatenated batch. torch.nn.SyncBatchNorm does this
    on GPUs only; this one runs wherever the world's collectives run (gloo on the CPU, NCCL on GPUs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, world):
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        x64 = x.double()
        count = torch.tensor([x.numel() // channels], dtype=torch.float64, device=x.device)
        stats = torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count])
        world.sum_(stats)
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0.0)
        invstd = torch.rsqrt(var + eps)
        xhat = ((x64 - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(xhat, weight, invstd.to(x.dtype))
        ctx.total, ctx.world, ctx.dims, ctx.shape = float(total), world, dims, shape
        y = xhat * weight.view(shape) + bias.view(shape)
        mean, unbiased = mean.to(x.dtype), (var * total / max(float(total) - 1.0, 1.0)).to(x.dtype)
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        xhat, weight, invstd = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        grad_bias = grad_y.sum(dims)
        grad_weight = (grad_y * xhat).sum(dims)
        sums = torch.cat([grad_bias, grad_weight]).double()
        ctx.world.sum_(sums)
        channels = len(grad_bias)
        mean_dy = (sums[:channels] / ctx.total).to(grad_y.dtype).view(shape)
        mean_dy_xhat = (sums[channels:] / ctx.total).to(grad_y.dtype).view(shape)
        grad_x = (weight * invstd).view(shape) * (grad_y - mean_dy - xhat * mean_dy_xhat)
        # The parameters' own gradients are this rank's share; DistributedDataParallel sums them over the ranks.
        return grad_x, grad_weight, grad_bias, None, None


def _synchronised_forward(world: World):
    def forward(self, x):
        if not self.training:
            return type(self).forward(self, x)
        y, mean, var = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps, world)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach(), alpha=m)
        return y

    return forward


class synchronised_batch_norm:
    """``with synchronised_batch_norm(model, world):`` every BatchNorm layer of ``model`` normalises training batches
    with the statistics of the whole batch across the ranks (and keeps the same running statistics on every rank);
    the layers, their parameters and their state-dict keys stay as they are, and are plain BatchNorm again after."""

    def __init__(self, model: torch.nn.Module, world: World):
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.world = world

    def __enter__(self):
        if self.world.size > 1:
            for layer in self.layers:
                if not layer.affine:
                    raise GumalignError("synchronised batch normalisation needs affine BatchNorm layers")
                layer.forward = _synchronised_forward(self.world).__get__(layer)
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
        return False


def rank_piece(rows: np.ndarray, world: World) -> np.ndarray:
    """This rank's piece of one batch's rows: np.array_split over the ranks (no padding); all of them for one."""
    return np.array_split(rows, world.size)[world.rank] if world.size > 1 else rows


def check_batches_for_ranks(n: int, batch_size: int, world: World) -> None:
    """Every batch of n pairs must give each of the world's ranks at least one pair."""
    if world.size == 1:
        return
    last = n % batch_size or batch_size
    if min(batch_size, n) < world.size or last < world.size:
        raise GumalignError(
            f"{world.size} ranks need at least {world.size} training pairs in every batch; the {n} pairs in batches of "
            f"{batch_size} end with a batch of {min(last, n)}: choose a --batch-size that leaves none that small, or "
            "fewer ranks"
        )


def train_model(
    model: GumNet,
    train: PairSet,
    val: PairSet,
    options: TrainOptions,
    out_dir: Path,
    device: torch.device | str = "cpu",
    *,
    resume: bool = False,
    on_batch: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    world: World = SINGLE,
) -> list[dict]:
    """Train ``model`` in place for ``options.epochs`` epochs, checkpointing into ``out_dir/checkpoint`` every epoch.

    Args:
        model: the network (freshly built or initialised from weights), on any device; moved to ``device``.
        train, val: training and validation pairs (val may be empty).
        resume: continue from ``out_dir/checkpoint`` (same data and options required; more epochs allowed).
        on_batch: called as on_batch(epoch, batches done in this epoch, batch loss) after each step.
        on_epoch: called with the epoch's history entry after each epoch.
        world: the ranks of a torchrun run (module docstring): every rank passes the same model, data and options;
            rank 0 writes the checkpoints. The history is the same on every rank (but for its seconds).

    Returns:
        The history: one dict per epoch (epoch, train_loss, lr, seconds, val summary).

    Raises:
        GumalignError: nothing to resume, or a checkpoint made with other data/options.
    """
    if len(train) == 0:
        raise GumalignError("no training pairs")
    if options.epochs < 1 or options.batch_size < 1:
        raise GumalignError("--epochs and --batch-size must be at least 1")
    check_batches_for_ranks(len(train), options.batch_size, world)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, betas=(0.9, 0.999), eps=ADAM_EPSILON)
    folder = Path(out_dir) / CHECKPOINT_DIR
    fixed = {
        "batch_size": options.batch_size, "lr": options.lr, "decay": options.decay, "seed": options.seed,
        "config": model.config.to_dict(), "data": _data_key(train, val),
    }
    if options.shift_search:  # only when on, so checkpoints from before the option still resume
        fixed["shift_search"] = True
    if options.supervised:
        if not train.has_truth:
            raise GumalignError("supervised training needs pairs with ground-truth orientations")
        fixed["supervised"] = True
    fixed = json.loads(json.dumps(fixed))  # the form it takes in state.json (tuples become lists)
    history: list[dict] = []
    start_epoch, step = 0, 0
    if resume:
        state = load_checkpoint(folder, model, optimizer, device)
        saved = state.get("fixed", {})  # both ways: an option on in either run and off in the other counts
        changed = sorted(k for k in set(fixed) | set(saved) if saved.get(k) != fixed.get(k))
        if changed:
            raise GumalignError(
                f"{folder}: the checkpoint was made with different {', '.join(changed)}; "
                "resume with the same data and options (only --epochs may grow)"
            )
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
    forward = None
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(device)
        # DDP broadcasts rank 0's buffers before each forward: the running statistics, the same on every rank.
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(train)
    cpu_began, wall_began = time.process_time(), time.monotonic()
    with synchronised_batch_norm(model, world):
        for epoch in range(start_epoch, options.epochs):
            # Budgets stop a run between epochs, after at least one epoch per call; the checkpoint of the last epoch
            # is on disk, so --resume continues from it. The ranks stop together (any rank's budget stops all).
            stop = options.max_cpu_seconds is not None and epoch > start_epoch and (
                time.process_time() - cpu_began >= options.max_cpu_seconds)
            if options.max_wall_seconds is not None and epoch > start_epoch and history:
                # Stop before an epoch that would end past the budget (judged by the last epoch's duration).
                stop = stop or time.monotonic() - wall_began + history[-1]["seconds"] > options.max_wall_seconds
            if world.any(stop):
                break
            began = time.monotonic()
            model.train()
            order = np.random.default_rng([options.seed, epoch]).permutation(n)
            total, count = 0.0, 0
            for b, start in enumerate(range(0, n, options.batch_size)):
                rows = np.sort(order[start : start + options.batch_size])
                local = rank_piece(rows, world)
                s_a, s_b, w_a, w_b = _to_device(train.batch(local), device)
                for group in optimizer.param_groups:
                    group["lr"] = keras_decayed_lr(options.lr, options.decay, step)
                optimizer.zero_grad(set_to_none=True)
                if options.supervised:
                    mates = torch.from_numpy(np.ascontiguousarray(train.mates_batch(local))).to(device)
                    loss, *_ = supervised_pair_loss(model, s_a, s_b, mates, forward=forward)
                else:
                    loss, *_ = pair_loss(model, s_a, s_b, w_a, w_b, options.shift_search, forward=forward)
                # The loss of the whole batch (every rank's share weighted by its pairs).
                batch_loss = float(loss.detach()) if world.size == 1 else (
                    world.sum_numbers(float(loss.detach()) * len(local))[0] / len(rows))
                if not np.isfinite(batch_loss):
                    raise GumalignError(f"training diverged at epoch {epoch + 1} (loss {batch_loss}); lower --lr")
                # DDP averages the ranks' gradients: weighting each by size × its share makes that the gradient of
                # the whole batch's mean loss.
                (loss * (len(local) * world.size / len(rows)) if world.size > 1 else loss).backward()
                optimizer.step()
                step += 1
                total += batch_loss * len(rows)
                count += len(rows)
                if on_batch is not None:
                    on_batch(epoch, b + 1, batch_loss)
            entry = {
                "epoch": epoch + 1,
                "train_loss": total / count,
                "lr": keras_decayed_lr(options.lr, options.decay, step),
                "val": evaluate(
                    model, val, options.batch_size, device, options.shift_search, options.supervised, world
                ).summary() if len(val) else None,
            }
            entry["seconds"] = time.monotonic() - began
            history.append(entry)
            if world.is_main:
                save_checkpoint(
                    folder, model, optimizer, {"epoch": epoch + 1, "step": step, "history": history, "fixed": fixed}
                )
            if on_epoch is not None:
                on_epoch(entry)
    return history


def plot_history(history: list[dict], path: Path) -> None:
    """Training and validation loss (1 - Pearson r) per epoch and, when the validation pairs carry the truth, the
    validation rotation error ||R - R̂|| against a random rotation's 2.40, as one PNG.

    Drawn by gumalign.plots.loss_curve (matplotlib's object API: no pyplot, no global backend switch). Both losses
    and rotation errors lie in [0, 2.83], so they share one axis; the 2.40 line and the plot's warning concern the
    rotation error.
    """
    from gumalign.plots import loss_curve

    val = [h["val"] for h in history]
    series = {"training loss": [h["train_loss"] for h in history]}
    if any(v for v in val):
        series["validation loss"] = [v["loss"] if v else np.nan for v in val]
    if not any(v and "rotation_error" in v for v in val):
        loss_curve(path, series, ylabel="loss (1 - Pearson r)")
        return
    watch = "validation rotation error"
    series[watch] = [v["rotation_error"]["mean"] if v and "rotation_error" in v else np.nan for v in val]
    # 2.40: the mean ||R - R̂|| of a Haar-random guess, 16·√2 / (3π) (REFERENCE.md).
    loss_curve(path, series, ylabel="loss (1 - r); rotation error ||R - R̂||", reference=2.40, watch=watch)

