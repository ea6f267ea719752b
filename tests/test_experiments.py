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


def test_schedule_keeps_the_official_proportions(smoke) -> None:
    """lambda reaches lambda_min and the lr drops at the official run's fractions (1,658, 16k, 24k of 28k),
    whatever the length of the run; most high-lr iterations then run near lambda_min, as officially (0.91)."""
    from sphereface_lib.losses import LambdaSchedule

    bench, _ = smoke
    official_at = E.OFFICIAL_LAMBDA_MIN_AT / E.OFFICIAL_ITERATIONS
    for iterations in (280, 2800, 28000):
        recipe = E.Recipe(iterations=iterations, lambda_min_at=official_at, lsoftmax_lambda_min_at=None)
        cfg = E.train_config(bench, "asoftmax_m4", recipe, 0)
        s = LambdaSchedule(**cfg.head.kwargs["lambda_schedule"])
        at = E.OFFICIAL_LAMBDA_MIN_AT / E.OFFICIAL_ITERATIONS * iterations
        assert s(int(at) - 1) > 5.0 and s(int(at) + 1) == 5.0
        assert cfg.optim.lr_steps == [round(iterations * 16 / 28), round(iterations * 24 / 28)]
        assert recipe.high_lr_fraction_near_lambda_min() == pytest.approx(0.913, abs=0.01)
        assert E.train_config(bench, "lsoftmax", recipe, 0).head.kwargs["lambda_schedule"] == cfg.head.kwargs["lambda_schedule"]
    official = E.Recipe(iterations=28000, lambda_min_at=official_at).lambda_schedule()
    assert official["gamma"] == pytest.approx(0.12, rel=1e-3)  # the official solver's gamma
    assert E.Recipe(lambda_min_at=0.30).high_lr_fraction_near_lambda_min() == pytest.approx(0.562, abs=0.01)  # C3


def test_lsoftmax_anneals_at_its_own_point(smoke) -> None:
    """Round 5 of docs/recipe.md: the default recipe anneals A-Softmax to lambda = 5 at the official 5.9% of the
    run and L-Softmax (exact gradient) at 30%."""
    from sphereface_lib.losses import LambdaSchedule

    bench, _ = smoke
    recipe = E.Recipe()
    assert (recipe.lambda_min_at, recipe.lsoftmax_lambda_min_at, recipe.gradient) == (0.0592, 0.30, "official")
    for row, at in (("asoftmax_m4", 0.0592), ("lsoftmax", 0.30)):
        s = LambdaSchedule(**E.train_config(bench, row, recipe, 0).head.kwargs["lambda_schedule"])
        assert s(int(at * recipe.iterations) - 1) > 5.0 and s(int(at * recipe.iterations) + 1) == 5.0, row
    assert E.train_config(bench, "asoftmax_m4", recipe, 0).head.kwargs["gradient"] == "official"


def test_head_kwargs_override_a_row(smoke) -> None:
    bench, _ = smoke
    cfg = E.train_config(bench, "cosface", TINY, 0, {"s": 16.0, "m": 0.2})
    assert cfg.head.kwargs == {"s": 16.0, "m": 0.2}


def test_validation_carve_holds_out_training_identities(smoke, tmp_path) -> None:
    bench, _ = smoke
    val = E.carve_validation(bench, 10, tmp_path, seed=1, folds=5)
    held = set(val.lfw.identities)
    assert not held & set(val.train.identities) and len(held) == 10
    assert len(val.train) + len(val.lfw) == len(bench.train)
    from sphereface_lib.data.protocols import pair_rows
    a, b = pair_rows(val.lfw, val.lfw_pairs)
    same = val.lfw.labels[a] == val.lfw.labels[b]
    np.testing.assert_array_equal(same, val.lfw_pairs.is_same)
    assert val.lfw_pairs.n_folds == 5 and val.lfw_pairs.is_same.mean() == 0.5
    for f in range(5):  # identities of a fold are disjoint from the other folds'
        mine = set(val.lfw.labels[np.r_[a, b][np.r_[val.lfw_pairs.folds, val.lfw_pairs.folds] == f]])
        rest = set(val.lfw.labels[np.r_[a, b][np.r_[val.lfw_pairs.folds, val.lfw_pairs.folds] != f]])
        assert not mine & rest
    with pytest.raises(E.ExperimentError, match="identities=3"):
        E.carve_validation(bench, 3, tmp_path)


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


def _real_folder(tmp_path, lfw_keys: list[str], pairs: list[str]) -> str:
    """A real-data folder: a two-image train/ pack, an lfw/ pack of ``lfw_keys`` and a two-fold pairs.txt."""
    for part, keys in (("train", ["a/0001", "b/0001"]), ("lfw", lfw_keys)):
        with PackedWriter(tmp_path / part, height=4, width=4, channels=1, source="test") as w:
            w.add(np.zeros((len(keys), 4, 4, 1), np.uint8), list(range(len(keys))), keys)
    (tmp_path / "pairs.txt").write_text("2\t2\n" + "\n".join(pairs) + "\n")
    return str(tmp_path)


PAIRS = ["A\t1\t2", "B\t1\t2", "A\t1\tB\t1", "A\t2\tB\t2"] * 2  # fold 0, then fold 1


def test_pairs_of_an_image_data_prep_could_not_align_are_skipped_and_said(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(E, "MAX_SKIPPED_PAIRS", 0.5)  # the real rule, 1%, is for 6,000 pairs
    keys = ["A/0001", "A/0002", "B/0001", "B/0002"]
    full = E.open_benchmark(_real_folder(tmp_path / "full", keys, PAIRS), tmp_path, ("train", "lfw"))
    assert len(full.lfw_pairs) == 8 and full.notes == ()
    bench = E.open_benchmark(_real_folder(tmp_path / "less", keys[:3], PAIRS), tmp_path, ("train", "lfw"))
    assert len(bench.lfw_pairs) == 4 and "B/0002" not in bench.lfw_pairs.keys_a + bench.lfw_pairs.keys_b
    assert bench.notes == ("pairs.txt: 4 of 8 pairs skipped (lines 3, 5, 7, 9): B/0002 could not be aligned (the "
                           "data preparation's failures.tsv)",)
    assert bench.lfw_pairs.lines.tolist() == [2, 4, 6, 8] and bench.lfw_pairs.folds.tolist() == [0, 0, 1, 1]


def test_a_protocol_folder_missing_many_images_is_an_error_not_a_smaller_protocol(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(E, "MAX_SKIPPED_PAIRS", 0.25)
    with pytest.raises(E.ExperimentError, match=r"pairs\.txt: 6 of its 8 pairs \(lines 3, 4, 5, 7, 8, 9\.\.\.\) "
                                                r".*\(B/0001, B/0002\.\.\.\): more than 25%.*data_prep"):
        E.open_benchmark(_real_folder(tmp_path, ["A/0001", "A/0002"], PAIRS), tmp_path, ("train", "lfw"))


def _table(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Rows -> per seed, the per-fold accuracies."""
    return pd.DataFrame([{"row": r, "seed": s, "lfw": float(np.mean(v)), "lfw_fold_std": float(np.std(v, ddof=1)),
                          "lfw_folds": np.asarray(v, float)} for r, vs in values.items() for s, v in enumerate(vs)])


def test_compare_pairs_rows_by_seed_and_fold() -> None:
    rng = np.random.default_rng(0)
    base = 90 + rng.normal(0, 2, (3, 10))  # fold difficulty shared by both rows
    t = _table({"a": (base + 1.0 + rng.normal(0, 0.1, (3, 10))).tolist(), "b": base.tolist()})
    est = E.compare(t, "a", "b", "lfw")
    assert est.outcome == "reproduced" and est.effect == pytest.approx(1.0, abs=0.1)
    assert E.compare(t, "b", "a", "lfw").outcome == "contradicted"
    noisy = _table({"a": (base + rng.normal(0, 2, (3, 10))).tolist(), "b": base.tolist()})
    assert E.compare(noisy, "a", "b", "lfw").outcome == "inconclusive"
    with pytest.raises(E.ExperimentError, match="no results"):
        E.compare(t, "a", "z", "lfw")


def test_trend_over_rows_and_claims() -> None:
    rng = np.random.default_rng(1)
    base = 80 + rng.normal(0, 2, (3, 10))
    t = _table({f"m{k}": (base + 0.5 * k + rng.normal(0, 0.1, (3, 10))).tolist() for k in (1, 2, 3, 4)})
    est = E.trend_over(t, ["m1", "m2", "m3", "m4"], [1, 2, 3, 4], "lfw")
    assert est.outcome == "reproduced" and est.effect == pytest.approx(0.5, abs=0.05)
    claim = E.make_claim("c", "p", "src", "ours", est)
    assert claim.outcome == "reproduced" and claim.effect.startswith("+0.")
    both = E.make_all_of_claim("c", "p", "src", "ours", {"m2": E.compare(t, "m4", "m2", "lfw"),
                                                          "m1": E.compare(t, "m4", "m1", "lfw")})
    assert both.outcome == "reproduced" and "3 runs x 10 test folds" in both.design
    assert both.effect.startswith("m2 +") and both.effect.count("[") == 2  # every effect with its interval
    two_runs = _table({"a": (base[:2] + 1.0).tolist(), "b": base[:2].tolist()})
    assert E.make_claim("c", "p", "src", "ours", E.compare(two_runs, "a", "b", "lfw")).outcome == "not tested: two runs"


def test_compare_pooled_counts_shared_folds_once() -> None:
    rng = np.random.default_rng(2)
    base = 80 + rng.normal(0, 2, (3, 10))
    rows = {f"{r}@{d}": (base + (0.4 if r == "a" else 0.0) + rng.normal(0, 0.2, (3, 10))).tolist()
            for r in "ab" for d in (4, 10, 20)}
    t = _table(rows)
    pooled = E.compare_pooled(t, [(f"a@{d}", f"b@{d}") for d in (4, 10, 20)], "lfw")
    cells = np.mean([np.array(rows[f"a@{d}"]) - np.array(rows[f"b@{d}"]) for d in (4, 10, 20)], axis=0)
    assert pooled.effect == pytest.approx(cells.mean()) and pooled.verdict == "reproduced"
    assert "3 effects" in pooled.design
    with pytest.raises(E.ExperimentError, match="same seeds"):
        E.compare_pooled(_table({**rows, "c": base[:2].tolist()}), [("a@4", "b@4"), ("a@10", "c")], "lfw")


def test_summary_leaves_out_the_spread_of_one_run() -> None:
    one = _table({"a": [[80.0, 81.0]], "b": [[82.0, 83.0]]})
    assert list(E.summary(one, ["lfw"]).columns) == ["lfw"]
    mixed = _table({"a": [[80.0, 81.0], [82.0, 83.0]], "b": [[82.0, 83.0]]})
    std = E.summary(mixed, ["lfw"])["lfw_seed_std"]
    assert std["a"] == pytest.approx(1.41) and std["b"] == "-"


def test_tables_and_plots(smoke) -> None:
    table = _table({"softmax": [[80.0, 80.5], [81.0, 81.5]], "asoftmax_m4": [[85.0, 85.5], [86.0, 86.5]]})
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
