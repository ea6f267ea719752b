"""The statistics behind every claim (sphereface_lib.companion.statistics), against textbook results and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sphereface_lib.companion import statistics as st


def _estimate(effect: float, half: float, df: float | None = None) -> st.Estimate:
    return st.Estimate(effect, effect - half, effect + half, st.CONFIDENCE, "test", 10, df=df)


def test_outcome_and_describe() -> None:
    assert _estimate(1.0, 0.5).outcome == "reproduced"
    assert _estimate(-1.0, 0.5).outcome == "contradicted"
    assert _estimate(0.2, 0.5).outcome == "inconclusive"
    assert _estimate(0.5, 0.5).outcome == "inconclusive"  # an interval touching 0 contains it
    assert set(st.OUTCOMES) == {"reproduced", "inconclusive", "contradicted"}
    line = st.Estimate(1.234, 0.4, 2.06, 0.95, "fold-paired t, 10 folds, df 9", 10).describe()
    assert line == "+1.23 pts [+0.40, +2.06], 95% CI, fold-paired t, 10 folds, df 9"


def test_one_seed_is_the_fold_paired_t_of_scipy() -> None:
    rng = np.random.default_rng(0)
    a = 98.0 + rng.normal(0.0, 0.6, size=(1, 10))
    b = a - 0.3 + rng.normal(0.0, 0.4, size=(1, 10))
    estimate = st.paired_difference(a, b)
    reference = stats.ttest_rel(a[0], b[0]).confidence_interval(0.95)
    assert estimate.effect == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert (estimate.low, estimate.high) == pytest.approx((reference.low, reference.high), abs=1e-10)
    assert estimate.df == 9 and estimate.n == 10 and "fold-paired t" in estimate.method


def test_one_fold_is_the_t_over_seeds() -> None:
    d = np.array([[0.4], [1.1], [-0.2], [0.9]])
    estimate = st.paired_difference(d, np.zeros_like(d))
    reference = stats.ttest_1samp(d[:, 0], 0.0).confidence_interval(0.95)
    assert (estimate.low, estimate.high) == pytest.approx((reference.low, reference.high), abs=1e-10)
    assert estimate.df == 3


HAND_TABLE = np.array([[1.0, 3.0, 2.0, 6.0],
                       [2.0, 5.0, 2.5, 7.0],
                       [0.0, 4.0, 4.0, 8.0]])


def _mean_squares_by_loops(d: np.ndarray) -> tuple[float, float, float]:
    rows, cols = len(d), len(d[0])
    grand = sum(d[i][j] for i in range(rows) for j in range(cols)) / (rows * cols)
    row_mean = [sum(d[i][j] for j in range(cols)) / cols for i in range(rows)]
    col_mean = [sum(d[i][j] for i in range(rows)) / rows for j in range(cols)]
    ss_row = sum(cols * (row_mean[i] - grand) ** 2 for i in range(rows))
    ss_col = sum(rows * (col_mean[j] - grand) ** 2 for j in range(cols))
    ss_total = sum((d[i][j] - grand) ** 2 for i in range(rows) for j in range(cols))
    ss_resid = ss_total - ss_row - ss_col  # the ANOVA identity, independent of the residual formula
    return ss_row / (rows - 1), ss_col / (cols - 1), ss_resid / ((rows - 1) * (cols - 1))


def test_crossed_mean_squares_and_cochran_cox_on_a_hand_worked_table() -> None:
    ms_seed, ms_fold, ms_resid = _mean_squares_by_loops(HAND_TABLE.tolist())
    anova = st.crossed_anova(HAND_TABLE)
    assert (anova.ms_seed, anova.ms_fold, anova.ms_resid) == pytest.approx((ms_seed, ms_fold, ms_resid), rel=1e-12)
    assert (anova.df_seed, anova.df_fold, anova.df_resid) == (2, 3, 6)

    combined = ms_seed + ms_fold - ms_resid
    assert combined > ms_resid  # this table is not floored
    # Cochran-Cox: the t critical values of MS_seed's 2 df and MS_fold's 3 df, weighted by the mean squares
    critical = (ms_seed * stats.t.ppf(0.975, 2) + ms_fold * stats.t.ppf(0.975, 3)) / (ms_seed + ms_fold)
    half = critical * math.sqrt(combined / 12)
    estimate = st.paired_difference(HAND_TABLE, np.zeros_like(HAND_TABLE))
    assert stats.t.ppf(0.975, estimate.effective_df) == pytest.approx(critical, rel=1e-9)
    assert (estimate.low, estimate.high) == pytest.approx((HAND_TABLE.mean() - half, HAND_TABLE.mean() + half))
    assert estimate.n == 12 and "Cochran-Cox" in estimate.method
    satterthwaite = combined**2 / (ms_seed**2 / 2 + ms_fold**2 / 3 + ms_resid**2 / 6)
    assert estimate.effective_df < satterthwaite  # the conservative side


def test_crossed_variance_is_floored_at_the_residual() -> None:
    d = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]) + 2.0  # seed and fold means equal: MS_seed = MS_fold = 0
    anova = st.crossed_anova(d)
    assert anova.ms_seed == pytest.approx(0.0, abs=1e-12) and anova.ms_fold == pytest.approx(0.0, abs=1e-12)
    estimate = st.crossed_mean(d)
    half = stats.t.ppf(0.975, 2) * math.sqrt(anova.ms_resid / 6)
    assert estimate.df == 2 and estimate.high - estimate.effect == pytest.approx(half)
    assert "floored" in estimate.method


def test_crossed_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(20170417)
    seeds, folds, designs = 3, 10, 1000
    covered = 0
    for _ in range(designs):
        d = (rng.normal(0.0, 1.0, size=(seeds, 1)) + rng.normal(0.0, 1.0, size=(1, folds))
             + rng.normal(0.0, 1.0, size=(seeds, folds)))
        estimate = st.paired_difference(d + 97.0, np.full_like(d, 97.0))
        covered += estimate.low <= 0.0 <= estimate.high
    assert 0.92 <= covered / designs <= 0.98


def test_estimate_at_another_level_equals_computing_at_it() -> None:
    direct = st.crossed_mean(HAND_TABLE, confidence=0.99)
    rescaled = st.crossed_mean(HAND_TABLE).at(0.99)
    assert (rescaled.low, rescaled.high, rescaled.confidence) == pytest.approx((direct.low, direct.high, 0.99))


def test_trend_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(1)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    levels, seeds, folds = x.size, 3, 10
    y = (90.0 + 0.5 * x[:, None, None] + rng.normal(0.0, 1.0, size=(1, seeds, 1))
         + rng.normal(0.0, 1.0, size=(1, 1, folds)) + rng.normal(0.0, 0.3, size=(levels, seeds, folds)))
    estimate = st.trend(x, y)
    assert estimate.low < 0.5 < estimate.high and estimate.high - estimate.low < 0.3
    assert estimate.outcome == "reproduced" and estimate.n == seeds * folds
    exact = st.trend(x, 90.0 + 0.5 * x[:, None, None] + np.zeros((levels, seeds, folds)))
    assert exact.effect == pytest.approx(0.5) and exact.high - exact.low == pytest.approx(0.0, abs=1e-9)


def test_trend_over_two_levels_is_the_scaled_paired_difference() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(99.0, 0.5, size=(2, 3, 10))
    difference = st.paired_difference(y[1], y[0])
    slope = st.trend(np.array([0.0, 2.0]), y)  # x step 2: slope = difference / 2
    assert (slope.effect, slope.low, slope.high) == pytest.approx(
        (difference.effect / 2, difference.low / 2, difference.high / 2), rel=1e-12)
    assert slope.effective_df == pytest.approx(difference.effective_df)


def test_pooled_identical_estimates_narrow_by_sqrt_k() -> None:
    for k in (2, 5):
        normal = st.pooled([_estimate(1.0, 0.8)] * k)
        assert normal.effect == pytest.approx(1.0)
        assert normal.high - normal.effect == pytest.approx(0.8 / math.sqrt(k))
        t_based = _estimate(1.0, 0.8, df=9)
        assert st.pooled([t_based] * k).se == pytest.approx(t_based.se / math.sqrt(k))
    assert "equal-weight" in normal.method and "normal" in normal.method


def test_pooled_is_the_equal_weight_mean_with_welch_satterthwaite_df() -> None:
    first, second = _estimate(1.0, 2.0, df=9), _estimate(4.0, 1.0, df=19)
    combined = st.pooled([first, second])
    v1, v2 = first.se**2 / 4, second.se**2 / 4
    df = (v1 + v2) ** 2 / (v1**2 / 9 + v2**2 / 19)
    assert combined.effect == pytest.approx(2.5)
    assert combined.df == pytest.approx(df)
    assert combined.high - combined.effect == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(v1 + v2))
    with pytest.raises(ValueError, match="zero-width"):
        st.pooled([first, _estimate(1.0, 0.0)])


def test_pooled_cells_pools_shared_folds_once() -> None:
    rng = np.random.default_rng(5)
    fold = rng.normal(0.0, 2.0, 10)  # one fold effect shared by the three depths
    cells = 0.3 + fold[None, None, :] + rng.normal(0.0, 0.3, (3, 3, 10))
    pooled = st.pooled_cells(cells)
    direct = st.crossed_mean(cells.mean(axis=0))
    assert (pooled.effect, pooled.low, pooled.high) == pytest.approx((direct.effect, direct.low, direct.high))
    assert pooled.runs == 3 and "3 effects" in pooled.design and "3 runs x 10 test folds" in pooled.design
    # treating the three as independent would shrink the interval by about sqrt(3)
    naive = st.pooled([st.crossed_mean(c) for c in cells])
    assert naive.high - naive.low < 0.8 * (pooled.high - pooled.low)


def test_fewer_than_three_runs_give_no_verdict() -> None:
    strong = np.full((1, 10), 5.0) + np.linspace(-0.1, 0.1, 10)
    assert st.crossed_mean(strong).outcome == "reproduced"
    assert st.crossed_mean(strong).verdict == "not tested: one run"
    assert st.crossed_mean(np.vstack([strong, strong + 0.01])).verdict == "not tested: two runs"
    three = st.crossed_mean(np.vstack([strong, strong + 0.01, strong - 0.02]))
    assert three.verdict == "reproduced" and three.runs == 3
    assert st.exact(0.005, "x").verdict == "reproduced" and st.exact(0.005, "x").runs is None
    assert st.all_of({"a": three, "b": st.crossed_mean(strong)})[0] == "not tested: one run"


def test_exact_estimates_print_a_point_value() -> None:
    assert st.exact(0.00499, "bound").effect_text() == "+0.00499 pts (exact)"
    assert _estimate(1.0, 0.5).effect_text() == "+1.00 pts [+0.50, +1.50]"
    assert _estimate(0.0, 0.0).effect_text() == "+0.00 pts [+0.00, +0.00]"  # a sampled estimate that did not vary


def test_seeded_rate_difference_adds_the_run_to_run_spread() -> None:
    rng = np.random.default_rng(7)
    ids = np.repeat(np.arange(30), 8)
    b = (rng.uniform(size=(3, ids.size)) < 0.5).astype(float)
    a = b.copy()
    a[0, :40] = 1.0  # run 0 gains on 40 probes, runs 1 and 2 on none: a large run-to-run spread
    est = st.seeded_rate_difference(a, b, ids, n_resamples=400)
    assert est.effect == pytest.approx(100 * (a - b).mean())
    assert est.runs == 3 and est.df is not None and "3 runs x 30 probe identities" in est.design
    pooled_probes = st.rate_difference(a.ravel(), b.ravel(), np.tile(ids, 3), n_resamples=400)
    assert est.high - est.low > pooled_probes.high - pooled_probes.low
    assert st.seeded_rate_difference(a[:1], b[:1], ids, n_resamples=400).verdict == "not tested: one run"
    with pytest.raises(ValueError, match="shape"):
        st.seeded_rate_difference(a, b[:2], ids, n_resamples=400)


def test_all_of_three_outcomes_with_bonferroni() -> None:
    strong = {"softmax": _estimate(2.0, 0.5), "L-Softmax": _estimate(1.0, 0.5)}
    outcome, evidence = st.all_of(strong)
    assert outcome == "reproduced" and "weakest vs L-Softmax" in evidence and "Bonferroni" in evidence
    outcome, evidence = st.all_of({**strong, "center": _estimate(0.2, 0.5)})
    assert outcome == "inconclusive" and "weakest vs center" in evidence
    outcome, evidence = st.all_of({**strong, "center": _estimate(0.2, 0.5), "triplet": _estimate(-1.5, 0.5)})
    assert outcome == "contradicted" and "weakest vs triplet" in evidence
    # reproduced alone at 95%, but not once the interval is widened for three comparisons
    z = stats.norm.ppf(0.975)
    borderline = _estimate(1.0, 0.9)
    assert borderline.outcome == "reproduced" and 0.9 * stats.norm.ppf(1 - 0.05 / 6) / z > 1.0
    assert st.all_of({"a": borderline, "b": _estimate(5.0, 0.1), "c": _estimate(5.0, 0.1)})[0] == "inconclusive"


def test_rate_difference_cluster_bootstrap_is_wider_and_reproducible() -> None:
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(40), 12)
    hits_b = (rng.uniform(size=ids.size) < 0.5).astype(float)
    better_on = rng.uniform(size=40) < 0.5  # model a fixes every miss of b on these identities, none elsewhere
    a, b = np.where(better_on[ids], 1.0, hits_b), hits_b
    clustered = st.rate_difference(a, b, ids, n_resamples=1000, seed=5)
    unclustered = st.rate_difference(a, b, np.arange(ids.size), n_resamples=1000, seed=5)
    assert clustered.effect == pytest.approx(100 * (a.mean() - b.mean()))
    assert clustered.high - clustered.low > 1.2 * (unclustered.high - unclustered.low)
    again = st.rate_difference(a, b, ids, n_resamples=1000, seed=5)
    assert (again.low, again.high) == (clustered.low, clustered.high)
    other = st.rate_difference(a, b, ids, n_resamples=1000, seed=6)
    assert (other.low, other.high) != (clustered.low, clustered.high)
    assert "identities" in clustered.method and clustered.n == ids.size


def test_unit_bootstrap_of_a_mean_matches_the_t_interval() -> None:
    values = np.random.default_rng(4).normal(1.0, 2.0, size=200)
    boot = st.bootstrap_difference(lambda idx: float(values[idx].mean()), np.arange(values.size), seed=0)
    reference = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    width = reference.high - reference.low
    assert boot.low == pytest.approx(reference.low, abs=0.1 * width)
    assert boot.high == pytest.approx(reference.high, abs=0.1 * width)
    assert boot.method == "percentile bootstrap, 2000 resamples of 200 units"
    wider = boot.at(0.99)
    assert wider.low < boot.low and wider.high > boot.high


def test_cluster_resamples_take_whole_clusters_uniformly() -> None:
    ids = np.array(["x", "y", "x", "z", "y", "x"])
    sizes = {"x": 3, "y": 2, "z": 1}
    seen: list[np.ndarray] = []

    def record(idx: np.ndarray) -> float:
        seen.append(idx)
        return 0.0

    st.bootstrap_difference(record, ids, n_resamples=2000, seed=1)
    draws = {label: [] for label in sizes}
    for idx in seen[1:]:  # seen[0] is the effect on all units
        labels, counts = np.unique(ids[idx], return_counts=True)
        assert all(count % sizes[label] == 0 for label, count in zip(labels, counts))
        drawn = {label: count // sizes[label] for label, count in zip(labels, counts)}
        assert sum(drawn.values()) == 3
        for label in sizes:
            draws[label].append(drawn.get(label, 0))
    for label in sizes:  # each of the 3 clusters is drawn once per resample on average, whatever its size
        assert np.mean(draws[label]) == pytest.approx(1.0, abs=0.1)


def test_usable_far_needs_enough_expected_false_accepts() -> None:
    fars = [1e-1, 1e-2, 1e-3, 1e-4]
    assert st.usable_far(5_000, fars) == [1e-1, 1e-2]  # 500 and 50 expected false accepts; 5 and 0.5 not
    assert st.usable_far(5_000, fars, min_false_accepts=5) == [1e-1, 1e-2, 1e-3]
    assert st.usable_far(10, fars) == []
    with pytest.raises(ValueError, match="n_impostors"):
        st.usable_far(-1, fars)
    with pytest.raises(ValueError, match="far must be in"):
        st.usable_far(100, [0.0])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_names_the_argument(bad: float) -> None:
    good = np.full((2, 3), 99.0)
    broken = good.copy()
    broken[1, 2] = bad
    with pytest.raises(ValueError, match=r"paired_difference: b contains NaN or inf \(first at index \(1, 2\)\)"):
        st.paired_difference(good, broken)
    with pytest.raises(ValueError, match="paired_difference: a contains NaN"):
        st.paired_difference(broken, good)
    with pytest.raises(ValueError, match="trend: y contains NaN"):
        st.trend([1.0, 2.0], np.stack([good, broken]))
    with pytest.raises(ValueError, match="trend: x contains NaN"):
        st.trend([1.0, bad], np.stack([good, good]))
    with pytest.raises(ValueError, match="rate_difference: hits_a contains NaN"):
        st.rate_difference([1.0, bad], [1.0, 0.0], [0, 1])
    with pytest.raises(ValueError, match="usable_far: fars contains NaN"):
        st.usable_far(100, [0.1, bad])
    with pytest.raises(ValueError, match="Estimate: effect is not finite"):
        st.Estimate(bad, 0.0, 1.0, 0.95, "x", 1)
    with pytest.raises(ValueError, match="bootstrap_difference: stat returned"):
        st.bootstrap_difference(lambda idx: bad, np.arange(4))


def test_malformed_input_is_refused() -> None:
    with pytest.raises(ValueError, match="a must be 2-D"):
        st.paired_difference([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="share"):
        st.paired_difference(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least 2 values"):
        st.paired_difference([[1.0]], [[0.0]])
    with pytest.raises(ValueError, match="two different values"):
        st.trend([1.0, 1.0], np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="only 0/1"):
        st.rate_difference([0.5, 1.0], [1.0, 0.0], [0, 1])
    with pytest.raises(ValueError, match="at least 2 clusters"):
        st.rate_difference([0.0, 1.0], [1.0, 0.0], [7, 7])
    with pytest.raises(ValueError, match="n_resamples"):
        st.bootstrap_difference(lambda idx: 0.0, np.arange(4), n_resamples=10)
