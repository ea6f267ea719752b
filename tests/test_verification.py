"""LFW / YTF 10-fold accuracy, ROC, EER, TAR@FAR: a hand example and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest

from sphereface_lib.evaluation import cosine_scores, k_fold_accuracy, lfw_10fold, roc, video_features, ytf_10fold


def _unit(angle_cos: float) -> np.ndarray:
    return np.array([angle_cos, np.sqrt(1.0 - angle_cos**2)])


def _hand_pairs(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two folds of 4 pairs; each fold's features sum to zero (pairs come as (u, v) and (-u, -v))."""
    u = np.array([1.0, 0.0])
    a, b, same = [], [], []
    for same_cos, diff_cos in ((0.80005, 0.20005), (0.45005, -0.09995)):
        for cos, s in ((same_cos, True), (diff_cos, False)):
            for sign in (1.0, -1.0):
                a.append(sign * u)
                b.append(sign * _unit(cos))
                same.append(s)
    return np.array(a) + offset, np.array(b) + offset, np.array(same)


@pytest.mark.parametrize("offset", [np.zeros(2), np.array([5.0, -3.0])])
def test_hand_two_folds(offset: np.ndarray) -> None:
    # fold 1 trains fold 0: best thresholds k/1e4 for k in -999..4500 (scores -0.09995, 0.45005) -> 0.17505;
    #   fold 0 at 0.17505: same 0.80005 right, different 0.20005 wrong -> 0.5
    # fold 0 trains fold 1: k in 2001..8000 -> 0.50005; fold 1: same 0.45005 wrong, different right -> 0.5
    # an offset common to all features is removed by the mean subtraction
    a, b, same = _hand_pairs(offset)
    result = lfw_10fold(a, b, same, n_folds=2)
    assert np.allclose(result.thresholds, [0.17505, 0.50005], atol=1e-12)
    assert result.accuracies.tolist() == [0.5, 0.5]
    assert result.mean == 0.5 and result.std == 0.0


def _naive_k_fold(a, b, same, folds, grid_steps):
    accs, thrs = [], []
    grid = [k / grid_steps for k in range(-grid_steps, grid_steps + 1)]
    for fold in sorted(set(folds.tolist())):
        test, train = folds == fold, folds != fold
        mu = np.vstack([a[train], b[train]]).mean(axis=0)
        na = (a - mu) / np.linalg.norm(a - mu, axis=1, keepdims=True)
        nb = (b - mu) / np.linalg.norm(b - mu, axis=1, keepdims=True)
        s = (na * nb).sum(axis=1)
        best, best_t = -1, []
        for t in grid:
            acc = np.sum(s[train & same] > t) + np.sum(s[train & ~same] < t)
            if acc > best:
                best, best_t = acc, [t]
            elif acc == best:
                best_t.append(t)
        thr = float(np.mean(best_t))
        accs.append((np.sum(s[test & same] > thr) + np.sum(s[test & ~same] < thr)) / test.sum())
        thrs.append(thr)
    return np.array(accs), np.array(thrs)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d = 200, 16
    same = np.tile(np.r_[np.ones(10, bool), np.zeros(10, bool)], 10)
    a = rng.normal(size=(n, d)) + 0.5
    b = np.where(same[:, None], a, rng.normal(size=(n, d))) + rng.normal(size=(n, d)) * 1.2
    result = lfw_10fold(a.astype(np.float32), b.astype(np.float32), same, grid_steps=500)
    accs, thrs = _naive_k_fold(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64),
                               same, np.repeat(np.arange(10), 20), 500)
    assert np.array_equal(result.accuracies, accs)
    assert np.allclose(result.thresholds, thrs, atol=1e-12)
    assert 0.5 < result.mean < 1.0  # a real, imperfect signal: the test can tell right from wrong
    assert result.std == pytest.approx(np.std(accs, ddof=1))


def test_ytf_splits_and_video_features() -> None:
    rng = np.random.default_rng(3)
    frames = rng.normal(size=(12, 4)).astype(np.float32)
    rows = {"A/0": np.array([0, 1, 2]), "A/1": np.array([3]), "B/0": np.array([4, 5])}
    feats = video_features(frames, rows)
    assert np.allclose(feats["A/0"], frames[:3].mean(axis=0)) and np.allclose(feats["A/1"], frames[3])
    a = rng.normal(size=(40, 8))
    same = np.tile([True, False], 20)
    b = np.where(same[:, None], a + 0.3 * rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    splits = np.tile(np.arange(4), 10)  # interleaved splits, not consecutive blocks
    res = ytf_10fold(a, b, same, splits, grid_steps=200)
    accs, thrs = _naive_k_fold(a, b, same, splits, 200)
    assert np.array_equal(res.accuracies, accs) and np.allclose(res.thresholds, thrs, atol=1e-12)
    assert np.array_equal(k_fold_accuracy(a, b, same, splits, 200).accuracies, accs)


def test_bad_input_errors() -> None:
    a = np.ones((10, 3))
    with pytest.raises(ValueError, match="n_folds=3 must be >= 2 and divide"):
        lfw_10fold(a, a, np.zeros(10, bool), n_folds=3)
    with pytest.raises(ValueError, match="one shape"):
        lfw_10fold(a, np.zeros((10, 4)), np.zeros(10, bool), n_folds=2)


def test_roc_hand_example() -> None:
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.1])
    same = np.array([True, True, True, False, False, False])
    r = roc(scores, same, fars=(0.0, 1 / 3))
    # ranking: 0.9 s, 0.8 s, 0.7 d, 0.4 s, 0.3 d, 0.1 d -> AUC = 8/9
    assert r.auc == pytest.approx(8 / 9)
    assert r.tar_at_far[0.0] == pytest.approx(2 / 3) and r.tar_at_far[1 / 3] == pytest.approx(1.0)
    # EER: at (FAR, TAR) = (0, 2/3) FRR = 1/3 > FAR; at (1/3, 2/3) FRR = 1/3 = FAR -> 1/3
    assert r.eer == pytest.approx(1 / 3)
    assert np.allclose(cosine_scores(np.array([[1.0, 0.0]]), np.array([[3.0, 3.0]])), [np.sqrt(0.5)])


def test_is_same_one_short_is_named_not_n_folds() -> None:
    a = np.ones((10, 3))
    with pytest.raises(ValueError, match=r"is_same must have one flag per pair \(10\), got shape \(9,\)"):
        lfw_10fold(a, a, np.zeros(9, bool), n_folds=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_naming_the_rows(bad: float) -> None:
    from sphereface_lib.errors import UserError
    from sphereface_lib.evaluation.checks import NonFiniteFeaturesError

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    same = np.tile([True, False], 10)
    b[7, 2] = b[13, 0] = bad
    for call in (lambda: lfw_10fold(a, b, same, n_folds=2),
                 lambda: k_fold_accuracy(a, b, same, np.repeat([0, 1], 10)),
                 lambda: ytf_10fold(a, b, same, np.tile([0, 1], 10)),
                 lambda: cosine_scores(a, b)):
        with pytest.raises(NonFiniteFeaturesError, match=r"emb_b: 2 of 20 feature rows hold NaN or infinity "
                                                         r"\(pairs 7, 13\)"):
            call()
    assert issubclass(NonFiniteFeaturesError, UserError)
    with pytest.raises(NonFiniteFeaturesError, match=r"scores: 1 of 3 .*\(pairs 1\)"):
        roc(np.array([0.2, bad, 0.1]), np.array([True, False, True]))
    frames = rng.normal(size=(6, 4))
    frames[4, 1] = bad
    with pytest.raises(NonFiniteFeaturesError, match=r"video 'B/0'.*\(frame rows 4\)"):
        video_features(frames, {"A/0": np.array([0, 1]), "B/0": np.array([3, 4, 5])})


def test_all_zero_features_are_refused_naming_the_pairs() -> None:
    """A zero feature has no direction: every protocol function refuses it (LFW would otherwise report a
    number computed from cosines of 0)."""
    from sphereface_lib.evaluation.checks import ZeroFeaturesError

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    same = np.tile([True, False], 10)
    a[[2, 9]] = 0.0
    for call in (lambda: lfw_10fold(a, b, same, n_folds=2),
                 lambda: k_fold_accuracy(a, b, same, np.repeat([0, 1], 10)),
                 lambda: ytf_10fold(a, b, same, np.tile([0, 1], 10)),
                 lambda: cosine_scores(a, b)):
        with pytest.raises(ZeroFeaturesError, match=r"emb_a: 2 of 20 feature rows are all zero \(pairs 2, 9\)"):
            call()
    with pytest.raises(ZeroFeaturesError, match=r"emb_a: 20 of 20"):
        lfw_10fold(np.zeros((20, 4)), np.zeros((20, 4)), same, n_folds=2)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_features_whose_squares_leave_float64_score_as_the_unscaled(scale: float) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    same = np.tile([True, False], 20)
    want = lfw_10fold(a, b, same, n_folds=4)
    got = lfw_10fold(a * scale, b * scale, same, n_folds=4)
    assert np.array_equal(got.accuracies, want.accuracies) and np.allclose(got.thresholds, want.thresholds)
    assert np.allclose(cosine_scores(a * scale, b * scale), cosine_scores(a, b))
