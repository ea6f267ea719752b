"""Tables and figures of notebooks 04-07: the paper's numbers beside ours, accuracy against m and depth,
bars per loss (Tables 3-4), CMC and ROC curves and rank-1 against the number of distractors (Table 5, Fig. 7-8).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluation import MegaFaceResult


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


def plot_accuracy_vs(table: pd.DataFrame, x: str, metrics: Sequence[str], hue: str | None = None,
                     xlabel: str | None = None, log_x: bool = False) -> plt.Figure:
    """Accuracy (%) against ``x`` (m, depth), one panel per metric; points are seeds, lines their mean."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=table, x=x, y=metric, hue=hue, marker="o", errorbar=None, ax=ax)
        sns.scatterplot(data=table, x=x, y=metric, hue=hue, legend=False, alpha=0.5, ax=ax)
        ax.set(xlabel=xlabel or x, ylabel=f"{metric.upper()} accuracy (%)")
        if log_x:
            ax.set_xscale("log")
            ax.set_xticks(sorted(table[x].unique()), [str(v) for v in sorted(table[x].unique())])
    fig.tight_layout()
    return fig


def plot_accuracy_bars(table: pd.DataFrame, metrics: Sequence[str], labels: Mapping[str, str]) -> plt.Figure:
    """Bars of the mean accuracy (%) per row (loss), one panel per metric; black dots are the seeds."""
    data = table.assign(method=table["row"].map(lambda r: labels.get(r, r)))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 0.45 * data["method"].nunique() + 1.5),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(data=data, y="method", x=metric, errorbar=None, color="tab:blue", ax=ax)
        sns.stripplot(data=data, y="method", x=metric, color="black", size=4, ax=ax)
        low = float(data[metric].min())
        ax.set(xlabel=f"{metric.upper()} accuracy (%)", ylabel="", xlim=(max(0.0, low - 5), 100))
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
