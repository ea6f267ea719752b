"""sphereface_lib.companion.experiments: benchmark opening (synthetic and real layouts), row configs, verdicts, plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from sphereface_lib.companion import experiments as E
from sphereface_lib.companion import figures as P
from sphereface_lib.data.packed import PackedWriter

TINY = E.Recipe(backbone="sphereface4", width=0.125, feat_dim=16, iterations=4, batch_size=16)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[E.Benchmark, str]:
    cache = str(tmp_path_factory.mktemp("cache"))
    parts = ("train", "lfw", "ytf", "megaface_probe", "megaface_distractors")
    return E.open_benchmark(None, cache, parts, "smoke"), cache


def test_resolve_path_is_relative_to_the_project_root() -> None:
    assert E.resolve_path("cache") == E.PROJECT_ROOT / "cache"
    assert E.resolve_path("/tmp/x") == Path("/tmp/x")


def test_every_row_builds_a_valid_config(smoke) -> None:
    bench, _ = smoke
    for row in E.ROW_LABELS:
        cfg = E.train_config(bench, row, TINY, seed=3)
        assert cfg.run.seed == 3 and cfg.optim.lr_steps == [2, 3]
    assert E.train_config(bench, "asoftmax_m2", TINY, 0).head.kwargs["m"] == 2
    assert E.train_config(bench, "triplet", TINY, 0).data.sampler == "pk"
    with pytest.raises(E.ExperimentError, match="row 'asoftmax_m7' is unknown"):
        E.train_config(bench, "asoftmax_m7", TINY, 0)


def test_annealing_follows_the_official_run_per_epoch(smoke) -> None:
    """lambda after e epochs of a run equals the official lambda after e epochs of CASIA-WebFace."""
    from sphereface_lib.losses import LambdaSchedule

    bench, _ = smoke
    recipe = E.Recipe(iterations=280, batch_size=16)
    short = E.train_config(bench, "asoftmax_m4", recipe, 0).head.kwargs["lambda_schedule"]
    per_epoch = len(bench.train) / recipe.batch_size
    lam = lambda s, it: max(s["lambda_min"], s["base"] * (1 + s["gamma"] * it) ** -s["power"])
    official = LambdaSchedule()
    for epochs in (0.01, 0.1, 0.5):
        ours = lam(short, epochs * per_epoch)
        assert ours == pytest.approx(official(epochs * E.PAPER_ITERATIONS_PER_EPOCH))
    assert lam(E.train_config(bench, "lsoftmax", recipe, 0).head.kwargs["lambda_schedule"], 3) == lam(short, 3)


@pytest.mark.slow
def test_train_evaluate_and_cache(smoke) -> None:
    bench, cache = smoke
    table = E.verification_table(bench, ["softmax"], [0], TINY, cache)
    again = E.verification_table(bench, ["softmax"], [0], TINY, cache)  # from the model cache
    pd.testing.assert_frame_equal(table, again)
    assert 0 <= table.loc[0, "lfw"] <= 100 and 0 <= table.loc[0, "ytf"] <= 100
    model = E.train_row(bench, "softmax", TINY, 0, cache)
    res = E.megaface_results(model, bench, [10, 10**9])
    assert sorted(res) == [10, len(bench.megaface_distractors.labels)]
    assert res[10].rank1 >= res[max(res)].rank1


def test_missing_real_parts_name_the_folder_and_command(tmp_path) -> None:
    with pytest.raises(E.ExperimentError, match="is not a folder"):
        E.open_benchmark(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(E.ExperimentError, match=r"train/ is missing.*data_prep\.casia"):
        E.open_benchmark(str(tmp_path), tmp_path)
    for part in ("train", "lfw"):
        with PackedWriter(tmp_path / part, height=4, width=4, channels=1, source="test") as w:
            w.add(np.zeros((2, 4, 4, 1), np.uint8), [0, 1], ["a/0001", "b/0001"])
    with pytest.raises(E.ExperimentError, match=r"no pairs\.txt.*data_prep\.lfw"):
        E.open_benchmark(str(tmp_path), tmp_path, ("train", "lfw"))
    with pytest.raises(E.ExperimentError, match=r"ytf/ is missing.*data_prep\.ytf"):
        E.open_benchmark(str(tmp_path), tmp_path, ("train", "ytf"))
    with pytest.raises(E.ExperimentError, match="unknown"):
        E.open_benchmark(None, tmp_path, ("train", "casia"))


def _table(values: dict[str, list[float]], fold_std: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"row": r, "seed": s, "lfw": v, "lfw_fold_std": fold_std}
                         for r, vs in values.items() for s, v in enumerate(vs)])


def test_beats_weighs_the_gap_against_the_seed_spread() -> None:
    assert E.beats(_table({"a": [90.0, 90.2], "b": [85.0, 85.1]}), "a", "b", "lfw").holds
    noisy = E.beats(_table({"a": [90.0, 80.0], "b": [85.0, 84.0]}), "a", "b", "lfw")
    assert not noisy.holds and "2 seeds" in noisy.evidence
    one = E.beats(_table({"a": [90.0], "b": [89.0]}, fold_std=3.0), "a", "b", "lfw")
    assert not one.holds and "10-fold" in one.evidence  # 1 pt < 2 * sqrt(2) * 3 / sqrt(10)
    assert E.beats(_table({"a": [90.0], "b": [80.0]}, fold_std=3.0), "a", "b", "lfw").holds


def test_rises_with_needs_a_slope_beyond_its_error() -> None:
    t = pd.DataFrame({"m": [1, 1, 2, 2, 3, 3, 4, 4], "lfw": [80, 80.5, 82, 82.4, 84, 83.6, 86, 86.3]})
    assert E.rises_with(t, "m", "lfw").holds
    assert not E.rises_with(t.assign(lfw=t["lfw"][::-1].to_numpy()), "m", "lfw").holds
    flat = pd.DataFrame({"m": [1, 2, 3, 4], "lfw": [80, 85, 79, 84]})
    assert not E.rises_with(flat, "m", "lfw").holds
    with pytest.raises(E.ExperimentError):
        E.rises_with(flat.iloc[:2], "m", "lfw")


def test_rate_beats_uses_binomial_errors() -> None:
    assert E.rate_beats({"a": 0.9, "b": 0.5}, {"a": 1000, "b": 1000}, "a").holds
    assert not E.rate_beats({"a": 0.9, "b": 0.85}, {"a": 20, "b": 20}, "a").holds
    with pytest.raises(E.ExperimentError):
        E.rate_beats({"a": 0.9}, {"a": 10}, "z")


def test_tables_and_plots(smoke) -> None:
    table = _table({"softmax": [80.0, 81.0], "asoftmax_m4": [85.0, 86.0]})
    ours = E.summary(table, ["lfw"])
    shown = P.paper_beside_ours(ours, {"asoftmax_m4": {"lfw": 99.42}}, E.ROW_LABELS)
    assert shown.loc[E.ROW_LABELS["asoftmax_m4"], "paper lfw (typed)"] == 99.42
    assert np.isnan(shown.loc["Softmax", "paper lfw (typed)"])
    assert shown.loc["Softmax", "ours lfw seed std"] == pytest.approx(0.71)
    P.plot_accuracy_bars(table, ["lfw"], E.ROW_LABELS)
    P.plot_accuracy_vs(table.assign(m=[1, 1, 4, 4]), "m", ["lfw"])
    bench, cache = smoke
    res = E.megaface_results(E.train_row(bench, "softmax", TINY, 0, cache), bench, [10, 100])
    assert len(P.plot_megaface({"softmax": res}, E.ROW_LABELS).axes) == 3
