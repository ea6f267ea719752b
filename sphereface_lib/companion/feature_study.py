"""Low-dimensional feature studies of notebooks 02 and 03 (SphereFace, CVPR 2017, Fig. 2 and Fig. 5).

A few identities of a packed dataset are split into training and held-out test images; small backbones
with a 2-D or 3-D feature layer are trained on the training images through the model cache
(:func:`~sphereface_lib.training.train_cached`) with softmax, modified softmax or A-Softmax heads, and
the angles of the learned features are measured:

* angles theta_j between a feature and each class weight W_j (the quantity the heads act on, Eq. 1-7);
* the per-image angular margin ``min_{j != y} theta_j - theta_y`` (positive = classified by angle);
* angles between pairs of features (positive pairs: same identity; negative pairs: different
  identities), and from them the *maximal intra-class* and *minimal inter-class* angles of Section 3.3 /
  Fig. 5, literally (max / min over pairs) or robustly (a quantile of each pair distribution);
* bootstrap spreads of these statistics over the test images (resampling images within each identity).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from filelock import FileLock
import torch

from ..data.packed import PackedDataset, PackedWriter
from ..evaluation.features import extract_features
from ..losses import Head
from ..training import TrainConfig, TrainResult, train_cached

ANGULAR_HEADS = ("modified_softmax", "asoftmax")
STUDY_HEADS = ("softmax", *ANGULAR_HEADS)


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class IdentitySplit:
    """Training and held-out test rows of the chosen identities of ``dataset`` (labels renumbered 0..k-1)."""

    dataset: PackedDataset
    source_labels: tuple[int, ...]
    names: tuple[str, ...]
    train_rows: np.ndarray
    train_labels: np.ndarray
    test_rows: np.ndarray
    test_labels: np.ndarray

    @property
    def identities(self) -> int:
        return len(self.source_labels)


def choose_identities(dataset: PackedDataset, identities: int, test_fraction: float, seed: int = 0) -> IdentitySplit:
    """The ``identities`` identities with the most images (ties: lower label), each split at random into
    training images and ``test_fraction`` held-out test images (at least one of each)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    counts = np.bincount(dataset.labels, minlength=dataset.num_identities)
    if not 2 <= identities <= int((counts >= 2).sum()):
        raise ValueError(
            f"identities={identities}: need 2 .. {int((counts >= 2).sum())} identities with >= 2 images in "
            f"{dataset.root}; lower the 'identities' parameter")
    chosen = np.argsort(-counts, kind="stable")[:identities]
    rng = np.random.default_rng(seed)
    train_rows, train_labels, test_rows, test_labels = [], [], [], []
    for new_label, label in enumerate(chosen):
        rows = rng.permutation(np.flatnonzero(dataset.labels == label))
        n_test = min(len(rows) - 1, max(1, int(round(test_fraction * len(rows)))))
        test_rows.append(np.sort(rows[:n_test]))
        train_rows.append(np.sort(rows[n_test:]))
        test_labels.append(np.full(n_test, new_label))
        train_labels.append(np.full(len(rows) - n_test, new_label))
    return IdentitySplit(
        dataset=dataset,
        source_labels=tuple(int(c) for c in chosen),
        names=tuple(dataset.identities[c] for c in chosen),
        train_rows=np.concatenate(train_rows), train_labels=np.concatenate(train_labels).astype(np.int64),
        test_rows=np.concatenate(test_rows), test_labels=np.concatenate(test_labels).astype(np.int64),
    )


def write_training_subset(split: IdentitySplit, cache_dir: str | os.PathLike) -> PackedDataset:
    """The split's training images as a packed dataset under ``cache_dir/feature_study/``."""
    return write_subset(split.dataset, split.train_rows, split.train_labels, split.names, cache_dir, "feature_study",
                        {"source_labels": list(split.source_labels)})


def write_subset(src: PackedDataset, rows: np.ndarray, labels: np.ndarray, names: Sequence[str],
                 cache_dir: str | os.PathLike, folder: str, extra: dict | None = None) -> PackedDataset:
    """Rows of ``src`` relabelled ``labels`` (identities ``names``) as a packed dataset under
    ``cache_dir/<folder>/`` (written once, atomically, named by a hash of the source manifest and the rows;
    safe when processes race)."""
    blob = json.dumps({"source": str(src.root.resolve()), "manifest": dataclasses.asdict(src.manifest),
                       "rows": np.asarray(rows).tolist(), "labels": np.asarray(labels).tolist(),
                       "names": list(names)}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    parent = Path(cache_dir) / folder
    parent.mkdir(parents=True, exist_ok=True)
    root = parent / f"subset-{key}"
    if (root / "manifest.json").is_file():
        return PackedDataset(root)
    with FileLock(str(parent / f"subset-{key}.lock")):
        if not (root / "manifest.json").is_file():
            h, w, c = src.manifest.image_shape
            with PackedWriter(root, height=h, width=w, channels=c, source=f"{src.manifest.source} subset",
                              version=src.manifest.version, identities=list(names), overwrite=True,
                              extra={"subset_of": src.root.name, **(extra or {})}) as wr:
                wr.add(np.asarray(src.images[rows]), np.asarray(labels, dtype=np.int64), [src.keys[r] for r in rows])
    return PackedDataset(root)


# -------------------------------------------------------------------------------------- training


def feature_config(
    data_path: str | os.PathLike,
    head: str,
    *,
    feat_dim: int,
    m: int = 4,
    lambda_min: float = 5.0,
    anneal_fraction: float = 0.5,
    backbone: str = "sphereface4",
    width: float = 0.25,
    iterations: int = 500,
    batch_size: int = 64,
    lr: float = 0.02,
    seed: int = 0,
) -> TrainConfig:
    """The training config of one low-dimensional feature model: ``head`` in :data:`STUDY_HEADS`.

    For A-Softmax, ``m`` and the official lambda annealing lambda = max(lambda_min, 1000 / (1 + gamma t))
    (Section 4.1), with gamma chosen so that lambda reaches ``lambda_min`` after ``anneal_fraction`` of the
    iterations (the official gamma 0.12 assumes 28k iterations). The learning rate drops tenfold at 60%
    and 85% of the iterations (the official solver's shape)."""
    if head not in STUDY_HEADS:
        raise ValueError(f"head={head!r}: choose one of {', '.join(STUDY_HEADS)}")
    if not 0.0 < lambda_min < 1000.0 or not 0.0 < anneal_fraction <= 1.0:
        raise ValueError(f"need 0 < lambda_min < 1000 and 0 < anneal_fraction <= 1, got {lambda_min}, {anneal_fraction}")
    kwargs: dict = {}
    if head == "asoftmax":
        gamma = (1000.0 / lambda_min - 1.0) / max(1.0, anneal_fraction * iterations)
        kwargs = {"m": m, "lambda_schedule": {"base": 1000.0, "gamma": gamma, "power": 1.0, "lambda_min": lambda_min}}
    steps = sorted({max(1, int(0.6 * iterations)), max(2, int(0.85 * iterations))})
    return TrainConfig.from_dict({
        "data": {"path": str(data_path), "sampler": "random", "flip": True, "prefetch": 2},
        "model": {"backbone": backbone, "width": width, "feat_dim": feat_dim},
        "head": {"name": head, "kwargs": kwargs},
        "optim": {"iterations": iterations, "batch_size": batch_size, "lr": lr,
                  "lr_steps": [s for s in steps if s < iterations] or [iterations]},
        "run": {"out_dir": "runs/feature_study", "seed": seed, "device": "auto", "log_every": 50,
                "checkpoint_every": iterations, "progress": False},
    }, source="feature_study.feature_config")


def class_weights(head: Head) -> np.ndarray:
    """The class weights W_j (num_classes, feat_dim) of a softmax, modified softmax or A-Softmax head."""
    weight = head.fc.weight if hasattr(head, "fc") else getattr(head, "weight", None)
    if weight is None:
        raise TypeError(f"{type(head).__name__} has no class weights; use one of {', '.join(STUDY_HEADS)}")
    return weight.detach().cpu().double().numpy()


@dataclass
class FeatureModel:
    """One trained model's raw features (no flip) of the split's training and test images, and its weights."""

    result: TrainResult
    train_features: np.ndarray
    test_features: np.ndarray
    weights: np.ndarray


def train_feature_model(config: TrainConfig, split: IdentitySplit, cache_dir: str | os.PathLike) -> FeatureModel:
    """Train ``config`` (or load it from the model cache) and extract its features of the split's images."""
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its config; the notebook tabulates it
        result = train_cached(config, cache_dir)
    images = split.dataset.images
    features = {
        part: extract_features(result.backbone, images, rows, flip="none", progress=False).astype(np.float64)
        for part, rows in (("train", split.train_rows), ("test", split.test_rows))
    }
    return FeatureModel(result, features["train"], features["test"], class_weights(result.head))


# ------------------------------------------------------------------------------------ statistics


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (the projection onto the hypersphere)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def angles_to_weights(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """theta_j in degrees between each feature and each class weight W_j: shape (N, num_classes)."""
    return np.degrees(np.arccos(np.clip(unit(features) @ unit(weights).T, -1.0, 1.0)))


def angular_margins(features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per image, min_{j != y} theta_j - theta_y in degrees (> 0: the nearest weight direction is its own)."""
    theta = angles_to_weights(features, weights)
    rows = np.arange(len(labels))
    own = theta[rows, labels]
    theta[rows, labels] = np.inf
    return theta.min(axis=1) - own


def pair_angles(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles in degrees between all pairs of features: (positive pairs: same label, negative pairs)."""
    u = unit(features)
    angles = np.degrees(np.arccos(np.clip(u @ u.T, -1.0, 1.0)))
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return angles[i, j][same], angles[i, j][~same]


@dataclass(frozen=True)
class AngleSummary:
    """Maximal intra-class and minimal inter-class pair angles (degrees), with bootstrap spreads (std).

    ``quantile`` = 1 is the paper's literal definition (max over positive pairs, min over negative pairs);
    q < 1 takes the q-quantile of positive-pair angles and the (1 - q)-quantile of negative-pair angles.
    """

    quantile: float
    max_intra: float
    min_inter: float
    max_intra_std: float
    min_inter_std: float

    @property
    def gap(self) -> float:
        """min inter - max intra (> 0: separated, the criterion of Section 3.3)."""
        return self.min_inter - self.max_intra

    @property
    def separated(self) -> bool:
        return self.gap > 0


def _pair_extremes(features: np.ndarray, labels: np.ndarray, quantile: float) -> tuple[float, float]:
    pos, neg = pair_angles(features, labels)
    return float(np.quantile(pos, quantile)), float(np.quantile(neg, 1.0 - quantile))


def bootstrap_std(
    statistic: Callable[[np.ndarray], np.ndarray | float], labels: np.ndarray, resamples: int, seed: int = 0,
) -> np.ndarray:
    """Standard deviation of ``statistic(rows)`` over ``resamples`` resamplings of the rows with replacement
    within each label (a stratified bootstrap of the test images); zeros when ``resamples`` < 2."""
    if resamples < 2:
        return np.zeros_like(np.atleast_1d(np.asarray(statistic(np.arange(len(labels))), dtype=np.float64)))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    draws = [np.atleast_1d(np.asarray(statistic(np.concatenate([rng.choice(g, len(g)) for g in groups])),
                                      dtype=np.float64)) for _ in range(resamples)]
    return np.std(np.stack(draws), axis=0, ddof=1)


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, reduce: Callable[[np.ndarray], float], resamples: int,
    seed: int = 0,
) -> tuple[float, float]:
    """(reduce(a) - reduce(b), its bootstrap std) for two per-image measurements of the same test images
    (paired: each resample draws the same images for both)."""
    diff = float(reduce(a) - reduce(b))
    std = bootstrap_std(lambda rows: reduce(a[rows]) - reduce(b[rows]), labels, resamples, seed)
    return diff, float(std[0])


def angle_summary(features: np.ndarray, labels: np.ndarray, quantile: float = 1.0, resamples: int = 0,
                  seed: int = 0) -> AngleSummary:
    """The :class:`AngleSummary` of ``features``; spreads from ``resamples`` bootstrap resamples.

    Duplicated rows of a bootstrap resample are dropped from the pairs (a pair of an image with itself
    would put a zero angle among the positive pairs).
    """
    if not 0.5 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0.5, 1], got {quantile}")
    max_intra, min_inter = _pair_extremes(features, labels, quantile)

    def stat(rows: np.ndarray) -> np.ndarray:
        rows = np.unique(rows)
        return np.array(_pair_extremes(features[rows], labels[rows], quantile))

    std = bootstrap_std(stat, labels, resamples, seed)
    return AngleSummary(quantile, max_intra, min_inter, float(std[0]), float(std[1]))


def head_accuracy(features: np.ndarray, labels: np.ndarray, result: TrainResult) -> float:
    """Test accuracy of the head's own decision rule without margin: argmax W x + b (softmax), argmax
    ||x|| cos theta_j (modified softmax and A-Softmax at test time, Section 3.2)."""
    x = torch.from_numpy(features).float()
    with torch.no_grad():
        if hasattr(result.head, "fc"):
            scores = result.head(x)
        else:
            scores = x @ torch.nn.functional.normalize(result.head.weight.detach().float(), dim=1).T
    return float((scores.argmax(1).numpy() == labels).mean())


def angle_accuracy(features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Accuracy of assigning each feature to the class weight at the smallest angle (angle alone)."""
    return float((angles_to_weights(features, weights).argmin(1) == labels).mean())


def norm_spread(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean over identities of the coefficient of variation of ||x|| (radial spread within a class)."""
    norms = np.linalg.norm(features, axis=1)
    return float(np.mean([norms[labels == c].std() / norms[labels == c].mean() for c in np.unique(labels)]))


def monotone_verdict(values: Sequence[float], spreads: Sequence[float], decreasing: bool) -> tuple[bool, float]:
    """(every step moves the stated way, the smallest step in the stated direction divided by the larger
    spread of its two ends) for a statistic over an ordered parameter (e.g. m = 1..4)."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(spreads, dtype=np.float64)
    steps = (v[:-1] - v[1:]) if decreasing else (v[1:] - v[:-1])
    scale = np.maximum(np.maximum(s[:-1], s[1:]), 1e-12)
    return bool(np.all(steps > 0)), float(np.min(steps / scale))


__all__ = [
    "ANGULAR_HEADS", "STUDY_HEADS", "AngleSummary", "FeatureModel", "IdentitySplit", "angle_accuracy",
    "angle_summary", "angles_to_weights", "angular_margins", "bootstrap_difference", "bootstrap_std", "choose_identities",
    "class_weights", "feature_config", "head_accuracy", "monotone_verdict", "norm_spread", "pair_angles",
    "train_feature_model", "unit", "write_training_subset",
]


def fig5_statistics(features_by_m: dict[int, np.ndarray], labels: np.ndarray, rows: np.ndarray | None = None,
                    separated_from: int = 3) -> dict[str, float]:
    """The three Fig. 5 effects on the images ``rows`` (all when None; repeats dropped), max / min over pairs as
    the paper defines them: ``intra_shrinks`` = minus the least-squares slope of the maximal intra-class angle on
    m, ``inter_grows`` = the slope of the minimal inter-class angle, ``min_gap`` = the smallest
    min inter - max intra over m >= ``separated_from`` (degrees; each > 0 when the paper's statement holds)."""
    rows = np.arange(len(labels)) if rows is None else np.unique(rows)
    margins = sorted(features_by_m)
    summary = {m: angle_summary(features_by_m[m][rows], labels[rows], 1.0) for m in margins}
    slope = lambda v: float(np.polyfit(margins, v, 1)[0])  # noqa: E731
    large = [m for m in margins if m >= separated_from] or margins[-1:]
    return {"intra_shrinks": -slope([summary[m].max_intra for m in margins]),
            "inter_grows": slope([summary[m].min_inter for m in margins]),
            "min_gap": min(summary[m].gap for m in large)}
