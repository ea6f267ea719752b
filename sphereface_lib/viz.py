"""Figures of the notebooks: decision regions of Table 1 / Figure 2 and the m_min curves of Properties 2-3."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from . import theory

_CLASS_COLOURS = sns.color_palette("deep", 10)
_MARGIN_COLOUR = (0.85, 0.85, 0.85)


def decision_region_grid(
    weights: np.ndarray,
    rules: Sequence[tuple[str, theory.Rule, int]],
    grid_size: int,
    biases: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels of a ``grid_size`` x ``grid_size`` grid around the weights for each (title, rule, m).

    Returns the axis coordinates and {title: labels (grid_size, grid_size)}; :data:`theory.NEITHER` marks
    points no class claims (the margin).
    """
    if grid_size < 2:
        raise ValueError(f"decision_region_grid: grid_size must be >= 2, got {grid_size}")
    extent = 1.3 * float(np.linalg.norm(weights, axis=1).max())
    axis = np.linspace(-extent, extent, grid_size)
    xx, yy = np.meshgrid(axis, axis)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    labels = {
        title: theory.classify(points, weights, rule, m=m, biases=biases).reshape(grid_size, grid_size)
        for title, rule, m in rules
    }
    return axis, labels


def plot_decision_regions(axis: np.ndarray, labels: dict[str, np.ndarray], weights: np.ndarray) -> Figure:
    """One panel per rule: class regions in colour, the margin (no class wins) in grey, W_i as arrows."""
    num_classes = weights.shape[0]
    cmap = ListedColormap([_MARGIN_COLOUR, *_CLASS_COLOURS[:num_classes]])
    fig, axes = plt.subplots(1, len(labels), figsize=(3.0 * len(labels), 3.2), squeeze=False)
    for ax, (title, grid) in zip(axes[0], labels.items()):
        ax.pcolormesh(axis, axis, grid + 1, cmap=cmap, vmin=0, vmax=num_classes, shading="auto")
        for i, w in enumerate(weights):
            ax.annotate("", xy=w, xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=2, color="black"))
            ax.text(*(w + 0.12 * w / np.linalg.norm(w)), f"$W_{i + 1}$", ha="center", va="center")
        margin = float((grid == theory.NEITHER).mean())
        ax.set_title(f"{title}\nmargin area {margin:.0%}", fontsize=10, pad=8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_bound_curves(
    m_values: np.ndarray,
    curves: dict[str, np.ndarray],
    roots: dict[str, float],
) -> Figure:
    """max intra - min inter angular distance (degrees) against m, with each curve's root m_min marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    palette = sns.color_palette("deep", len(curves))
    for colour, (name, gap) in zip(palette, curves.items()):
        ax.plot(m_values, np.degrees(gap), label=name, color=colour)
        root = roots[name]
        ax.axvline(root, color=colour, ls="--", lw=1)
        ax.annotate(f"m_min = {root:.4f}", xy=(root, 0), xytext=(4, 8 + 14 * list(curves).index(name)),
                    textcoords="offset points", color=colour, fontsize=9)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("m")
    ax.set_ylabel("max intra - min inter (degrees)")
    ax.set_title("Criterion of Section 3.3: separated where the curve is <= 0")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig

