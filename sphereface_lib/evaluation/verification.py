"""Face verification: LFW View 2 and YouTube Faces 10-fold accuracy (paper Tables 3 and 4), ROC, EER, TAR@FAR.

The 10-fold procedure follows the official SphereFace evaluation code (``evaluation.m``): for each
held-out fold, subtract the mean feature of the other folds' pairs (both sides), L2-normalize, score by
cosine; the threshold is searched on the training folds over the grid -1, -1 + 1e-4, ..., 1 (ties: the
mean of all best thresholds); a pair is accepted as "same" when its score is above the threshold and
rejected when below (a score equal to the threshold counts as an error, as in ``getAccuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .checks import require_finite, require_usable


@dataclass(frozen=True)
class FoldAccuracy:
    """Result of a k-fold verification protocol: per-fold accuracy and threshold, their mean and std.

    ``std`` is the sample standard deviation over folds (ddof=1, as MATLAB's ``std``).
    """

    accuracies: np.ndarray
    thresholds: np.ndarray
    mean: float
    std: float

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% +- {100 * self.std:.2f}% over {len(self.accuracies)} folds"


def _check_pairs(emb_a: np.ndarray, emb_b: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, ...]:
    """Both sides as float64 (N, D), finite and nonzero (else a :class:`UserError` naming the pairs), flags bool;
    features so large (or small) that their squares leave float64 are scaled by one common power of 2."""
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    same = np.asarray(is_same)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b must be (N, D) of one shape, got {a.shape} and {b.shape}")
    if same.shape != (len(a),):
        raise ValueError(f"is_same must have one flag per pair ({len(a)}), got shape {same.shape}")
    require_usable(a, "emb_a", what="pairs")
    require_usable(b, "emb_b", what="pairs")
    peak = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if peak > 1e100 or peak < 1e-100:  # squares would overflow or vanish: one exact power-of-2 scale for all,
        scale = 2.0 ** -np.frexp(peak)[1]  # which leaves every cosine and the folds' mean subtraction unchanged
        a, b = a * scale, b * scale
    return a, b, same.astype(bool)


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def threshold_grid(grid_steps: int = 10000) -> np.ndarray:
    """Thresholds -1 .. 1 in steps of 1 / grid_steps (``(-thrNum:thrNum) / thrNum`` in evaluation.m)."""
    return np.arange(-grid_steps, grid_steps + 1, dtype=np.float64) / grid_steps


def grid_accuracy_counts(scores: np.ndarray, is_same: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Number of correctly classified pairs at each grid threshold (same: score > t; different: score < t)."""
    same = np.sort(scores[is_same])
    diff = np.sort(scores[~is_same])
    # same pairs above t: all minus those <= t; different pairs below t: those < t
    return (len(same) - np.searchsorted(same, grid, side="right")) + np.searchsorted(diff, grid, side="left")


def best_threshold(scores: np.ndarray, is_same: np.ndarray, grid: np.ndarray) -> float:
    """Grid threshold of highest accuracy; ties resolved by the mean of all best thresholds."""
    counts = grid_accuracy_counts(scores, is_same, grid)
    return float(grid[counts == counts.max()].mean())


def accuracy_at(scores: np.ndarray, is_same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly at ``threshold`` (score > t same, score < t different)."""
    correct = np.count_nonzero(scores[is_same] > threshold) + np.count_nonzero(scores[~is_same] < threshold)
    return correct / len(scores)


def k_fold_accuracy(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    is_same: np.ndarray,
    folds: np.ndarray,
    grid_steps: int = 10000,
) -> FoldAccuracy:
    """k-fold verification accuracy with a given fold of each pair (0 .. k-1), as in evaluation.m."""
    a, b, same = _check_pairs(emb_a, emb_b, is_same)
    folds = np.asarray(folds, dtype=np.int64)
    if folds.shape != same.shape:
        raise ValueError(f"folds must have one entry per pair ({len(same)}), got shape {folds.shape}")
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError(f"need at least two folds, got {len(ids)}")
    grid = threshold_grid(grid_steps)
    accs, thrs = np.empty(len(ids)), np.empty(len(ids))
    one_hot = (folds[None, :] == ids[:, None]).astype(np.float64)
    fold_sums = one_hot @ (a + b)  # sum of both sides' features per fold
    total = fold_sums.sum(axis=0)
    ab, aa, bb = (np.einsum("nd,nd->n", x, y) for x, y in ((a, b), (a, a), (b, b)))
    for k, fold in enumerate(ids):
        test = folds == fold
        train = ~test
        mu = (total - fold_sums[k]) / (2 * np.count_nonzero(train))
        # cosine of (a - mu, b - mu), expanded so that each fold costs two matrix-vector products
        a_mu, b_mu, mu_mu = a @ mu, b @ mu, mu @ mu
        norms = np.sqrt(np.maximum(aa - 2 * a_mu + mu_mu, 1e-24) * np.maximum(bb - 2 * b_mu + mu_mu, 1e-24))
        scores = (ab - a_mu - b_mu + mu_mu) / norms
        thrs[k] = best_threshold(scores[train], same[train], grid)
        accs[k] = accuracy_at(scores[test], same[test], thrs[k])
    return FoldAccuracy(accs, thrs, float(accs.mean()), float(accs.std(ddof=1)))


def lfw_10fold(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    is_same: np.ndarray,
    n_folds: int = 10,
    grid_steps: int = 10000,
) -> FoldAccuracy:
    """LFW View 2 accuracy: pairs in pairs.txt order, folds = ``n_folds`` consecutive equal blocks
    (600 pairs each for the 6,000 official pairs). Paper Tables 3 and 4, LFW column."""
    a, b, same = _check_pairs(emb_a, emb_b, is_same)
    n = len(same)
    if n_folds < 2 or n % n_folds:
        raise ValueError(f"n_folds={n_folds} must be >= 2 and divide the number of pairs ({n})")
    return k_fold_accuracy(a, b, same, np.repeat(np.arange(n_folds), n // n_folds), grid_steps)


def ytf_10fold(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    is_same: np.ndarray,
    splits: np.ndarray,
    grid_steps: int = 10000,
) -> FoldAccuracy:
    """YouTube Faces accuracy over the official splits (10 x 500 video pairs); ``emb_a``/``emb_b`` are
    video features (:func:`video_features`), ``splits`` 0-based (``PairList.folds``). Paper Tables 3 and 4, YTF."""
    return k_fold_accuracy(emb_a, emb_b, is_same, splits, grid_steps)


def video_features(frame_features: np.ndarray, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A video's feature is the mean of its frames' features (``rows``: video -> frame rows, see
    :func:`~sphereface_lib.data.protocols.video_rows`). Frames holding NaN or infinity are named with their video."""
    out: dict[str, np.ndarray] = {}
    for video, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"video {video!r} has no frames")
        r = np.asarray(r)
        frames = np.asarray(frame_features[r], dtype=np.float64)
        require_finite(frames, f"frame_features of video {video!r}", r, what="frame rows")
        out[video] = frames.mean(axis=0).astype(np.float32)
    return out


def cosine_scores(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair (row i of ``emb_a`` with row i of ``emb_b``)."""
    a, b, _ = _check_pairs(emb_a, emb_b, np.zeros(len(emb_a), bool))
    return np.einsum("nd,nd->n", _normalize(a), _normalize(b))


@dataclass(frozen=True)
class RocResult:
    """ROC of a verification test: false and true accept rates per threshold, AUC, EER, TAR at given FARs."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float
    eer: float
    tar_at_far: dict[float, float]


def tar_at_far(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    """Highest true accept rate on the ROC whose false accept rate does not exceed ``target``."""
    ok = far <= target
    return float(tar[ok].max()) if ok.any() else 0.0


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """Rate where false accepts equal false rejects, interpolated linearly along the ROC."""
    frr = 1.0 - tar
    diff = far - frr  # increases along the ROC
    k = int(np.searchsorted(diff, 0.0))
    if k == 0:
        return float(far[0])
    if k == len(diff):
        return float(far[-1])
    w = -diff[k - 1] / (diff[k] - diff[k - 1])
    return float(far[k - 1] + w * (far[k] - far[k - 1]))


def roc(scores: np.ndarray, is_same: np.ndarray, fars: Sequence[float] = (1e-3, 1e-2)) -> RocResult:
    """ROC curve (scikit-learn ``roc_curve``), its AUC, EER and TAR at each FAR in ``fars``."""
    from sklearn.metrics import auc, roc_curve  # loaded when used: it pulls scipy.stats and pandas
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(is_same, dtype=bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"scores and is_same must be 1-d of one length, got {scores.shape} and {same.shape}")
    require_finite(scores[:, None], "scores", what="pairs")
    if same.all() or not same.any():
        raise ValueError("the ROC needs both same and different pairs")
    far, tar, thr = roc_curve(same, scores, drop_intermediate=False)
    return RocResult(far, tar, thr, float(auc(far, tar)), equal_error_rate(far, tar),
                     {float(f): tar_at_far(far, tar, f) for f in fars})
