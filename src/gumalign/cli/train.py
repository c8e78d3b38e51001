"""`gumalign train`: train Gum-Net without labels, on particles + a reference, a pairs.star, or simulated pairs;
or, with `--supervised`, on simulated pairs with their ground-truth rotations (symmetry-aware).

The loss is 1 - Pearson(s_b, imputed T(s_a)); ground-truth orientations, when the data have them, only feed the
validation errors printed after each epoch. A checkpoint is written every epoch; `--resume` continues a killed run
with the same result as an uninterrupted one. DIR receives model.safetensors + model.json (usable wherever a model
name is: `gumalign align --model DIR`), loss.png and checkpoint/.

Example usage:

    gumalign train --particles sim/particles.star --ref sim/reference.mrc --out model/
    gumalign train --pairs sim/pairs.star --epochs 50 --out model/
    gumalign train --simulate builtin:proteasome --simulate 3j9i.pdb --snr 100,0.1 --n-pairs 2000 --out model/
    gumalign train --pairs sim/pairs.star --init gumnet-compact-sim32 --lr 1e-6 --decay 5e-9 --out finetuned/
    gumalign train ... --out model/ --resume        # after an interruption
    gumalign train --supervised --arch gumnet-so3 --simulate builtin:p97,builtin:rubisco --blobs 40 \
        --voxel-sizes 9,12 --snr 100,1,0.1 --n-pairs 4000 --data-cache pairs.npz --out so3/   # one-pass model
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import err_console, handle_errors, info


def _split_list(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values alike: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _parse_snrs(values: list[str] | None) -> list[float]:
    from gumalign.errors import GumalignError

    out = []
    for text in _split_list(values):
        try:
            snr = float(text)
        except ValueError:
            raise GumalignError(f"--snr {text!r} is not a number") from None
        if not snr > 0:
            raise GumalignError(f"--snr must be positive, got {text}")
        out.append(snr)
    return out


@handle_errors
def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (model, record, loss curve, checkpoint).")],
    particles: Annotated[Optional[Path], typer.Option(help="RELION STAR file of particles (with --ref).")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference MRC paired with every particle.")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="pairs.star from `gumalign simulate --pairs`.")] = None,
    simulate: Annotated[
        Optional[List[str]],
        typer.Option(help="Simulate pairs from these structures (PDB/mmCIF, MRC or builtin:NAME); repeat or comma-separate."),
    ] = None,
    snr: Annotated[Optional[List[str]], typer.Option(help="SNR(s) for --simulate; repeat or comma-separate.")] = None,
    n_pairs: Annotated[int, typer.Option(help="Total simulated pairs (spread over structures × SNRs).", min=1)] = 1000,
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å for --simulate.", min=0.1)] = 12.0,
    max_shift: Annotated[float, typer.Option(help="Random shift per axis of each simulated subtomogram, voxels.", min=0)] = 7.0,
    max_angle: Annotated[
        Optional[float],
        typer.Option(help="Largest relative rotation of simulated pairs, degrees (default: any); the shipped model "
                          "uses 50 for multi-start alignment.", min=1, max=180),
    ] = None,
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range (degrees): the wedge of simulated s_b, or of particles without rlnCtfImage."),
    ] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(help="Architecture: gumnet, gumnet-compact, mp, ap, sc, or a one-pass full-SO(3) head: "
                          "gumnet-so3 (anchors), gumnet-so3-mh (hypotheses), their -small variants "
                          "(default gumnet-compact; gumnet-so3 with --supervised)."),
    ] = None,
    supervised: Annotated[
        bool,
        typer.Option("--supervised", help="Supervised pre-training on the ground truth of simulated pairs "
                                          "(symmetry-aware; cross-entropy on anchors + residual for one-pass heads)."),
    ] = False,
    blobs: Annotated[
        int, typer.Option(help="Add this many procedurally generated asymmetric shapes to --simulate.", min=0)
    ] = 0,
    voxel_sizes: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated voxel sizes (Å) to simulate every structure at (overrides --voxel-size)."),
    ] = None,
    data_cache: Annotated[
        Optional[Path],
        typer.Option(help="Keep the simulated pairs in this .npz and reuse them when the simulation options match "
                          "(resumed runs and design comparisons skip the simulation)."),
    ] = None,
    max_cpu_minutes: Annotated[
        Optional[float],
        typer.Option(help="Stop after the epoch in which training has used this much CPU time (resume continues).",
                     min=0),
    ] = None,
    max_minutes: Annotated[
        Optional[float],
        typer.Option(help="Stop before an epoch that would end later than this many minutes after the command "
                          "started (wall clock, data simulation included; resume continues).", min=0),
    ] = None,
    init: Annotated[Optional[str], typer.Option(help="Start from a trained model (built-in name or path) to fine-tune.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (total, including those of a resumed run).", min=1)] = 20,
    batch_size: Annotated[int, typer.Option(help="Pairs per optimizer step.", min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (the seed: 1e-5; fine-tuning 1e-6).", min=0)] = 1e-5,
    decay: Annotated[float, typer.Option(help="Keras time decay: lr/(1 + decay·step) (the seed: 2e-8).", min=0)] = 2e-8,
    val_fraction: Annotated[float, typer.Option(help="Share of pairs held out for validation.", min=0, max=0.9)] = 0.1,
    shift_search: Annotated[
        bool,
        typer.Option(
            "--shift-search/--no-shift-search",
            help="Add a loss term at the network's rotation with the FFT's best shift (ours; speeds up learning "
            "rotations; the shipped recipe uses it).",
        ),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Use an --init model file that has no record or does not match it.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: all available cores).", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed for the initialisation, data split, order and simulation.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log output.")] = False,
) -> None:
    """Train a Gum-Net model without labels and write it to --out (model.safetensors + model.json + loss.png)."""
    import os
    import shlex
    import sys
    import time

    import torch

    from gumalign import __version__
    from gumalign.devices import resolve_device
    from gumalign.errors import GumalignError
    from gumalign.models.gumnet import ARCHITECTURES, build_model, parameter_count
    from gumalign.train.data import load_templates, pairs_from_pairs_star, pairs_from_particles, simulated_pairs
    from gumalign.train.loop import CHECKPOINT_DIR, TrainOptions, plot_history
    from gumalign.io.atomic import atomic_outputs
    from gumalign.weights import load_model, resolve_model, save_model

    sources = [particles is not None or ref is not None, pairs is not None, bool(simulate) or blobs > 0]
    if sum(sources) != 1:
        raise GumalignError("give exactly one data source: --particles with --ref, --pairs, or --simulate")
    if (particles is None) != (ref is None):
        raise GumalignError("--particles and --ref go together")
    if arch is not None and arch not in ARCHITECTURES:
        raise GumalignError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    from gumalign.cli._common import check_output_folder, refuse_overwriting_inputs
    from gumalign.train.checkpoint import has_checkpoint, read_checkpoint_state

    checkpoint = out / CHECKPOINT_DIR
    if resume and not has_checkpoint(checkpoint):
        raise GumalignError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/state.json); run without --resume")
    if not resume and has_checkpoint(checkpoint):
        raise GumalignError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
    if resume:
        done_epochs = int(read_checkpoint_state(checkpoint).get("epoch", 0))
        if epochs < done_epochs:
            raise GumalignError(
                f"{out}: the checkpoint has {done_epochs} epochs already; --epochs counts all of them, so give "
                f"--epochs {done_epochs} or more"
            )
    check_output_folder(out)
    outputs = [out / "loss.png", out / "model.safetensors", out / "model.json"]
    init_files = [resolve_model(init)[0]] if init is not None else []
    refuse_overwriting_inputs(outputs, [particles, ref, pairs, *init_files])

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads or available)
    torch_device = resolve_device(device)

    # Data.
    began = time.monotonic()
    if pairs is not None:
        data = pairs_from_pairs_star(pairs)
    elif particles is not None:
        from gumalign.align.particles import check_pixel_size
        from gumalign.io.mrc import read_volume
        from gumalign.io.star import read_star

        check_pixel_size(read_star(particles), read_volume(ref), str(ref))  # as `align` refuses it
        data = pairs_from_particles(particles, ref, tuple(tilt_range) if tilt_range else None)
    elif supervised or blobs or voxel_sizes or data_cache:
        data = _simulated_training_data(
            simulate, blobs, voxel_sizes, voxel_size, snr, n_pairs, seed, tilt_range, max_shift, max_angle,
            threads or available, supervised, data_cache, quiet,
        )
    else:
        snrs = _parse_snrs(snr)
        if not snrs:
            raise GumalignError("--simulate needs at least one --snr")
        info(f"simulating {n_pairs} pairs from {len(_split_list(simulate))} structure(s) at SNR {snrs}", quiet)
        templates = load_templates(_split_list(simulate), box=32, voxel_size=voxel_size)
        data = simulated_pairs(
            templates, snrs, n_pairs, seed, tilt_range_b=tuple(tilt_range) if tilt_range else (-60.0, 60.0),
            max_shift=max_shift, voxel_size=voxel_size, max_angle=max_angle, jobs=threads or available,
        )
    if supervised and not data.has_truth:
        raise GumalignError("--supervised needs ground-truth orientations (simulated pairs, or STAR files with angles)")
    train_set, val_set = data.split(val_fraction, seed)
    info(
        f"{len(train_set)} training and {len(val_set)} validation pairs of {data.box}³"
        f"{' with ground truth (reported, not used in the loss)' if data.has_truth else ''} "
        f"({time.monotonic() - began:.0f} s)",
        quiet,
    )

    # Model.
    init_record = None
    if init is not None:
        model, init_record = load_model(init, "cpu", allow_unverified=allow_unverified)
        if arch is not None and arch != model.config.arch:
            raise GumalignError(f"--init {init} is a {model.config.arch!r} model, not --arch {arch!r}")
    else:
        model = build_model(arch or ("gumnet-so3" if supervised else "gumnet-compact"), seed=seed)
    if data.box != model.config.box:
        raise GumalignError(f"Gum-Net takes {model.config.box}³ volumes; the training data are {data.box}³")
    info(
        f"{model.config.arch}: {parameter_count(model):,} parameters on {torch_device}"
        f"{f' ({torch.get_num_threads()} threads)' if torch_device.type == 'cpu' else ''}",
        quiet,
    )

    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, decay=decay, seed=seed, shift_search=shift_search,
        supervised=supervised, max_cpu_seconds=None if max_cpu_minutes is None else 60.0 * max_cpu_minutes,
        max_wall_seconds=None if max_minutes is None else 60.0 * max_minutes - (time.monotonic() - began),
    )
    steps_per_epoch = -(-len(train_set) // batch_size)
    history = _run_with_progress(
        model, train_set, val_set, options, out, torch_device, resume, steps_per_epoch, quiet
    )

    # Outputs.
    last_val = history[-1]["val"] or {}
    record = {
        "name": out.name,
        "description": f"Gum-Net ({model.config.arch}) trained by `gumalign train`",
        "box": data.box,
        "voxel_size": data.voxel_size,
        "wedge": _wedge_description(data.description),
        "training": {
            "command": shlex.join(["gumalign"] + [a for a in sys.argv[1:] if a != "--resume"]),
            "data": data.description,
            "pairs_train": len(train_set),
            "pairs_val": len(val_set),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "decay": decay,
            "seed": seed,
            "shift_search": shift_search,
            "supervised": supervised,
            "epochs_done": len(history),
            "init": init_record.get("name", init) if init_record else None,
            "device": str(torch_device),
            "gumalign_version": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "history": history,
        },
        "validation": last_val,
    }
    # All three or none: a full disk here leaves the checkpoint, and `--resume` writes them again.
    with atomic_outputs(outputs) as tmp:
        plot_history(history, tmp[out / "loss.png"])
        save_model(model, record, tmp[out / "model.json"].parent)
    weights = out / "model.safetensors"
    info(f"wrote {weights} and {out / 'model.json'}, {out / 'loss.png'}", quiet)
    if "rotation_error" in last_val:
        info(_errors_line("validation", last_val), quiet)


def _simulated_training_data(
    simulate, blobs, voxel_sizes, voxel_size, snr, n_pairs, seed, tilt_range, max_shift, max_angle, jobs, supervised,
    data_cache, quiet,
):
    """Pairs from gumalign.train.data.simulated_training_pairs (built-ins at several voxel sizes, blobs, symmetry
    mates for --supervised), read from / written to ``data_cache`` when given."""
    import json

    from gumalign.errors import GumalignError
    from gumalign.train.data import load_pairset, save_pairset, simulated_training_pairs

    snrs = _parse_snrs(snr)
    if not snrs:
        raise GumalignError("--simulate needs at least one --snr")
    try:
        sizes = [float(v) for v in voxel_sizes.split(",")] if voxel_sizes else [float(voxel_size)]
    except ValueError:
        raise GumalignError(f"--voxel-sizes {voxel_sizes!r} is not a comma-separated list of numbers") from None
    if any(v <= 0 for v in sizes):
        raise GumalignError("--voxel-sizes must be positive")
    options = dict(
        structures=_split_list(simulate), snrs=snrs, n_pairs=n_pairs, seed=seed, voxel_sizes=sizes, blobs=blobs,
        tilt_range_b=list(tilt_range) if tilt_range else [-60.0, 60.0], max_shift=max_shift, max_angle=max_angle,
        with_mates=bool(supervised),
    )
    key = json.dumps(options, sort_keys=True)
    if data_cache is not None:
        cached = load_pairset(data_cache, key)
        if cached is not None:
            info(f"read {len(cached)} simulated pairs from {data_cache}", quiet)
            return cached
    info(f"simulating {n_pairs} pairs from {len(options['structures'])} structure(s) at {sizes} Å and {blobs} "
         f"blob(s) at SNR {snrs}", quiet)
    data = simulated_training_pairs(
        options["structures"], snrs, n_pairs, seed, voxel_sizes=sizes, blobs=blobs,
        tilt_range_b=tuple(options["tilt_range_b"]), max_shift=max_shift, max_angle=max_angle, jobs=jobs,
        with_mates=bool(supervised),
    )
    if data_cache is not None:
        save_pairset(data, data_cache, key)
        info(f"kept the pairs in {data_cache}", quiet)
    return data


def _wedge_description(description: dict) -> str:
    """The missing wedges of the training data in words, for the model record."""
    if description.get("source") == "simulated":
        lo, hi = description["tilt_range_b"]
        return f"s_a: none (tilts -90..90); s_b: tilts {lo:g}..{hi:g} ({90 - max(abs(lo), abs(hi)):g}° wedge), tilt axis y"
    if description.get("source") == "particles":
        return f"particles: {description.get('weights')}; reference: none"
    return "per pair, from rlnCtfImage and gumPairReferenceWeight"


def _errors_line(label: str, summary: dict) -> str:
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


def _run_with_progress(model, train_set, val_set, options, out, device, resume, steps_per_epoch, quiet):
    """train_model under a rich progress bar showing the running loss; one log line per epoch."""
    from gumalign.train.loop import train_model

    if quiet:
        return train_model(model, train_set, val_set, options, out, device, resume=resume)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("epoch", total=steps_per_epoch, loss="-")
        running = {"sum": 0.0, "n": 0}

        def on_batch(epoch: int, done: int, loss: float) -> None:
            if done == 1:
                running.update(sum=0.0, n=0)
                progress.reset(task, total=steps_per_epoch, description=f"epoch {epoch + 1}/{options.epochs}", loss="-")
            running["sum"] += loss
            running["n"] += 1
            progress.update(task, completed=done, loss=f"{running['sum'] / running['n']:.4f}")

        def on_epoch(entry: dict) -> None:
            line = f"epoch {entry['epoch']}/{options.epochs} ({entry['seconds']:.0f} s): train loss {entry['train_loss']:.4f}"
            if entry["val"]:
                line += f"; {_errors_line('validation', entry['val'])}" if "rotation_error" in entry["val"] else (
                    f"; validation loss {entry['val']['loss']:.4f}")
            progress.console.print(line, soft_wrap=True)

        return train_model(
            model, train_set, val_set, options, out, device, resume=resume, on_batch=on_batch, on_epoch=on_epoch
        )
