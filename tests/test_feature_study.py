"""feature_study: identity split, training subset, angle statistics and their bootstrap spreads, figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sphereface_lib.companion import feature_study as fs  # noqa: E402
from sphereface_lib.companion import figures as viz  # noqa: E402
from sphereface_lib.data import PackedDataset, PackedWriter  # noqa: E402


def _dataset(root: Path, counts: list[int]) -> PackedDataset:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.integers(0, 256, (len(labels), 16, 16, 1), dtype=np.uint8)
    with PackedWriter(root, height=16, width=16, channels=1, source="test",
                      identities=[f"P{i}" for i in range(len(counts))]) as w:
        w.add(images, labels, [f"P{l}/{i:04d}" for i, l in enumerate(labels)])
    return PackedDataset(root)


def test_choose_identities_takes_the_largest_and_holds_out_disjoint_test_images(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", [3, 10, 2, 8, 10])
    split = fs.choose_identities(ds, 3, 0.25, seed=1)
    assert split.source_labels == (1, 4, 3) and split.names == ("P1", "P4", "P3")
    assert not set(split.train_rows) & set(split.test_rows)
    assert np.bincount(split.test_labels).tolist() == [2, 2, 2]
    assert np.bincount(split.train_labels).tolist() == [8, 8, 6]
    for rows, labels in ((split.train_rows, split.train_labels), (split.test_rows, split.test_labels)):
        assert np.array_equal(np.array(split.source_labels)[labels], ds.labels[rows])
    again = fs.choose_identities(ds, 3, 0.25, seed=1)
    assert np.array_equal(again.test_rows, split.test_rows)
    with pytest.raises(ValueError, match="identities=9"):
        fs.choose_identities(ds, 9, 0.25)
    with pytest.raises(ValueError, match="test_fraction"):
        fs.choose_identities(ds, 2, 1.0)


def test_training_subset_is_written_once_with_the_training_images(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", [6, 6, 6])
    split = fs.choose_identities(ds, 2, 0.5)
    sub = fs.write_training_subset(split, tmp_path / "cache")
    assert np.array_equal(np.asarray(sub.images), np.asarray(ds.images[split.train_rows]))
    assert np.array_equal(sub.labels, split.train_labels) and sub.identities == list(split.names)
    stamp = (sub.root / "manifest.json").stat().st_mtime_ns
    assert fs.write_training_subset(split, tmp_path / "cache").root == sub.root
    assert (sub.root / "manifest.json").stat().st_mtime_ns == stamp


def test_angles_margins_and_accuracy_on_known_geometry() -> None:
    weights = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    deg = np.radians([10.0, 80.0, 170.0, 50.0])
    features = 3.0 * np.stack([np.cos(deg), np.sin(deg)], 1)
    labels = np.array([0, 1, 2, 0])
    theta = fs.angles_to_weights(features, weights)
    assert np.allclose(theta[:, 0], [10, 80, 170, 50])
    assert np.allclose(fs.angular_margins(features, labels, weights), [70, 70, 70, -10])
    assert fs.angle_accuracy(features, labels, weights) == 0.75


def test_pair_angles_and_literal_extremes() -> None:
    deg = np.radians([0.0, 20.0, 90.0, 100.0])
    features = np.stack([np.cos(deg), np.sin(deg), np.zeros(4)], 1)
    labels = np.array([0, 0, 1, 1])
    pos, neg = fs.pair_angles(features, labels)
    assert np.allclose(sorted(pos), [10, 20]) and np.allclose(sorted(neg), [70, 80, 90, 100])
    s = fs.angle_summary(features, labels, quantile=1.0)
    assert (s.max_intra, s.min_inter) == pytest.approx((20.0, 70.0)) and s.separated and s.gap == pytest.approx(50)
    with pytest.raises(ValueError, match="quantile"):
        fs.angle_summary(features, labels, quantile=0.3)


def test_bootstrap_spread_reflects_noise_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    tight = rng.normal(0, 0.1, 100)
    wide = rng.normal(0, 10.0, 100)
    s_tight = fs.bootstrap_std(lambda r: tight[r].mean(), labels, 50)
    s_wide = fs.bootstrap_std(lambda r: wide[r].mean(), labels, 50)
    assert s_wide[0] > 10 * s_tight[0] > 0
    assert np.array_equal(s_wide, fs.bootstrap_std(lambda r: wide[r].mean(), labels, 50))
    diff, std = fs.bootstrap_difference(wide + 5.0, wide, labels, np.median, 50)
    assert diff == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-12)  # paired: same images each draw


def test_monotone_verdict_needs_every_step() -> None:
    assert fs.monotone_verdict([30, 20, 10], [1, 1, 2], decreasing=True) == (True, 5.0)
    ok, z = fs.monotone_verdict([30, 31, 10], [1, 1, 1], decreasing=True)
    assert not ok and z == -1.0


def test_feature_config_anneals_lambda_to_its_minimum_and_rejects_unknown_heads(tmp_path: Path) -> None:
    from sphereface_lib.losses import LambdaSchedule

    cfg = fs.feature_config(tmp_path, "asoftmax", feat_dim=3, m=3, lambda_min=2.0, anneal_fraction=0.5, iterations=100)
    sched = LambdaSchedule(**cfg.head.kwargs["lambda_schedule"])
    assert sched(0) == 1000.0 and sched(50) == pytest.approx(2.0) and sched(99) == 2.0
    assert cfg.model.feat_dim == 3 and cfg.optim.lr_steps == [60, 85]
    assert fs.feature_config(tmp_path, "softmax", feat_dim=2).head.kwargs == {}
    with pytest.raises(ValueError, match="head='cosface'"):
        fs.feature_config(tmp_path, "cosface", feat_dim=2)


def test_tiny_training_run_gives_features_and_weights(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", [12, 12, 12])
    split = fs.choose_identities(ds, 3, 0.25)
    sub = fs.write_training_subset(split, tmp_path)
    cfg = fs.feature_config(sub.root, "asoftmax", feat_dim=3, m=2, width=0.0625, iterations=4, batch_size=8)
    fm = fs.train_feature_model(cfg, split, tmp_path / "models")
    assert fm.train_features.shape == (27, 3) and fm.test_features.shape == (9, 3) and fm.weights.shape == (3, 3)
    again = fs.train_feature_model(cfg, split, tmp_path / "models")  # from the model cache
    assert np.array_equal(again.test_features, fm.test_features)
    assert 0.0 <= fs.head_accuracy(fm.test_features, split.test_labels, fm.result) <= 1.0


def test_figures_draw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 5)
    f2, f3, w = rng.normal(size=(15, 2)), rng.normal(size=(15, 3)), rng.normal(size=(3, 2))
    figs = [
        viz.plot_features_2d({"a": (f2, labels, w), "b": (f2, labels, w)}),
        viz.plot_own_angle_histograms({"a": rng.uniform(0, 90, 15)}),
        viz.plot_sphere_features({"m=1": (f3, labels), "m=2": (f3, labels)}, columns=2),
        viz.plot_pair_angle_distributions({"m=1": fs.pair_angles(f3, labels)}, {"m=1": (30.0, 60.0)}),
    ]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        plt.close(fig)
    assert all((tmp_path / f"{i}.png").stat().st_size > 1000 for i in range(len(figs)))
