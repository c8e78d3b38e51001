"""The `train` operation: train Gum-Net without labels (particles + a reference, a pairs.star, or simulated pairs), or
with ``supervised`` on simulated pairs and their ground truth; see gumalign.cli.train for the loss and outputs.

    from gumalign.ops import Runtime, TrainRequest, train

    report = train(TrainRequest(out=Path("model"), pairs=Path("sim/pairs.star"), epochs=5), Runtime(threads=2))

A checkpoint is written every epoch; ``resume=True`` continues a killed run with the same result as an uninterrupted
one. The caller's torch thread count is restored afterwards (Runtime.applied).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.ops.runtime import Runtime, available_cores


@dataclass(frozen=True)
class TrainRequest:
    """What `gumalign train` is asked (the CLI's --help gives each option's meaning).

    Data source, exactly one of: ``particles`` with ``ref``; ``pairs``; ``simulate`` structures and/or ``blobs``.
    ``threads``: CPU threads of the run (None: every core this process may use) — also the simulation's workers.
    ``command``: the command line recorded in model.json (None: this request, in Python).
    """

    out: Path
    particles: Path | None = None
    ref: Path | None = None
    pairs: Path | None = None
    simulate: tuple[str, ...] = ()
    snrs: tuple[float, ...] = ()
    n_pairs: int = 1000
    voxel_size: float = 12.0
    max_shift: float = 7.0
    max_angle: float | None = None
    tilt_range: tuple[float, float] | None = None
    arch: str | None = None
    supervised: bool = False
    blobs: int = 0
    voxel_sizes: tuple[float, ...] | None = None
    data_cache: Path | None = None
    max_cpu_minutes: float | None = None
    max_minutes: float | None = None
    init: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-5
    decay: float = 2e-8
    val_fraction: float = 0.1
    shift_search: bool = False
    resume: bool = False
    allow_unverified: bool = False
    seed: int = 0
    command: str | None = None


@dataclass
class TrainReport:
    out: Path
    history: list[dict]
    record: dict

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        summary = {"epochs_done": len(self.history), "train_loss": round(float(last.get("train_loss", "nan")), 6)}
        val = last.get("val") or {}
        if "loss" in val:
            summary["val_loss"] = round(float(val["loss"]), 6)
        if "rotation_error" in val:
            summary["val_rotation_error"] = round(float(val["rotation_error"]["mean"]), 4)
        summary["model"] = str(self.out / "model.safetensors")
        return summary


def check_request(r: TrainRequest) -> None:
    """The request's own consistency, before any file is read."""
    sources = [r.particles is not None or r.ref is not None, r.pairs is not None, bool(r.simulate) or r.blobs > 0]
    if sum(sources) != 1:
        raise GumalignError("give exactly one data source: --particles with --ref, --pairs, or --simulate")
    if (r.particles is None) != (r.ref is None):
        raise GumalignError("--particles and --ref go together")
    if any(not snr > 0 for snr in r.snrs):
        raise GumalignError(f"--snr must be positive, got {[s for s in r.snrs if not s > 0][0]}")
    if r.voxel_sizes is not None and any(not v > 0 for v in r.voxel_sizes):
        raise GumalignError("--voxel-sizes must be positive")


def train(request: TrainRequest, runtime: Runtime | None = None) -> TrainReport:
    """Train the model ``request`` describes and write model.safetensors, model.json and loss.png into its ``out``."""
    import dataclasses

    from gumalign.io.atomic import check_output_folder, refuse_overwriting_inputs
    from gumalign.models.gumnet import ARCHITECTURES
    from gumalign.train.checkpoint import has_checkpoint, read_checkpoint_state
    from gumalign.train.loop import CHECKPOINT_DIR
    from gumalign.weights import resolve_model

    check_request(request)
    runtime = runtime or Runtime()
    r, out = request, Path(request.out)
    if r.arch is not None and r.arch not in ARCHITECTURES:
        raise GumalignError(f"unknown --arch {r.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    checkpoint = out / CHECKPOINT_DIR
    if r.resume and not has_checkpoint(checkpoint):
        raise GumalignError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/state.json); run without --resume")
    if not r.resume and has_checkpoint(checkpoint):
        raise GumalignError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
    if r.resume:
        done_epochs = int(read_checkpoint_state(checkpoint).get("epoch", 0))
        if r.epochs < done_epochs:
            raise GumalignError(
                f"{out}: the checkpoint has {done_epochs} epochs already; --epochs counts all of them, so give "
                f"--epochs {done_epochs} or more"
            )
    check_output_folder(out)
    outputs = [out / "loss.png", out / "model.safetensors", out / "model.json"]
    init_files = [resolve_model(r.init)[0]] if r.init is not None else []
    refuse_overwriting_inputs(outputs, [r.particles, r.ref, r.pairs, *init_files])

    from gumalign import distributed

    world = distributed.init_if_launched(distributed.rank_device(runtime.device))
    # Under torchrun the ranks of a node share its cores.
    threads = runtime.threads or max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    ranked = distributed.rank_runtime(dataclasses.replace(runtime, threads=threads), world)
    with ranked.applied() as device:
        began = time.monotonic()
        data = _training_data(r, threads, ranked, world)
        return _train_on(r, data, began, device, outputs, ranked, world, runtime.log)


def _training_data(r: TrainRequest, jobs: int, runtime: Runtime, world=None):
    """The PairSet of the request's data source (every rank of a torchrun world makes the same one)."""
    from gumalign.train.data import load_templates, pairs_from_pairs_star, pairs_from_particles, simulated_pairs

    if r.pairs is not None:
        return pairs_from_pairs_star(r.pairs)
    if r.particles is not None:
        from gumalign.align.particles import check_pixel_size
        from gumalign.io.mrc import read_volume
        from gumalign.io.star import read_star

        check_pixel_size(read_star(r.particles), read_volume(r.ref), str(r.ref))  # as `align` refuses it
        return pairs_from_particles(r.particles, r.ref, tuple(r.tilt_range) if r.tilt_range else None)
    if not r.snrs:
        raise GumalignError("--simulate needs at least one --snr")
    if r.supervised or r.blobs or r.voxel_sizes or r.data_cache:
        return _simulated_training_data(r, jobs, runtime, world is None or world.is_main)
    runtime.log(f"simulating {r.n_pairs} pairs from {len(r.simulate)} structure(s) at SNR {list(r.snrs)}")
    templates = load_templates(list(r.simulate), box=32, voxel_size=r.voxel_size)
    return simulated_pairs(
        templates, list(r.snrs), r.n_pairs, r.seed, tilt_range_b=tuple(r.tilt_range) if r.tilt_range else (-60.0, 60.0),
        max_shift=r.max_shift, voxel_size=r.voxel_size, max_angle=r.max_angle, jobs=jobs,
    )


def _simulated_training_data(r: TrainRequest, jobs: int, runtime: Runtime, write_cache: bool = True):
    """Pairs from gumalign.train.data.simulated_training_pairs (built-ins at several voxel sizes, blobs, symmetry
    mates for supervised training), read from / written to ``data_cache`` when given (written by rank 0 only)."""
    from gumalign.train.data import load_pairset, save_pairset, simulated_training_pairs

    sizes = list(r.voxel_sizes) if r.voxel_sizes else [float(r.voxel_size)]
    options = dict(
        structures=list(r.simulate), snrs=list(r.snrs), n_pairs=r.n_pairs, seed=r.seed, voxel_sizes=sizes,
        blobs=r.blobs, tilt_range_b=list(r.tilt_range) if r.tilt_range else [-60.0, 60.0], max_shift=r.max_shift,
        max_angle=r.max_angle, with_mates=bool(r.supervised),
    )
    key = json.dumps(options, sort_keys=True)
    if r.data_cache is not None:
        cached = load_pairset(r.data_cache, key)
        if cached is not None:
            runtime.log(f"read {len(cached)} simulated pairs from {r.data_cache}")
            return cached
    runtime.log(f"simulating {r.n_pairs} pairs from {len(options['structures'])} structure(s) at {sizes} Å and "
                f"{r.blobs} blob(s) at SNR {list(r.snrs)}")
    data = simulated_training_pairs(
        options["structures"], list(r.snrs), r.n_pairs, r.seed, voxel_sizes=sizes, blobs=r.blobs,
        tilt_range_b=tuple(options["tilt_range_b"]), max_shift=r.max_shift, max_angle=r.max_angle, jobs=jobs,
        with_mates=bool(r.supervised),
    )
    if r.data_cache is not None and write_cache:
        save_pairset(data, r.data_cache, key)
        runtime.log(f"kept the pairs in {r.data_cache}")
    return data


def _train_on(r: TrainRequest, data, began: float, device, outputs: list[Path], runtime: Runtime, world=None,
              rank_log=None) -> TrainReport:
    """Split, build (or load) the model, train it with checkpoints, write the outputs (all three or none; rank 0 of
    a torchrun world, whose ranks share every batch)."""
    import numpy as np
    import torch

    from gumalign.distributed import SINGLE, rank_line

    from gumalign import __version__
    from gumalign.io.atomic import atomic_outputs
    from gumalign.models.gumnet import build_model, parameter_count
    from gumalign.train.loop import TrainOptions, plot_history
    from gumalign.weights import load_model, save_model

    out = Path(r.out)
    if r.supervised and not data.has_truth:
        raise GumalignError("--supervised needs ground-truth orientations (simulated pairs, or STAR files with angles)")
    world = world or SINGLE
    train_set, val_set = data.split(r.val_fraction, r.seed)
    if world.size > 1:
        # The ranks must train on the same pairs (each made its own): compare their fingerprints.
        digest = float(int(train_set.fingerprint()[:13], 16))  # 52 bits: exact in float64
        if len(set(world.gather_rows(np.array([digest]), [1] * world.size).tolist())) != 1:
            raise GumalignError("the ranks made different training data; give every rank the same inputs and seed")
        from gumalign.train.loop import check_batches_for_ranks, rank_piece

        check_batches_for_ranks(len(train_set), r.batch_size, world)
        share = sum(len(rank_piece(np.arange(min(r.batch_size, len(train_set) - s)), world))
                    for s in range(0, len(train_set), r.batch_size))
        (rank_log or runtime.log)(rank_line(world, share, "training pairs per epoch"))
    runtime.log(
        f"{len(train_set)} training and {len(val_set)} validation pairs of {data.box}³"
        f"{' with ground truth (reported, not used in the loss)' if data.has_truth else ''} "
        f"({time.monotonic() - began:.0f} s)"
    )
    init_record = None
    if r.init is not None:
        model, init_record = load_model(r.init, "cpu", allow_unverified=r.allow_unverified)
        if r.arch is not None and r.arch != model.config.arch:
            raise GumalignError(f"--init {r.init} is a {model.config.arch!r} model, not --arch {r.arch!r}")
    else:
        model = build_model(r.arch or ("gumnet-so3" if r.supervised else "gumnet-compact"), seed=r.seed)
    if data.box != model.config.box:
        raise GumalignError(
            f"Gum-Net takes {model.config.box}³ volumes; the training data are {data.box}³ (the architectures are "
            f"built for {model.config.box}³: resample the particles to {model.config.box}³, e.g. with "
            "`relion_image_handler --rescale_angpix` or `--new_box`; `align` resamples any box for a trained model)"
        )
    runtime.log(f"{model.config.arch}: {parameter_count(model):,} parameters on {device}"
                f"{f' ({torch.get_num_threads()} threads)' if device.type == 'cpu' else ''}")

    options = TrainOptions(
        epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, decay=r.decay, seed=r.seed, shift_search=r.shift_search,
        supervised=r.supervised, max_cpu_seconds=None if r.max_cpu_minutes is None else 60.0 * r.max_cpu_minutes,
        max_wall_seconds=None if r.max_minutes is None else 60.0 * r.max_minutes - (time.monotonic() - began),
    )
    history = _run_epochs(model, train_set, val_set, options, out, device, r.resume, runtime, world)
    if not world.is_main:
        return TrainReport(out, history, {})

    last_val = history[-1]["val"] or {}
    record = {
        "name": out.name,
        "description": f"Gum-Net ({model.config.arch}) trained by `gumalign train`",
        "box": data.box,
        "voxel_size": data.voxel_size,
        "wedge": wedge_description(data.description),
        "training": {
            "command": r.command if r.command is not None else f"gumalign.ops.train({r!r})",
            "data": data.description,
            "pairs_train": len(train_set),
            "pairs_val": len(val_set),
            "epochs": r.epochs,
            "batch_size": r.batch_size,
            "lr": r.lr,
            "decay": r.decay,
            "seed": r.seed,
            "shift_search": r.shift_search,
            "supervised": r.supervised,
            "epochs_done": len(history),
            "init": init_record.get("name", r.init) if init_record else None,
            "device": str(device),
            "gumalign_version": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "history": history,
        },
        "validation": last_val,
    }
    # All three or none: a full disk here leaves the checkpoint, and resuming writes them again.
    with atomic_outputs(outputs) as tmp:
        plot_history(history, tmp[out / "loss.png"])
        save_model(model, record, tmp[out / "model.json"].parent)
    runtime.log(f"wrote {out / 'model.safetensors'} and {out / 'model.json'}, {out / 'loss.png'}")
    if "rotation_error" in last_val:
        runtime.log(errors_line("validation", last_val))
    return TrainReport(out, history, record)


def _run_epochs(model, train_set, val_set, options, out: Path, device, resume: bool, runtime: Runtime,
                world=None) -> list[dict]:
    """train_model with one runtime progress bar per epoch and one log line per epoch."""
    from gumalign.train.loop import train_model

    steps_per_epoch = -(-len(train_set) // options.batch_size)
    with ExitStack() as bars:
        state = {"advance": None}

        def on_batch(epoch: int, done: int, loss: float) -> None:
            if done == 1:
                bars.close()
                state["advance"] = bars.enter_context(
                    runtime.progress(f"epoch {epoch + 1}/{options.epochs}", steps_per_epoch)
                )
            state["advance"](1)

        def on_epoch(entry: dict) -> None:
            bars.close()
            line = f"epoch {entry['epoch']}/{options.epochs} ({entry['seconds']:.0f} s): train loss {entry['train_loss']:.4f}"
            if entry["val"]:
                line += f"; {errors_line('validation', entry['val'])}" if "rotation_error" in entry["val"] else (
                    f"; validation loss {entry['val']['loss']:.4f}")
            runtime.log(line)

        from gumalign.distributed import SINGLE

        return train_model(
            model, train_set, val_set, options, out, device, resume=resume, on_batch=on_batch, on_epoch=on_epoch,
            world=world or SINGLE,
        )


def wedge_description(description: dict) -> str:
    """The missing wedges of the training data in words, for the model record."""
    if description.get("source") == "simulated":
        lo, hi = description["tilt_range_b"]
        return f"s_a: none (tilts -90..90); s_b: tilts {lo:g}..{hi:g} ({90 - max(abs(lo), abs(hi)):g}° wedge), tilt axis y"
    if description.get("source") == "particles":
        return f"particles: {description.get('weights')}; reference: none"
    return "per pair, from rlnCtfImage and gumPairReferenceWeight"


def errors_line(label: str, summary: dict) -> str:
    """A validation summary in one line (and one per SNR)."""
    text = (
        f"{label}: loss {summary['loss']:.4f}, rotation error {summary['rotation_error']['mean']:.3f} "
        f"± {summary['rotation_error']['std']:.3f}, translation error {summary['translation_error']['mean']:.2f} "
        f"± {summary['translation_error']['std']:.2f} voxels"
    )
    sym = summary.get("rotation_error_symmetry_aware")
    if sym:
        text += (f"; symmetry-aware rotation error {sym['mean']:.3f} (median {sym['median']:.3f}, "
                 f"{100 * sym['within_15deg']:.0f}% within 15°, {100 * sym['within_30deg']:.0f}% within 30°)")
    for value, stats in (summary.get("per_snr") or {}).items():
        text += (
            f"\n  SNR {value}: rotation {stats['rotation_error']['mean']:.3f}, "
            f"translation {stats['translation_error']['mean']:.2f} (n={stats['n']})"
        )
        if stats.get("rotation_error_symmetry_aware"):
            text += f", symmetry-aware {stats['rotation_error_symmetry_aware']['mean']:.3f}"
    return text
