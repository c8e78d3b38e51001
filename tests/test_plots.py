"""Plots a scientist can read (issue 17): the headline FSC curve on top and distinct, thresholds labelled, the title
naming N, pixel size and mask; montages with a scale bar in Å; heatmaps with class names and readable ticks at any N;
loss curves with whole-epoch ticks, a random-rotation line and a warning when validation never beats it.

Each test writes the PNG (it must exist and not be empty) and inspects the figure the function draws."""

import numpy as np
import pytest

from gumalign.plots import (
    fsc_figure,
    fsc_plot,
    heatmap_figure,
    heatmap_plot,
    loss_curve,
    loss_figure,
    montage_figure,
    scale_bar_length,
    slice_montage,
    tick_positions,
)


def _written(path):
    assert path.is_file() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def curves():
    shells = np.arange(1, 33)
    freq = shells / (64 * 4.0)
    corrected = 1 / (1 + np.exp((shells - 18) / 2.0))
    return freq, {
        "corrected": corrected,
        "unmasked": corrected * 0.9,
        "masked": corrected + 0.02,  # drawn after "corrected" in the dict: it used to hide it
        "phase-randomised masked": np.where(shells > 10, 0.0, corrected),
    }


def test_fsc_headline_on_top_thresholds_labelled_title_names_n_pixel_and_mask(tmp_path, curves):
    freq, series = curves
    kwargs = dict(thresholds=(0.143, 0.5), resolutions={0.143: 1 / freq[22], 0.5: 1 / freq[17]}, title="h1 vs h2",
                  headline="corrected", n_particles=120, pixel_size=4.0, mask="mask.mrc")
    fsc_plot(tmp_path / "fsc.png", freq, series, **kwargs)
    _written(tmp_path / "fsc.png")

    axes = fsc_figure(freq, series, **kwargs).axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    head = lines["corrected"]
    others = [lines[k] for k in ("unmasked", "masked", "phase-randomised masked")]
    assert all(head.get_zorder() > line.get_zorder() for line in others)
    assert all(head.get_linewidth() > 2 * line.get_linewidth() for line in others)
    assert head.get_color() not in {line.get_color() for line in others}
    texts = [t.get_text() for t in axes.texts]
    assert "FSC = 0.143" in texts and "FSC = 0.5" in texts
    assert f"{1 / freq[22]:.1f} Å" in texts and f"{1 / freq[17]:.1f} Å" in texts
    # The two threshold lines differ in colour and dash.
    horizontal = [line for line in axes.get_lines() if np.ptp(line.get_ydata()) == 0 and line.get_ydata()[0] > 0]
    assert len({(line.get_color(), line.get_linestyle()) for line in horizontal}) == 2
    title = axes.get_title()
    assert "N = 120 particles" in title and "4 Å/pixel" in title and "mask: mask.mrc" in title
    with pytest.raises(ValueError, match="headline"):
        fsc_figure(freq, series, headline="nope")


def test_montage_has_a_scale_bar_in_angstrom(tmp_path):
    volume = np.random.default_rng(0).standard_normal((48, 48, 48)).astype(np.float32)
    slice_montage(tmp_path / "m.png", {"full": volume, "half 1": volume}, title="avg.mrc", voxel_size=7.0)
    _written(tmp_path / "m.png")
    figure = montage_figure({"full": volume, "half 1": volume}, voxel_size=7.0)
    assert len(figure.axes) == 6
    for axes in figure.axes:
        bars = [line for line in axes.get_lines() if line.get_label() == "_scale_bar"]
        assert len(bars) == 1 and [t.get_text() for t in axes.texts] == ["100 Å"]
        assert np.ptp(bars[0].get_xdata()) == pytest.approx(100 / 7.0)  # 100 Å at 7 Å per voxel
    assert not montage_figure(volume).axes[0].texts  # no voxel size, no bar
    assert scale_bar_length(32 * 12.0) == 100 and scale_bar_length(128 * 4.0) == 100
    assert scale_bar_length(64 * 14.0) == 200 and scale_bar_length(10.0) == 2


@pytest.mark.parametrize("n", [12, 40, 150])
def test_heatmap_names_classes_and_keeps_ticks_readable(tmp_path, n):
    gen = np.random.default_rng(n)
    labels = np.repeat([1, 2, 3], int(np.ceil(n / 3)))[:n]
    gen.shuffle(labels)
    scores = gen.uniform(0, 1, size=(n, n))
    order = np.argsort(labels, kind="stable")
    heatmap_plot(tmp_path / "h.png", scores, row_order=order, column_order=order, row_groups=labels, title="t")
    _written(tmp_path / "h.png")
    figure = heatmap_figure(scores, row_order=order, column_order=order, row_groups=labels, title="t")
    axes = figure.axes[0]
    labelled = [t.get_text() for t in axes.get_yticklabels()]
    assert len(labelled) <= 30 and len(labelled) == (n if n <= 30 else len(tick_positions(n)))
    assert labelled[0] == str(order[0] + 1)
    if n > 30:  # a thin tick at every row (matplotlib drops the minor ones under a labelled tick)
        assert len(axes.get_yticks(minor=True)) + len(labelled) == n
    names = {t.get_text() for ax in figure.axes[1:] for t in ax.get_yticklabels() + ax.get_xticklabels()}
    assert {"class 1", "class 2", "class 3"} <= names
    assert len(tick_positions(40)) == 20 and len(tick_positions(1000)) == 20 and list(tick_positions(5)) == [0, 1, 2, 3, 4]


def test_heatmap_of_class_references_labels_its_columns(tmp_path):
    scores = np.random.default_rng(1).uniform(size=(20, 2))
    labels = np.argmax(scores, axis=1) + 1
    kwargs = dict(row_order=np.argsort(labels), column_order=np.arange(2), row_groups=labels,
                  column_labels=["class 1", "class 2"])
    heatmap_plot(tmp_path / "r.png", scores, **kwargs)
    _written(tmp_path / "r.png")
    axes = heatmap_figure(scores, **kwargs).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["class 1", "class 2"]


def test_loss_curve_whole_epochs_random_line_and_warning(tmp_path):
    train, val = [2.6, 2.5, 2.45, 2.42, 2.41], [2.7, 2.6, 2.55, 2.5, 2.45]
    warned = loss_curve(tmp_path / "loss.png", {"training": train, "validation": val}, ylabel="rotation error",
                        reference=2.40)
    _written(tmp_path / "loss.png")
    assert warned is True
    figure, stays = loss_figure({"training": train, "validation": val}, reference=2.40)
    axes = figure.axes[0]
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert any(line.get_label() == "random rotation (2.4)" for line in axes.get_lines())
    assert any("never beats the random rotation" in t.get_text() for t in axes.texts)
    # A model that gets below the line at some epoch is not warned about; the reference is optional.
    assert loss_curve(tmp_path / "ok.png", {"validation": [2.6, 1.2, 0.9]}, reference=2.40) is False
    assert loss_curve(tmp_path / "plain.png", {"loss": [1.0, 0.5]}) is False
    _written(tmp_path / "plain.png")


def test_training_history_is_drawn_by_loss_curve_without_pyplot(tmp_path):
    """gumalign train's loss.png: losses and the validation rotation error with the 2.40 line, and no pyplot or
    backend switch left behind in the process that drew it."""
    import subprocess
    import sys

    code = f"""
import sys
import matplotlib
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # raw: resolving it would import pyplot
from pathlib import Path
import gumalign.plots
from gumalign.train.loop import plot_history
drawn = []
real = gumalign.plots.loss_curve
gumalign.plots.loss_curve = lambda path, series, **kw: drawn.append((dict(series), kw)) or real(path, series, **kw)
history = [{{"epoch": e + 1, "train_loss": 0.9 - 0.1 * e,
            "val": {{"loss": 0.95 - 0.1 * e, "rotation_error": {{"mean": 2.5 - 0.4 * e}}}} if e != 1 else None}}
           for e in range(4)]
plot_history(history, Path({str(tmp_path / "loss.png")!r}))
plot_history([{{"epoch": 1, "train_loss": 0.8, "val": None}}], Path({str(tmp_path / "plain.png")!r}))
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend, "backend switched"
(series, options), (plain, plain_options) = drawn
assert list(series) == ["training loss", "validation loss", "validation rotation error"], list(series)
assert options["reference"] == 2.40 and options["watch"] == "validation rotation error"
assert list(plain) == ["training loss"] and plain_options.get("reference") is None
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    _written(tmp_path / "loss.png")
    _written(tmp_path / "plain.png")
