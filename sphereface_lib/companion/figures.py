"""The companion's figures: decision regions (Table 1 / Fig. 2), m_min curves (Properties 2-3), learned 2-D
features and angle histograms (Fig. 2), 3-D features on the unit sphere and pair-angle distributions (Fig. 5),
the paper's numbers beside ours, accuracy against m and depth, bars per loss (Tables 3-4), CMC and ROC curves
and rank-1 against the number of distractors (Table 5, Fig. 7-8)."""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from scipy import stats

from ..evaluation import MegaFaceResult
from . import statistics, theory

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
    """max intra - min inter angular distance (degrees) against m, with each curve's root m_min marked (a dashed
    line, its value in the legend: several curves share m_min = 3)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    palette = sns.color_palette("deep", len(curves))
    for colour, (name, gap) in zip(palette, curves.items()):
        ax.plot(m_values, np.degrees(gap), label=f"{name}: m_min = {roots[name]:.4f}", color=colour)
        ax.axvline(roots[name], color=colour, ls="--", lw=1)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("m")
    ax.set_ylabel("max intra - min inter (degrees)")
    ax.set_title("Criterion of Section 3.3: separated where the curve is <= 0")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def _class_colours(labels: np.ndarray) -> list:
    return sns.color_palette("deep", max(10, int(labels.max()) + 1)) if len(labels) else []


def plot_features_2d(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """One panel per head: 2-D features (N, 2) coloured by identity, class weight directions W_j as lines
    from the origin (Fig. 2 of the paper). ``panels``: {title: (features, labels, weights (C, 2))}."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, (features, labels, weights)) in zip(axes[0], panels.items()):
        colours = _class_colours(labels)
        reach = 1.1 * float(np.abs(features).max())
        for c in np.unique(labels):
            ax.scatter(*features[labels == c].T, s=6, color=colours[c], alpha=0.7, label=f"identity {c}")
            w = weights[c] / np.linalg.norm(weights[c]) * reach
            ax.plot([0, w[0]], [0, w[1]], color=colours[c], lw=1.6)
        ax.plot(0, 0, "k+", ms=8)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def angle_axis_limit(angles: np.ndarray, quantile: float = 0.99, step: float = 10.0) -> float:
    """Upper end (degrees) of an angle axis fitted to the data: ``quantile`` of ``angles`` rounded up to a
    multiple of ``step``, at most 180."""
    if angles.size == 0:
        return 180.0
    return float(min(180.0, max(step, step * np.ceil(np.quantile(angles, quantile) / step))))


def plot_own_angle_histograms(panels: dict[str, np.ndarray], bins: int = 36) -> Figure:
    """Histograms of theta_y (degrees), the angle between a feature and its own class weight, per head; the
    axis spans the data (:func:`angle_axis_limit` of all heads' angles) and says how many angles lie beyond it."""
    pooled = np.concatenate([np.asarray(theta, dtype=np.float64).ravel() for theta in panels.values()])
    upper = angle_axis_limit(pooled)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    edges = np.linspace(0.0, upper, bins + 1)
    for colour, (title, theta) in zip(sns.color_palette("deep", len(panels)), panels.items()):
        sns.histplot(theta, bins=edges, stat="density", element="step", fill=False, color=colour, label=title, ax=ax)
    beyond = int((pooled > upper).sum())
    label = "angle to own class weight theta_y (degrees)"
    if beyond:
        label += f"\n({beyond} of {pooled.size} angles beyond {upper:g}, up to {pooled.max():.0f} degrees, not drawn)"
    ax.set_xlabel(label)
    ax.set_xlim(0, upper)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_sphere_features(panels: dict[str, tuple[np.ndarray, np.ndarray]], columns: int) -> Figure:
    """3-D features projected on the unit sphere (Fig. 5 of the paper), one 3-D panel per title, coloured by
    identity (one legend for all panels, in a row under them), ``columns`` panels a row.
    ``panels``: {title: (features (N, 3), labels)}."""
    rows = -(-len(panels) // columns)
    fig = plt.figure(figsize=(3.4 * columns, 3.3 * rows + 0.4))
    u, v = np.mgrid[0:2 * np.pi:24j, 0:np.pi:12j]
    sphere = (np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v))
    handles = {}
    for k, (title, (features, labels)) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, columns, k + 1, projection="3d")
        ax.plot_wireframe(*sphere, color="0.85", lw=0.4)
        points = features / np.linalg.norm(features, axis=1, keepdims=True)
        colours = _class_colours(labels)
        for c in np.unique(labels):
            handles[int(c)] = ax.scatter(*points[labels == c].T, s=7, color=colours[c], depthshade=False)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
        ax.set_box_aspect((1, 1, 1), zoom=1.45)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10, y=1.03)
    fig.legend([handles[c] for c in sorted(handles)], [f"identity {c}" for c in sorted(handles)], loc="lower center",
               ncol=len(handles), fontsize=9, markerscale=2.5, frameon=False, handletextpad=0.1, columnspacing=1.2)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.4 / fig.get_figheight(), top=0.94, wspace=0.0, hspace=0.02)
    return fig


def plot_pair_angle_distributions(
    panels: dict[str, tuple[np.ndarray, np.ndarray]], marks: dict[str, tuple[float, float]], bins: int = 45,
) -> Figure:
    """Per panel, histograms of positive-pair and negative-pair angles (degrees) with the maximal intra-class
    and minimal inter-class angles of ``marks`` ({title: (max intra, min inter)}) as vertical lines."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False, sharey=True)
    edges = np.linspace(0.0, 180.0, bins + 1)
    pos_colour, neg_colour = sns.color_palette("deep", 2)
    for ax, (title, (pos, neg)) in zip(axes[0], panels.items()):
        sns.histplot(pos, bins=edges, stat="density", color=pos_colour, alpha=0.5, label="positive pairs", ax=ax)
        sns.histplot(neg, bins=edges, stat="density", color=neg_colour, alpha=0.5, label="negative pairs", ax=ax)
        intra, inter = marks[title]
        ax.axvline(intra, color=pos_colour, ls="--", lw=1.2)
        ax.axvline(inter, color=neg_colour, ls="--", lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pair angle (degrees)")
        ax.set_xlim(0, 180)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def paper_beside_ours(ours: pd.DataFrame, paper: Mapping[str, Mapping[str, float | None]],
                      labels: Mapping[str, str], decimals: int = 2) -> pd.DataFrame:
    """One table: for each row of ``ours`` (index = row names), the paper's values (typed from the paper,
    columns ``paper <metric>``) beside ours (``ours <metric>``, and the seed std when present), rounded."""
    lines = []
    for row, values in ours.iterrows():
        line: dict[str, object] = {"method": labels.get(row, row)}
        for metric, value in values.items():
            base = str(metric).removesuffix("_seed_std")
            if base == metric:
                typed = paper.get(row, {}).get(metric)
                line[f"paper {metric} (typed)"] = np.nan if typed is None else typed
                line[f"ours {metric}"] = value
            else:
                line[f"ours {base} seed std"] = value
        lines.append(line)
    return pd.DataFrame(lines).set_index("method").round(decimals)


def seed_intervals(table: pd.DataFrame, by: str | Sequence[str], metric: str,
                   confidence: float = statistics.CONFIDENCE) -> pd.DataFrame:
    """Per group of ``by`` (groups in order of appearance): the mean of ``metric`` over the group's lines (one per
    training seed), the number of seeds ``n`` and ``half``, the half-width of the two-sided t interval of that
    mean with n - 1 degrees of freedom (NaN for one seed: no interval)."""
    grouped = table.groupby(by, sort=False)[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    df = (grouped["n"] - 1).where(grouped["n"] > 1)
    grouped["half"] = stats.t.ppf(0.5 + confidence / 2, df) * grouped["std"] / np.sqrt(grouped["n"])
    return grouped.drop(columns="std").reset_index()


def _interval_label(n: Sequence[int]) -> str:
    """Legend text for the whiskers of :func:`seed_intervals` at the default confidence, means over ``n`` seeds."""
    counts = sorted(set(int(k) for k in n))
    if counts == [1]:
        return "one seed: no interval"
    seeds = " or ".join(map(str, counts))
    return (f"whiskers: {statistics.CONFIDENCE:.0%} t interval of the mean over {seeds} seeds"
            + (" (none for one seed)" if 1 in counts else ""))


def plot_accuracy_vs(table: pd.DataFrame, x: str, metrics: Sequence[str], hue: str | None = None,
                     xlabel: str | None = None, log_x: bool = False,
                     paper: Mapping[str, Mapping[float, float]] | None = None, baseline: float | None = None) -> Figure:
    """Accuracy (%) against ``x`` (m, depth), one panel per metric, ours and the paper's on one axis: faint points
    are seeds, lines their mean with whiskers of the 95% t interval over seeds (:func:`seed_intervals`);
    ``paper[metric][x]`` values are drawn as x marks. With ``baseline``, every value is the change from the
    value at ``x == baseline``: ours per seed (same seed and ``hue``), the paper's from its own value there."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 4.0), squeeze=False)
    values = sorted(table[x].unique())
    groups = [(None, table)] if hue is None else list(table.groupby(hue, sort=False))
    palette = sns.color_palette("deep", len(groups))
    for ax, metric in zip(axes[0], metrics):
        typed = dict((paper or {}).get(metric) or {})
        for colour, (name, lines) in zip(palette, groups):
            if baseline is not None:
                base = lines[lines[x] == baseline].set_index("seed")[metric]
                if base.empty:
                    raise ValueError(f"plot_accuracy_vs: baseline {x} = {baseline} has no lines"
                                     + ("" if name is None else f" for {hue} = {name}"))
                lines = lines.assign(**{metric: lines[metric] - lines["seed"].map(base)}).dropna(subset=[metric])
            points = seed_intervals(lines, x, metric).sort_values(x)
            label = "ours" if name is None else str(name)
            ax.scatter(lines[x], lines[metric], color=colour, alpha=0.35, s=18)
            ax.plot(points[x], points["mean"], color=colour, marker="o", label=f"{label}: mean of seeds")
            spread = points[points["half"].notna()]
            ax.errorbar(spread[x], spread["mean"], yerr=spread["half"], fmt="none", ecolor=colour, capsize=4)
        xs = [v for v in values if v in typed]
        if xs:
            reference = typed.get(baseline, np.nan) if baseline is not None else 0.0
            ax.plot(xs, [typed[v] - reference for v in xs], "kx--", lw=0.8, ms=8, label="paper (typed)")
        if baseline is not None:
            ax.axhline(0.0, color="black", lw=0.8)
        caption = _interval_label(table.groupby([hue, x] if hue else x)[metric].count())
        ax.plot([], [], " ", label=caption)
        unit = "accuracy (%)" if baseline is None else f"accuracy minus its {x} = {baseline:g} value (points)"
        ax.set(xlabel=xlabel or x, ylabel=f"{metric.upper()}-like {unit}")
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (labels[i].startswith("paper"), labels[i] == caption))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower center", ncol=len(handles),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.45 / fig.get_figheight(), 1.0, 1.0))
    return fig


def plot_accuracy_bars(table: pd.DataFrame, metrics: Sequence[str], labels: Mapping[str, str]) -> Figure:
    """Bars of the mean accuracy (%) over seeds per row (loss), one panel per metric; whiskers are the 95% t
    interval of that mean (:func:`seed_intervals`, none for one seed), black dots the seeds' own 10-fold mean
    accuracies; the axis spans the data, not 0-100."""
    data = table.assign(method=table["row"].map(lambda r: labels.get(r, r)))
    names = list(dict.fromkeys(data["method"]))
    dots = "dot: one seed (mean over the 10 folds)"
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 0.45 * len(names) + 2.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        bars = seed_intervals(data, "method", metric).set_index("method").loc[names]
        position = np.arange(len(names))
        ax.barh(position, bars["mean"], color="tab:blue", alpha=0.6, label="bar: mean over seeds")
        caption = _interval_label(bars["n"])
        spread = bars["half"].notna().to_numpy()
        if spread.any():
            ax.errorbar(bars["mean"][spread], position[spread], xerr=bars["half"][spread], fmt="none", ecolor="0.2",
                        capsize=4, label=caption)
        else:
            ax.plot([], [], " ", label=caption)
        row_of = data["method"].map({name: i for i, name in enumerate(names)}).to_numpy()
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(data))
        ax.scatter(data[metric], row_of + jitter, color="black", s=12, zorder=3, label=dots)
        ax.set_yticks(position, names)
        ax.invert_yaxis()
        low = float(np.nanmin([data[metric].min(), (bars["mean"] - bars["half"]).min()]))
        high = float(np.nanmax([data[metric].max(), (bars["mean"] + bars["half"]).max()]))
        ax.set(xlabel=f"{metric.upper()}-like accuracy (%)", ylabel="", xlim=(max(0.0, low - 2), min(100.0, high + 1)))
        ax.grid(axis="x", alpha=0.3)
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    order = [legend_labels.index(label) for label in ("bar: mean over seeds", caption, dots)]
    fig.legend([handles[i] for i in order], [legend_labels[i] for i in order], loc="lower center", ncol=len(order),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.45 / fig.get_figheight(), 1.0, 1.0))
    return fig


_OUTCOME_COLOURS = {"reproduced": "tab:green", "inconclusive": "tab:grey", "contradicted": "tab:red"}


def plot_effects(effects: Mapping[str, object], paper: Mapping[str, float] | None = None,
                 xlabel: str = "effect (accuracy points)", title: str = "", paper_label: str = "paper") -> Figure:
    """Each claim's effect with its interval (``companion.statistics.Estimate``), coloured by its verdict (the
    estimate's ``verdict`` where it has one, e.g. "not tested: one run", else its ``outcome``; any beyond the three
    outcomes in purple), with the paper's effect as an x mark (labelled ``paper_label``) where ``paper`` gives
    one; 0 is the line a claim must clear. The legend sits right of the axes, over nothing."""
    names = list(effects)
    fig, ax = plt.subplots(figsize=(9.0, 0.45 * len(names) + 1.4))
    for i, name in enumerate(names):
        e = effects[name]
        verdict = getattr(e, "verdict", e.outcome)
        ax.errorbar(e.effect, i, xerr=[[e.effect - e.low], [e.high - e.effect]], fmt="o", capsize=4,
                    color=_OUTCOME_COLOURS.get(verdict, "tab:purple"), label=verdict)
        if paper and name in paper:
            ax.plot(paper[name], i, "kx", ms=8, label=paper_label)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(textwrap.fill(title, 62), fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_megaface(results: Mapping[str, Mapping[int, MegaFaceResult]], labels: Mapping[str, str]) -> plt.Figure:
    """Three panels per model: CMC at the largest distractor count, ROC (TAR against FAR, log FAR) at that
    count, and rank-1 identification rate against the number of distractors (log)."""
    fig, (cmc_ax, roc_ax, d_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for row, by_count in results.items():
        name = labels.get(row, row)
        largest = by_count[max(by_count)]
        ranks = np.arange(1, len(largest.cmc) + 1)
        cmc_ax.plot(ranks, 100 * largest.cmc, marker="o", label=name)
        keep = largest.roc_far > 0
        roc_ax.plot(largest.roc_far[keep], 100 * largest.roc_tar[keep], label=name)
        counts = sorted(by_count)
        d_ax.plot(counts, [100 * by_count[d].rank1 for d in counts], marker="o", label=name)
    d = max(next(iter(results.values())))
    cmc_ax.set(xlabel="rank", ylabel="identification rate (%)", title=f"CMC, {d:,} distractors")
    roc_ax.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate (%)", title=f"ROC, {d:,} distractors")
    d_ax.set(xscale="log", xlabel="number of distractors", ylabel="rank-1 identification (%)",
             title="rank-1 against distractors")
    for ax in (cmc_ax, roc_ax, d_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
