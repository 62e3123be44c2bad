"""Plots of a differentiable search: α per edge over the epochs, and derived cells as graphs.

- ``plot_alpha_history``: one figure per cell type, one small panel per edge ``(node <- input)``,
  the softmax weight of every operation against the epoch (a shared legend).
- ``plot_genotype``: the normal and reduction cells of a genotype drawn as DARTS draws them:
  the inputs ``c_{k-2}``, ``c_{k-1}``, the intermediate nodes, the output ``c_{k}``, and one
  labelled arrow per edge (operation name). Drawn from the genotype itself, so nodes with any
  number of edges (the argmax derivation) and zero nodes (a single ``none`` edge) show as they are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..spaces.darts import Genotype


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_alpha_history(history: Sequence[dict[str, Any]], op_names: Sequence[str],
                       edges: Sequence[tuple[int, int]], path_prefix: Path, title: str = "") -> list[Path]:
    """``{prefix}_normal.png`` and ``{prefix}_reduce.png``: softmax(α) of each edge per epoch.

    ``history``: one entry per epoch with ``epoch`` and the softmax weights ``normal`` /
    ``reduce`` (``[E][K]`` lists). Returns the files written (none without history).
    """
    if not history:
        return []
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    cols = 5 if len(edges) > 9 else 3
    rows = math.ceil(len(edges) / cols)
    out = []
    colors = plt.get_cmap("tab10")
    for cell in ("normal", "reduce"):
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), sharex=True,
                                 sharey=True, squeeze=False)
        for e, (node, src) in enumerate(edges):
            ax = axes[e // cols][e % cols]
            for k, name in enumerate(op_names):
                ax.plot(epochs, [h[cell][e][k] for h in history], color=colors(k % 10),
                        linestyle="-" if k < 10 else "--", linewidth=1.2,
                        marker="." if len(epochs) < 12 else None, label=name)
            ax.set_title(f"node {node} <- {src}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_ylim(0, 1)
        for e in range(len(edges), rows * cols):
            axes[e // cols][e % cols].axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(op_names), 4), fontsize=7)
        fig.suptitle(f"{title}{' ' if title else ''}{cell} cell: softmax(alpha) per edge "
                     "against epoch", fontsize=9)
        fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.5 / (1.9 * rows), hspace=0.45,
                            wspace=0.12, bottom=(0.25 + 0.18 * math.ceil(len(op_names) / 4)) / (1.9 * rows))
        path = Path(f"{path_prefix}_{cell}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


def plot_genotype(geno: Genotype, path: Path, title: str = "") -> Path:
    """Both cells of ``geno`` side by side, as graphs with labelled edges."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for ax, reduction in zip(axes, (False, True)):
        nodes, concat = geno.cell(reduction)
        n = len(nodes)
        pos = {0: (0.0, 0.8), 1: (0.0, 0.2)}
        for j in range(n):
            pos[j + 2] = (1.3 * (1 + j), (0.95, 0.05, 0.7, 0.3)[j % 4])
        pos[-1] = (1.3 * (n + 1), 0.5)
        labels = {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_{k}", **{j + 2: str(j + 2) for j in range(n)}}
        for j, edges in enumerate(nodes):
            for slot, (op, src) in enumerate(edges):
                (x0, y0), (x1, y1) = pos[src], pos[j + 2]
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                            arrowprops=dict(arrowstyle="->", color="0.65" if op == "none" else "0.25",
                                            linestyle="dotted" if op == "none" else "solid",
                                            shrinkA=14, shrinkB=14,
                                            connectionstyle="arc3,rad=0.12"))
                t = (0.42, 0.58, 0.72)[(slot + src) % 3]
                angle = math.degrees(math.atan2((y1 - y0) * 4.6 / 1.0, (x1 - x0) * 6.5 / (1.3 * (n + 1.5))))
                if angle > 90 or angle < -90:
                    angle += 180
                ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), op, fontsize=7, ha="center",
                        va="center", color="darkred" if op != "none" else "0.5", rotation=angle,
                        rotation_mode="anchor",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
        for k in concat:
            (x0, y0), (x1, y1) = pos[k], pos[-1]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="->", color="0.75", shrinkA=14, shrinkB=14))
        for key, (x, y) in pos.items():
            color = "lightblue" if key in (0, 1) else ("palegreen" if key == -1 else "khaki")
            ax.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="0.3"))
        ax.set_xlim(-0.4, 1.3 * (n + 1) + 0.4)
        ax.set_ylim(-0.05, 1.05)
        ax.axis("off")
        ax.set_title("reduction cell" if reduction else "normal cell", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.02, wspace=0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["plot_alpha_history", "plot_genotype"]
