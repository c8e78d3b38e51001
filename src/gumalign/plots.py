"""PNG plots where people look rather than read: FSC curves, score heatmaps, slice montages, loss curves.

matplotlib's object API with the Agg canvas (no pyplot, no display, no global state), imported inside each function so
importing this module is cheap. Every plot is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from gumalign.io.atomic import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> None:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


# Threshold lines: one style each, so 0.143 and 0.5 can be told apart in print and in grey scale.
_THRESHOLD_STYLES = {0.143: dict(color="#c0392b", linestyle="--"), 0.5: dict(color="#2471a3", linestyle="-.")}
_OTHER_THRESHOLD = dict(color="#7f7f7f", linestyle=":")
# Secondary curves: light, thin, behind the headline curve.
_SECONDARY_COLOURS = ("#e69f00", "#56b4e9", "#009e73", "#cc79a7", "#999999")


def fsc_plot(
    path: str | os.PathLike, frequency_inv_angstrom: np.ndarray, curves: Mapping[str, np.ndarray], **options
) -> None:
    """FSC curves against spatial frequency (1/Å), with labelled threshold lines and resolution markers.

    Args (``options`` are :func:`fsc_figure`'s keyword arguments):
        frequency_inv_angstrom: (S,) frequency of each shell in 1/Å.
        curves: label -> (S,) FSC values.
        thresholds: FSC values marked by horizontal lines, each in its own style and labelled on the plot
            (default 0.143 and 0.5).
        resolutions: threshold -> resolution in Å, marked by a vertical line in the threshold's style, labelled with
            the resolution where it meets the threshold.
        title: the first title line.
        headline: the curve that carries the result (e.g. "corrected"): drawn last, on top, thick and black; the
            others thin and coloured behind it. Default: the first curve.
        n_particles, pixel_size (Å), mask: written in the title's second line when given.
    """
    _save(fsc_figure(frequency_inv_angstrom, curves, **options), path)


def fsc_figure(
    frequency_inv_angstrom: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    thresholds: Sequence[float] = (0.143, 0.5),
    resolutions: Mapping[float, float] | None = None,
    title: str = "Fourier shell correlation",
    headline: str | None = None,
    n_particles: int | None = None,
    pixel_size: float | None = None,
    mask: str | None = None,
):
    """The matplotlib Figure :func:`fsc_plot` writes (its arguments are documented there)."""
    frequency = np.asarray(frequency_inv_angstrom, dtype=np.float64)
    if headline is None:
        headline = next(iter(curves))
    if headline not in curves:
        raise ValueError(f"headline curve {headline!r} is not among the curves {list(curves)}")
    figure = _figure(7.5, 5.0)
    axes = figure.add_subplot(1, 1, 1)
    colours = iter(_SECONDARY_COLOURS * 4)
    for label, values in curves.items():
        if label != headline:
            axes.plot(frequency, values, label=label, color=next(colours), linewidth=1.1, alpha=0.9, zorder=2)
    axes.plot(frequency, curves[headline], label=headline, color="black", linewidth=2.6, zorder=5)
    axes.axhline(0.0, color="black", linewidth=0.5, zorder=1)
    x_max = float(np.max(frequency)) if frequency.size else 1.0
    axes.set_xlim(0, x_max)
    axes.set_ylim(-0.2, 1.05)
    for threshold in thresholds:
        style = _THRESHOLD_STYLES.get(round(float(threshold), 3), _OTHER_THRESHOLD)
        axes.axhline(threshold, linewidth=1.2, zorder=3, **style)
        axes.text(0.01 * x_max, threshold + 0.015, f"FSC = {threshold:g}", color=style["color"], fontsize=8,
                  va="bottom", ha="left", zorder=6)
        angstrom = (resolutions or {}).get(threshold)
        if angstrom is not None and np.isfinite(angstrom) and angstrom > 0 and 1.0 / angstrom <= x_max:
            axes.axvline(1.0 / angstrom, linewidth=1.0, zorder=3, **style)
            axes.annotate(f"{angstrom:.1f} Å", xy=(1.0 / angstrom, threshold), xytext=(4, 6),
                          textcoords="offset points", color=style["color"], fontsize=9, fontweight="bold",
                          zorder=6)
    axes.set_xlabel("spatial frequency (1/Å)")
    axes.set_ylabel("FSC")
    details = []
    if n_particles is not None:
        details.append(f"N = {n_particles} particles")
    if pixel_size is not None:
        details.append(f"{pixel_size:g} Å/pixel")
    if mask is not None:
        details.append(f"mask: {mask}")
    axes.set_title(title + ("\n" + ", ".join(details) if details else ""), fontsize=10)
    _resolution_ticks_on_top(axes)
    axes.legend(fontsize=8, loc="upper right")
    return figure


def _resolution_ticks_on_top(axes) -> None:
    """A top axis labelled in Å (1/frequency) at the bottom axis's non-zero ticks."""
    low, high = axes.get_xlim()
    ticks = [t for t in axes.get_xticks() if low < t <= high]
    top = axes.twiny()
    top.set_xlim(low, high)
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (Å)")


def tick_positions(count: int, max_labels: int = 30) -> np.ndarray:
    """Which of ``count`` rows (or columns) get a labelled tick: all up to ``max_labels``, else every k-th with k
    a 1-2-5 step (so labels never overlap at any N), always starting from the first."""
    if count <= max_labels:
        return np.arange(count)
    steps = (b * 10**e for e in range(12) for b in (1, 2, 5))
    step = next(k for k in steps if -(-count // k) <= max_labels)
    return np.arange(0, count, step)


def heatmap_plot(path: str | os.PathLike, matrix: np.ndarray, **options) -> None:
    """A matrix as a heatmap, rows and columns reordered, with lines between groups (e.g. classes) and their names.

    Args (``options`` are :func:`heatmap_figure`'s keyword arguments):
        matrix: (R, C) values.
        row_order, column_order: permutations applied before drawing (default: as given).
        row_groups: (R,) group label of each row in the original order; lines are drawn where the label changes
            along the reordered rows (and columns, when the matrix is square), and each group's name is written beside
            its block (on the right, and on top for a square matrix).
        scale_ignores_diagonal: set the colour range from the off-diagonal values (a square score matrix's diagonal
            of 1s would otherwise flatten the rest).
        group_names: group label -> name (default "class <label>").
        column_labels: (C,) names of the columns in the original order (e.g. class references), written as ticks.

    Rows and columns keep their original 1-based indices as tick labels: all of them up to 30, beyond that every
    1st, 2nd, 5th, 10th, ... (thin ticks at every row), so labels stay readable at any N.
    """
    _save(heatmap_figure(matrix, **options), path)


def heatmap_figure(
    matrix: np.ndarray,
    *,
    row_order: np.ndarray | None = None,
    column_order: np.ndarray | None = None,
    row_groups: np.ndarray | None = None,
    title: str = "",
    colorbar_label: str = "score",
    xlabel: str = "particle",
    ylabel: str = "particle",
    scale_ignores_diagonal: bool = False,
    group_names: Mapping | None = None,
    column_labels: Sequence[str] | None = None,
):
    """The matplotlib Figure :func:`heatmap_plot` writes (its arguments are documented there)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = np.arange(matrix.shape[0]) if row_order is None else np.asarray(row_order)
    cols = np.arange(matrix.shape[1]) if column_order is None else np.asarray(column_order)
    square = matrix.shape[0] == matrix.shape[1]
    figure = _figure(7.0, 6.0)
    axes = figure.add_subplot(1, 1, 1)
    shown = matrix[np.ix_(rows, cols)]
    limits = {}
    if scale_ignores_diagonal and square and matrix.shape[0] > 1:
        off = matrix[~np.eye(matrix.shape[0], dtype=bool)]
        limits = dict(vmin=float(off.min()), vmax=float(off.max()))
    image = axes.imshow(shown, cmap="viridis", interpolation="nearest", aspect="auto", **limits)
    axis_labels = (
        (rows, axes.set_yticks, axes.set_yticklabels, None),
        (cols, axes.set_xticks, axes.set_xticklabels, column_labels),
    )
    for order, set_ticks, set_labels, names in axis_labels:
        if names is not None:
            set_ticks(np.arange(len(order)))
            set_labels([str(names[i]) for i in order], fontsize=8)
            continue
        labelled = tick_positions(len(order))
        set_ticks(np.arange(len(order)), minor=True)
        set_ticks(labelled)
        set_labels([str(order[i] + 1) for i in labelled], fontsize=7)
    axes.tick_params(which="minor", length=2, width=0.5)
    figure.colorbar(image, ax=axes, label=colorbar_label, pad=0.12 if row_groups is not None else 0.05)
    if row_groups is not None:
        groups = np.asarray(row_groups)[rows]
        edges = np.flatnonzero(groups[1:] != groups[:-1]) + 0.5
        for edge in edges:
            axes.axhline(edge, color="white", linewidth=1.2)
            if square:
                axes.axvline(edge, color="white", linewidth=1.2)
        bounds = np.concatenate([[-0.5], edges, [len(groups) - 0.5]])
        centres = (bounds[:-1] + bounds[1:]) / 2
        names = [_group_name(groups[int(np.ceil(lo + 0.5))], group_names) for lo in bounds[:-1]]
        right = axes.twinx()
        right.set_ylim(axes.get_ylim())
        right.set_yticks(centres)
        right.set_yticklabels(names, fontsize=8, fontweight="bold")
        right.tick_params(length=0)
        if square:
            top = axes.twiny()
            top.set_xlim(axes.get_xlim())
            top.set_xticks(centres)
            top.set_xticklabels(names, fontsize=8, fontweight="bold")
            top.tick_params(length=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def _group_name(label, names: Mapping | None) -> str:
    if names is not None and label in names:
        return str(names[label])
    return f"class {label}"


def scale_bar_length(width_angstrom: float) -> float:
    """A round length (1, 2 or 5 × 10^k Å) close to a quarter of ``width_angstrom``, for a scale bar."""
    if not width_angstrom > 0:
        raise ValueError(f"the image width must be positive, got {width_angstrom}")
    target = width_angstrom / 4
    exponent = np.floor(np.log10(target))
    candidates = [b * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for b in (1, 2, 5)]
    return float(min(candidates, key=lambda c: (abs(np.log(c / target)), c)))


def slice_montage(
    path: str | os.PathLike,
    volumes: Mapping[str, np.ndarray] | np.ndarray,
    *,
    title: str = "",
    voxel_size: float | None = None,
) -> None:
    """Central xy, xz and yz slices of one or more volumes, one row per volume, with a scale bar in Å.

    Args:
        volumes: an (N, N, N) array [z, y, x], or label -> array for several rows.
        voxel_size: Å per voxel; when given, every slice carries a scale bar (see :func:`scale_bar_length`).
    """
    _save(montage_figure(volumes, title=title, voxel_size=voxel_size), path)


def montage_figure(volumes: Mapping[str, np.ndarray] | np.ndarray, *, title: str = "",
                   voxel_size: float | None = None):
    """The matplotlib Figure :func:`slice_montage` writes (same arguments, no path)."""
    if not isinstance(volumes, Mapping):
        volumes = {"": volumes}
    figure = _figure(7.5, 2.6 * len(volumes) + 0.5)
    for row, (label, volume) in enumerate(volumes.items()):
        volume = np.asarray(volume, dtype=np.float32)
        cz, cy, cx = (s // 2 for s in volume.shape)
        slices = {
            "xy (z = centre)": volume[cz],
            "xz (y = centre)": volume[:, cy, :],
            "yz (x = centre)": volume[:, :, cx],
        }
        lo, hi = np.percentile(volume, [0.5, 99.5])
        for col, (name, image) in enumerate(slices.items()):
            axes = figure.add_subplot(len(volumes), 3, 3 * row + col + 1)
            axes.imshow(image, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(f"{label} {name}".strip(), fontsize=9)
            if voxel_size is not None:
                _scale_bar(axes, image.shape[1], voxel_size)
    if title:
        figure.suptitle(title + (f" ({voxel_size:g} Å/voxel)" if voxel_size is not None else ""))
    return figure


def _scale_bar(axes, width_voxels: int, voxel_size: float) -> None:
    """A white bar with a black edge and its length in Å, at the lower left of an image axes."""
    from matplotlib import patheffects

    length = scale_bar_length(width_voxels * voxel_size)
    pixels = length / voxel_size
    x0, y0 = 0.06 * width_voxels, 0.07 * width_voxels
    outline = [patheffects.withStroke(linewidth=4, foreground="black")]
    axes.plot([x0, x0 + pixels], [y0, y0], color="white", linewidth=2.5, solid_capstyle="butt",
              path_effects=outline, label="_scale_bar")
    axes.text(x0 + pixels / 2, y0 + 0.04 * width_voxels, f"{length:g} Å", color="white", ha="center", va="bottom",
              fontsize=8, fontweight="bold", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])


def loss_curve(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "loss",
    title: str = "",
    log_y: bool = False,
    reference: float | None = None,
    reference_label: str = "random rotation",
    watch: str | None = None,
) -> bool:
    """Line plot of one or more series against their epoch (1-based, whole-number ticks), e.g. training and
    validation loss or rotation error, with an optional reference line (e.g. the error of a random rotation).

    Args:
        series: label -> values per epoch.
        reference: a horizontal reference level drawn dashed and labelled with ``reference_label``; for a rotation
            error of a Haar-random guess, 2.40 (REFERENCE.md).
        watch: the series compared with ``reference`` (default: the last one, e.g. validation).

    Returns:
        True when ``reference`` is given and every value of the watched series stays above it (no better than the
        reference): the plot then carries a warning line, and the caller should log one.
    """
    figure, stays_above = loss_figure(series, xlabel=xlabel, ylabel=ylabel, title=title, log_y=log_y,
                                      reference=reference, reference_label=reference_label, watch=watch)
    _save(figure, path)
    return stays_above


def loss_figure(series: Mapping[str, Sequence[float]], *, xlabel: str = "epoch", ylabel: str = "loss",
                title: str = "", log_y: bool = False, reference: float | None = None,
                reference_label: str = "random rotation", watch: str | None = None):
    """(Figure, stays_above) as :func:`loss_curve` draws and returns them (same arguments, no path)."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(6.5, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        axes.plot(np.arange(1, len(values) + 1), values, label=label, marker="." if len(values) < 50 else None)
    longest = max((len(v) for v in series.values()), default=1)
    axes.set_xlim(0.5, max(longest, 1) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    stays_above = False
    if reference is not None:
        axes.axhline(reference, color="#c0392b", linestyle="--", linewidth=1.2,
                     label=f"{reference_label} ({reference:g})")
        watched = np.asarray(series[watch if watch is not None else list(series)[-1]], dtype=np.float64)
        watched = watched[np.isfinite(watched)]
        stays_above = bool(watched.size) and bool(np.all(watched >= reference))
        if stays_above:  # just above the axes, under the title: never on a curve or the legend
            axes.text(0.5, 1.015, f"warning: {watch or list(series)[-1]} never beats the {reference_label} line",
                      transform=axes.transAxes, ha="center", va="bottom", color="#c0392b", fontsize=9,
                      fontweight="bold")
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, pad=20 if stays_above else 6)
    if len(series) > 1 or reference is not None:
        axes.legend()
    return figure, stays_above
