"""Readable log axes for parameters, FLOPs, latency and other sizes.

Matplotlib's log axis labels only the decades (10^4, 10^5) over a wide range, and over a range
narrower than a decade it labels minor ticks as well (9.5x10^3, 9.75x10^3, 10^4, 1.025x10^4...),
which run into each other. ``log_axis`` sets a log scale with a few labelled ticks instead:

* a range of a decade or more: the decades, with 2 and 5 between them while that still fits
  (1k 2k 5k 10k ...), every second or third decade over many decades;
* a narrower range: a handful of round values (100k 105k 110k ...), as on a linear axis.

Labels are plain numbers from 0.001 to 1000, engineering suffixes above (10.5k, 1.2M, 3G) and
a short exponent below (3e-7); minor ticks carry no labels. Among these choices the densest one whose labels do not overlap
(measured with the figure's renderer, with a gap between neighbours) is kept.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
MIN_GAP_PX = 6  # blank pixels kept between neighbouring labels


def eng_label(x: float, _pos: Any = None) -> str:
    """105000 -> '105k', 2e6 -> '2M', 10250 -> '10.25k', 250 -> '250', 0.003 -> '0.003',
    3e-7 -> '3e-7'."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    for scale, suffix in _SUFFIXES:
        if abs(x) >= scale:
            return f"{x / scale:.6g}{suffix}"
    if abs(x) < 1e-3:
        mantissa, _, exponent = f"{x:.6e}".partition("e")
        return f"{float(mantissa):.6g}e{int(exponent)}"
    return f"{x:.6g}"


def _locators(lo: float, hi: float) -> Iterator[Any]:
    """Major tick locators for the view ``lo``..``hi``, densest first."""
    from matplotlib import ticker

    if hi / lo >= 10:
        yield ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30)
        yield ticker.LogLocator(base=10, subs=(1.0, 3.0), numticks=30)
        for most in (8, 5, 3):  # every decade, or every n-th when there are many
            yield ticker.LogLocator(base=10, numticks=most)
    else:
        for bins in (6, 5, 4, 3, 2, 1):
            yield ticker.MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10])


def tick_label_boxes(axis: Any) -> list[Any]:
    """Window extents of the labelled ticks of ``axis`` inside its view (after a draw)."""
    lo, hi = sorted(axis.get_view_interval())
    renderer = axis.figure.canvas.get_renderer()
    boxes = []
    for which in ("major", "minor"):
        locs = axis.get_majorticklocs() if which == "major" else axis.get_minorticklocs()
        labels = axis.get_ticklabels(which=which)
        for loc, label in zip(locs, labels):
            if lo <= loc <= hi and label.get_visible() and label.get_text():
                boxes.append(label.get_window_extent(renderer))
    return boxes


def labels_overlap(axis: Any, gap: float = 0.0) -> bool:
    """Whether any two labelled ticks of ``axis`` come closer than ``gap`` pixels."""
    horizontal = axis.axis_name == "x"
    spans = sorted((b.x0, b.x1) if horizontal else (b.y0, b.y1) for b in tick_label_boxes(axis))
    return any(b0 < a1 + gap for (_, a1), (b0, _) in zip(spans, spans[1:]))


def log_axis(ax: Any, axis: str = "x") -> None:
    """Put ``ax``'s ``axis`` ("x" or "y") on a log scale with readable tick labels.

    Call it after the data are drawn (the view limits pick the ticks).
    """
    from matplotlib import ticker

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    lo, hi = sorted(target.get_view_interval())
    if not (lo > 0 and math.isfinite(hi) and hi > lo):
        return
    wide = hi / lo >= 10
    target.set_major_formatter(ticker.FuncFormatter(eng_label))
    target.set_minor_formatter(ticker.NullFormatter())
    target.set_minor_locator(ticker.LogLocator(base=10, subs="auto", numticks=30) if wide
                             else ticker.NullLocator())
    for locator in _locators(lo, hi):
        target.set_major_locator(locator)
        ax.figure.canvas.draw()
        if not labels_overlap(target, MIN_GAP_PX):
            return


__all__ = ["eng_label", "labels_overlap", "log_axis", "tick_label_boxes"]
