"""Log x-axes of front plots (parameters, FLOPs, latency): labelled ticks never overlap, over a
range narrower than a decade as over many decades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasforge.core import Objectives
from nasforge.report.axes import eng_label
from nasforge.report.front import plot_front


def _rows(lo: float, hi: float, metric: str = "params", n: int = 30) -> list[dict]:
    xs = np.geomspace(lo, hi, n)
    return [{"id": i, "arch": f"a{i}", "status": "ok",
             "metrics": {"val_acc": 0.5 + 0.4 * i / n}, "cost": {metric: float(x)}}
            for i, x in enumerate(xs)]


def _labelled(fig, ax) -> list[tuple[str, tuple[float, float]]]:
    """(text, (x0, x1) in pixels) of each labelled x tick inside the view, left to right."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = ax.get_xlim()
    out = []
    for which in ("major", "minor"):
        locs = ax.xaxis.get_majorticklocs() if which == "major" else ax.xaxis.get_minorticklocs()
        for loc, label in zip(locs, ax.xaxis.get_ticklabels(which=which)):
            if lo <= loc <= hi and label.get_visible() and label.get_text():
                box = label.get_window_extent(renderer)
                out.append((label.get_text(), (box.x0, box.x1)))
    return sorted(out, key=lambda t: t[1][0])


@pytest.fixture
def front_figure(monkeypatch, tmp_path):
    """Draw with plot_front, keep the figure it would close, save the PNG for a look."""
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))

    def draw(rows, name, objectives=("max:val_acc", "min:params")):
        path = tmp_path / f"{name}.png"
        plot_front(rows, Objectives.of(list(objectives)), path)
        assert path.stat().st_size > 0
        fig = kept[-1]
        return fig, fig.axes[0]
    return draw


@pytest.mark.parametrize("lo, hi, metric", [
    (100_000, 130_000, "params"),  # 1.3x
    (9_500, 11_500, "params"),  # 1.2x across a decade: matplotlib labels 9.5x10^3, 9.75x10^3, ...
    (1_000, 1_000_000, "params"),  # 1000x
    (2e-3, 2.6e-3, "latency_ms"),  # below 1: plain numbers
    (3e5, 3e12, "flops"),  # many decades
])
def test_front_plot_log_axis_labels_do_not_overlap(front_figure, lo, hi, metric):
    fig, ax = front_figure(_rows(lo, hi, metric), f"front_{metric}_{hi / lo:g}",
                           objectives=("max:val_acc", f"min:{metric}"))
    assert ax.get_xscale() == "log"
    labels = _labelled(fig, ax)
    assert len(labels) >= 2, labels  # a value can be read off the axis
    for (text_a, (_, a1)), (text_b, (b0, _)) in zip(labels, labels[1:]):
        assert b0 > a1, f"{text_a!r} and {text_b!r} overlap: {labels}"
    assert not any("10^" in t or "times" in t for t, _ in labels)  # plain / engineering labels
    assert len(labels) <= 12


def test_narrow_range_gets_round_values_and_wide_range_decades(front_figure):
    fig, ax = front_figure(_rows(100_000, 130_000), "narrow")
    texts = [t for t, _ in _labelled(fig, ax)]
    assert texts and all(t.endswith("k") for t in texts)
    values = [float(t[:-1]) for t in texts]
    assert values == sorted(values) and all(v % 5 == 0 for v in values), texts
    fig, ax = front_figure(_rows(1_000, 1_000_000), "wide")
    texts = [t for t, _ in _labelled(fig, ax)]
    assert {"1k", "10k", "100k", "1M"} <= set(texts), texts


def test_eng_label():
    assert [eng_label(x) for x in (105_000, 2e6, 10_250, 3e9, 0.003, 250, 1e12, 0, 1e-8, 2.5e-5)] \
        == ["105k", "2M", "10.25k", "3G", "0.003", "250", "1T", "0", "1e-8", "2.5e-5"]
    assert eng_label(math.inf) == "inf"
