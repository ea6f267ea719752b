"""The figures a reader checks at a glance: axes fitted to the data, ours and the paper's on one axis, whiskers that
are the stated interval and say so, legends that cover nothing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from sphereface_lib.companion import figures  # noqa: E402
from sphereface_lib.companion import statistics as S  # noqa: E402

PAPER = {"lfw": {1: 97.90, 2: 98.40, 3: 99.25, 4: 99.42}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _m_table(seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"row": f"asoftmax_m{m}", "seed": s, "m": m, "lfw": 90 + m + rng.normal(0, 0.5)}
                         for m in (1, 2, 3, 4) for s in range(seeds)])


def _line(ax: plt.Axes, label: str) -> np.ndarray:
    return np.asarray(next(line for line in ax.lines if line.get_label() == label).get_ydata(), dtype=np.float64)


def test_the_angle_histogram_spans_the_data_and_counts_what_it_leaves_out() -> None:
    theta = np.random.default_rng(0).uniform(0.0, 38.0, 600)
    ax = figures.plot_own_angle_histograms({"a": theta, "b": theta[:300]}).axes[0]
    assert ax.get_xlim() == (0.0, 40.0)
    with_outlier = figures.plot_own_angle_histograms({"a": np.append(theta, 147.0)}).axes[0]
    assert with_outlier.get_xlim()[1] == 40.0
    assert "1 of 601 angles beyond 40, up to 147 degrees, not drawn" in with_outlier.get_xlabel()
    assert figures.angle_axis_limit(np.array([170.0, 179.0])) == 180.0


def test_seed_intervals_are_t_intervals_of_the_mean_over_seeds() -> None:
    table = _m_table()
    got = figures.seed_intervals(table, "m", "lfw").set_index("m")
    for m, lines in table.groupby("m"):
        low, high = stats.t.interval(0.95, len(lines) - 1, loc=lines["lfw"].mean(), scale=stats.sem(lines["lfw"]))
        assert got.loc[m, "mean"] - got.loc[m, "half"] == pytest.approx(low)
        assert got.loc[m, "mean"] + got.loc[m, "half"] == pytest.approx(high)
        assert got.loc[m, "n"] == 3
    assert figures.seed_intervals(_m_table(seeds=1), "m", "lfw")["half"].isna().all()


def test_ours_and_the_paper_share_one_axis_as_changes_from_a_common_baseline() -> None:
    table = _m_table()
    fig = figures.plot_accuracy_vs(table, "m", ["lfw"], paper=PAPER, baseline=1)
    assert len(fig.axes) == 1, "one y-axis per metric: no second axis with its own scale"
    ax = fig.axes[0]
    per_seed = table.pivot(index="seed", columns="m", values="lfw")
    np.testing.assert_allclose(_line(ax, "ours: mean of seeds"), (per_seed.sub(per_seed[1], axis=0)).mean().to_numpy())
    np.testing.assert_allclose(_line(ax, "paper (typed)"), [0.0, 0.50, 1.35, 1.52], atol=1e-9)
    assert "minus its m = 1 value" in ax.get_ylabel()
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "95% t interval of the mean over 3 seeds" in legend
    with pytest.raises(ValueError, match="baseline m = 7"):
        figures.plot_accuracy_vs(table, "m", ["lfw"], baseline=7)


def test_without_a_baseline_the_levels_are_drawn_as_they_are() -> None:
    table = _m_table()
    ax = figures.plot_accuracy_vs(table, "m", ["lfw"], paper=PAPER).axes[0]
    np.testing.assert_allclose(_line(ax, "ours: mean of seeds"), table.groupby("m")["lfw"].mean().to_numpy())
    np.testing.assert_allclose(_line(ax, "paper (typed)"), list(PAPER["lfw"].values()))
    elsewhere = figures.plot_accuracy_vs(table, "m", ["lfw"], paper={"lfw": {64: 99.42}})  # no m = 64 drawn
    assert "paper (typed)" not in [t.get_text() for t in elsewhere.legends[0].get_texts()]


def test_bar_whiskers_are_the_stated_interval_and_one_seed_has_none() -> None:
    table = pd.concat([_m_table().query("m in (1, 4)"), pd.DataFrame([{"row": "cosface", "seed": 0, "lfw": 93.0}])])
    fig = figures.plot_accuracy_bars(table, ["lfw"], {})
    ax = fig.axes[0]
    (whiskers,) = [c for c in ax.collections if c.get_label() != "dot: one seed (mean over the 10 folds)"
                   and len(c.get_segments()) and c.get_segments()[0][0][1] == c.get_segments()[0][1][1]]
    ends = np.array(sorted((s[0][0], s[1][0]) for s in whiskers.get_segments()))
    expected = figures.seed_intervals(table, "row", "lfw").dropna()
    assert len(expected) == 2  # the one-seed row draws no whisker
    low, high = expected["mean"] - expected["half"], expected["mean"] + expected["half"]
    np.testing.assert_allclose(ends, sorted(zip(low, high)))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "whiskers: 95% t interval of the mean over 1 or 3 seeds (none for one seed)" in legend
    assert "bar: mean over seeds" in legend


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_forest_plot_legend_covers_nothing_and_takes_any_outcome() -> None:
    estimates = {f"claim {i}": S.Estimate(effect=0.1 * i, low=0.1 * i - 0.3, high=0.1 * i + 0.3, confidence=0.95,
                                          method="t", n=30) for i in range(-3, 4)}
    fig = figures.plot_effects(estimates, {"claim 0": 1.0}, title="a title", paper_label="paper (Table 3)")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert not _overlaps(legend.get_window_extent(), ax.get_window_extent())
    shown = {t.get_text() for t in legend.get_texts()}
    assert shown == {"contradicted", "inconclusive", "reproduced", "paper (Table 3)"}
    assert legend.get_window_extent().x1 <= fig.bbox.x1 + 1

    class OneRun:  # an interval above 0 from one training run: its verdict is no verdict
        effect, low, high, outcome, verdict = 0.4, 0.1, 0.7, "reproduced", "not tested: one run"

    untested = figures.plot_effects({"claim": OneRun()}).axes[0].get_legend()
    assert [t.get_text() for t in untested.get_texts()] == ["not tested: one run"]


def test_the_sphere_legend_sits_under_the_panels() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    panels = {f"m={m}": (rng.normal(size=(120, 3)), labels) for m in (1, 2, 3, 4)}
    fig = figures.plot_sphere_features(panels, columns=4)
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.y1 <= min(ax.get_window_extent().y0 for ax in fig.axes) + 5
    assert abs((legend.x0 + legend.x1) / 2 - fig.bbox.width / 2) < 0.05 * fig.bbox.width
    assert all(ax.get_position().width > 0.2 for ax in fig.axes)  # four panels fill the width, no legend column
