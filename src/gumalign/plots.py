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


def fsc_plot(
    path: str | os.PathLike,
    frequency_inv_angstrom: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    thresholds: Sequence[float] = (0.143, 0.5),
    resolutions: Mapping[float, float] | None = None,
    title: str = "Fourier shell correlation",
) -> None:
    """FSC curves against spatial frequency (1/Å), with horizontal threshold lines.

    Args:
        frequency_inv_angstrom: (S,) frequency of each shell in 1/Å.
        curves: label -> (S,) FSC values; the first is drawn boldest.
        thresholds: FSC values marked by dashed lines.
        resolutions: threshold -> resolution in Å, marked by a vertical line and written in the legend.
    """
    figure = _figure(7.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    for i, (label, values) in enumerate(curves.items()):
        axes.plot(frequency_inv_angstrom, values, label=label, linewidth=2.2 if i == 0 else 1.2)
    for threshold in thresholds:
        text = f"FSC = {threshold:g}"
        if resolutions and threshold in resolutions and np.isfinite(resolutions[threshold]):
            text += f": {resolutions[threshold]:.1f} Å"
            axes.axvline(1.0 / resolutions[threshold], color="grey", linestyle=":", linewidth=1)
        axes.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=text)
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_xlim(0, float(np.max(frequency_inv_angstrom)))
    axes.set_ylim(-0.2, 1.05)
    axes.set_xlabel("spatial frequency (1/Å)")
    axes.set_ylabel("FSC")
    axes.set_title(title)
    _resolution_ticks_on_top(axes)
    axes.legend(fontsize=8, loc="upper right")
    _save(figure, path)


def _resolution_ticks_on_top(axes) -> None:
    """A top axis labelled in Å (1/frequency) at the bottom axis's non-zero ticks."""
    low, high = axes.get_xlim()
    ticks = [t for t in axes.get_xticks() if low < t <= high]
    top = axes.twiny()
    top.set_xlim(low, high)
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (Å)")


def heatmap_plot(
    path: str | os.PathLike,
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
) -> None:
    """A matrix as a heatmap, rows and columns reordered, with lines between groups (e.g. classes).

    Args:
        matrix: (R, C) values.
        row_order, column_order: permutations applied before drawing (default: as given).
        row_groups: (R,) group label of each row in the original order; lines are drawn where the label changes
            along the reordered rows (and columns, when the matrix is square).
        scale_ignores_diagonal: set the colour range from the off-diagonal values (a square score matrix's diagonal
            of 1s would otherwise flatten the rest).

    Rows and columns are labelled with the original 1-based indices when there are at most 40 of them.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = np.arange(matrix.shape[0]) if row_order is None else np.asarray(row_order)
    cols = np.arange(matrix.shape[1]) if column_order is None else np.asarray(column_order)
    figure = _figure(6.5, 5.5)
    axes = figure.add_subplot(1, 1, 1)
    shown = matrix[np.ix_(rows, cols)]
    limits = {}
    if scale_ignores_diagonal and matrix.shape[0] == matrix.shape[1] and matrix.shape[0] > 1:
        off = matrix[~np.eye(matrix.shape[0], dtype=bool)]
        limits = dict(vmin=float(off.min()), vmax=float(off.max()))
    image = axes.imshow(shown, cmap="viridis", interpolation="nearest", aspect="auto", **limits)
    for positions, order, set_ticks, set_labels in (
        (rows, rows, axes.set_yticks, axes.set_yticklabels),
        (cols, cols, axes.set_xticks, axes.set_xticklabels),
    ):
        if len(positions) <= 40:
            set_ticks(np.arange(len(order)))
            set_labels([str(i + 1) for i in order], fontsize=7)
        else:
            set_ticks([])
    figure.colorbar(image, ax=axes, label=colorbar_label)
    if row_groups is not None:
        groups = np.asarray(row_groups)[rows]
        edges = np.flatnonzero(groups[1:] != groups[:-1]) + 0.5
        for edge in edges:
            axes.axhline(edge, color="white", linewidth=1)
            if matrix.shape[0] == matrix.shape[1]:
                axes.axvline(edge, color="white", linewidth=1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    _save(figure, path)


def slice_montage(
    path: str | os.PathLike,
    volumes: Mapping[str, np.ndarray] | np.ndarray,
    *,
    title: str = "",
) -> None:
    """Central xy, xz and yz slices of one or more volumes, one row per volume.

    Args:
        volumes: an (N, N, N) array [z, y, x], or label -> array for several rows.
    """
    if not isinstance(volumes, Mapping):
        volumes = {"": volumes}
    figure = _figure(7.5, 2.6 * len(volumes) + 0.4)
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
    if title:
        figure.suptitle(title)
    _save(figure, path)


def loss_curve(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "loss",
    title: str = "",
    log_y: bool = False,
) -> None:
    """Line plot of one or more series against their index (1-based), e.g. training and validation loss."""
    figure = _figure(6.5, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        axes.plot(np.arange(1, len(values) + 1), values, label=label, marker="." if len(values) < 50 else None)
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if len(series) > 1:
        axes.legend()
    _save(figure, path)
