"""What notebooks 04-07 share: open a benchmark, train a table row's model through the model cache, evaluate it
on the LFW / YTF 10-fold and MegaFace protocols, and decide a claim against the run-to-run spread.

A *row* is one line of the paper's tables, named by a string: ``softmax`` (original softmax, Eq. 1),
``asoftmax_m1`` .. ``asoftmax_m4`` (A-Softmax, Eq. 7, Table 3), ``lsoftmax``, ``softmax_contrastive``,
``triplet``, ``softmax_center``, ``cosface``, ``arcface`` (Table 4 and later references). A row's model is
the :class:`Recipe` (backbone, width, iterations, ...) plus the row's head, trained by ``train_cached`` so
that every notebook asking for the same model on the same data shares one training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..data.packed import PackedDataset
from ..errors import UserError
from ..data.protocols import PairList, pair_rows, read_lfw_pairs, read_ytf_splits, video_rows
from ..data.synthetic import synthetic_benchmark
from ..evaluation import FoldAccuracy, MegaFaceResult, extract_features, k_fold_accuracy, megaface_evaluate
from ..evaluation import video_features, ytf_10fold
from ..losses import LambdaSchedule
from ..training import TrainConfig, TrainResult, train_cached

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: the official solver's iterations per epoch: CASIA-WebFace (494,414 images) in global batches of 512
#: (Section 4.1); annealing schedules are scaled to the epochs a run has seen, not to its iterations
PAPER_ITERATIONS_PER_EPOCH = 494_414 / 512

#: parts of a real-data folder: (sub-folder, protocol file, the data_prep command that writes it)
REAL_LAYOUT: dict[str, tuple[str, str | None, str]] = {
    "train": ("train", None, "python -m data_prep.casia --src CASIA-WebFace --names CASIA-WebFace/names.txt "
                             "--lfw-names lfw-names.txt --out DATA/train"),
    "lfw": ("lfw", "pairs.txt", "python -m data_prep.lfw --src lfw --pairs pairs.txt --out DATA/lfw"),
    "ytf": ("ytf", "ytf_splits.csv", "python -m data_prep.ytf --src YouTubeFaces/frame_images_DB "
                                     "--splits ytf_splits.csv --out DATA/ytf"),
    "megaface_probe": ("megaface_probe", None, "python -m data_prep.megaface --set probe --root facescrub_images "
                       "--list devkit/templatelists/facescrub_features_list.json --out DATA/megaface_probe"),
    "megaface_distractors": ("megaface_distractors", None, "python -m data_prep.megaface --set distractors "
                             "--root FlickrFinal2 --list devkit/templatelists/megaface_features_list.json_1000000_1 "
                             "--out DATA/megaface_distractors"),
}

#: display names of the rows (the paper's wording)
ROW_LABELS: dict[str, str] = {
    "softmax": "Softmax", "asoftmax_m1": "A-Softmax m=1", "asoftmax_m2": "A-Softmax m=2",
    "asoftmax_m3": "A-Softmax m=3", "asoftmax_m4": "A-Softmax m=4 (SphereFace)", "lsoftmax": "L-Softmax",
    "softmax_contrastive": "Softmax+Contrastive", "triplet": "Triplet", "softmax_center": "Softmax+Center",
    "cosface": "CosFace (later)", "arcface": "ArcFace (later)",
}


class ExperimentError(UserError):
    """Bad notebook input (a data folder, a row name, a parameter); the message names the fix."""


# ------------------------------------------------------------------------------------------ benchmarks


@dataclass(frozen=True)
class Benchmark:
    """The datasets and protocol files one experiment reads; parts a notebook did not ask for are None."""

    name: str
    train: PackedDataset
    lfw: PackedDataset | None = None
    lfw_pairs: PairList | None = None
    ytf: PackedDataset | None = None
    ytf_splits: PairList | None = None
    megaface_probe: PackedDataset | None = None
    megaface_distractors: PackedDataset | None = None


def resolve_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the project root (papermill runs in notebooks/)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _real_part(root: Path, part: str) -> tuple[PackedDataset, Path | None]:
    folder, protocol, command = REAL_LAYOUT[part]
    pack = root / folder
    fix = f"make it with `{command.replace('DATA', str(root))}` (see data_prep/README.md)"
    if not (pack / "manifest.json").is_file():
        raise ExperimentError(f"data={root}: {pack}/ is missing or not a packed dataset; {fix}")
    if protocol is None:
        return PackedDataset(pack), None
    for candidate in (root / protocol, pack / protocol):
        if candidate.is_file():
            return PackedDataset(pack), candidate
    raise ExperimentError(f"data={root}: no {protocol} in {root}/ or {pack}/; {fix}")


def open_benchmark(data: str | None, cache_dir: str | Path, parts: Sequence[str] = ("train", "lfw"),
                   size: str = "default") -> Benchmark:
    """The built-in synthetic benchmark of ``size`` (``data`` None, generated once into ``cache_dir``) or the
    real-data folder ``data`` laid out as :data:`REAL_LAYOUT`; ``parts`` are the datasets to open."""
    unknown = sorted(set(parts) - set(REAL_LAYOUT))
    if unknown:
        raise ExperimentError(f"parts={list(parts)}: unknown {unknown}; choose among {list(REAL_LAYOUT)}")
    if data is None:
        b = synthetic_benchmark(resolve_path(cache_dir) / "synthetic", size)
        found = {"train": (b.train, None), "lfw": (b.lfw, b.lfw_pairs), "ytf": (b.ytf, b.ytf_splits),
                 "megaface_probe": (b.megaface_probe, None), "megaface_distractors": (b.megaface_distractors, None)}
        name = f"synthetic ({size}, {b.root.name})"
    else:
        root = resolve_path(data)
        if not root.is_dir():
            raise ExperimentError(f"data={data!r}: {root} is not a folder; give a folder holding "
                                  f"{', '.join(v[0] + '/' for v in REAL_LAYOUT.values())} (see data_prep/README.md)")
        found = {p: _real_part(root, p) for p in dict.fromkeys(["train", *parts])}  # in order: train first
        name = f"real data ({root})"
    opened: dict[str, Any] = {"train": found["train"][0]}
    for part in parts:
        if part == "train":
            continue
        pack, protocol = found[part]
        opened[part] = pack
        if part == "lfw":
            opened["lfw_pairs"] = read_lfw_pairs(protocol)
        if part == "ytf":
            opened["ytf_splits"] = read_ytf_splits(protocol)
    return Benchmark(name=name, **opened)


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Recipe:
    """A CPU- or paper-sized training recipe shared by every row of a table (Section 4.1's solver: SGD,
    momentum 0.9, weight decay 5e-4, lr divided by 10 at 50% and 75% of the iterations). The defaults are
    the CPU-sized default profile of notebooks 04-07 (about 2.7 epochs of the default synthetic set)."""

    backbone: str = "sphereface20"
    width: float = 0.125
    feat_dim: int = 64
    iterations: int = 500
    batch_size: int = 64
    lr: float = 0.05
    pk_k: int = 4  #: images per identity in a batch of the pair/triplet rows (sampler "pk")


def _scaled(schedule: LambdaSchedule, iterations_per_epoch: float) -> dict[str, float]:
    """The official annealing per epoch of data seen: lambda after e epochs equals the official run's lambda
    after e epochs of CASIA-WebFace (the official run reaches lambda_min after about 1.7 epochs)."""
    return {"base": schedule.base, "gamma": schedule.gamma * PAPER_ITERATIONS_PER_EPOCH / iterations_per_epoch,
            "power": schedule.power, "lambda_min": schedule.lambda_min}


def _head(row: str, recipe: Recipe, train_images: int) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(head name, head kwargs, sampler, sampler kwargs) of a row."""
    pk = ("pk", {"k": recipe.pk_k})
    per_epoch = train_images / recipe.batch_size  # this run's iterations per epoch
    if row.startswith("asoftmax_m") and row[len("asoftmax_m"):] in ("1", "2", "3", "4"):
        m = int(row[len("asoftmax_m"):])
        return "asoftmax", {"m": m, "lambda_schedule": _scaled(LambdaSchedule(), per_epoch)}, "random", {}
    table: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
        "softmax": ("softmax", {}, "random", {}),
        # L-Softmax rows anneal like A-Softmax (the SphereFace solver), so the rows differ by the head alone
        "lsoftmax": ("lsoftmax", {"m": 4, "lambda_schedule": _scaled(LambdaSchedule(), per_epoch)},
                     "random", {}),
        "softmax_contrastive": ("softmax_contrastive", {}, *pk),
        "triplet": ("triplet", {}, *pk),
        "softmax_center": ("softmax_center", {}, "random", {}),
        "cosface": ("cosface", {}, "random", {}),
        "arcface": ("arcface", {}, "random", {}),
    }
    if row not in table:
        raise ExperimentError(f"row {row!r} is unknown; choose among {', '.join(ROW_LABELS)}")
    return table[row]


def train_config(bench: Benchmark, row: str, recipe: Recipe, seed: int) -> TrainConfig:
    """The training configuration of ``row`` under ``recipe`` on the benchmark's training set."""
    head, kwargs, sampler, sampler_kwargs = _head(row, recipe, len(bench.train))
    steps = [recipe.iterations // 2, (3 * recipe.iterations) // 4]
    return TrainConfig.from_dict({
        "data": {"path": str(bench.train.root), "sampler": sampler, "sampler_kwargs": sampler_kwargs},
        "model": {"backbone": recipe.backbone, "width": recipe.width, "feat_dim": recipe.feat_dim},
        "head": {"name": head, "kwargs": kwargs},
        "optim": {"iterations": recipe.iterations, "batch_size": recipe.batch_size, "lr": recipe.lr,
                  "lr_steps": [s for s in steps if s > 0]},
        "run": {"seed": seed, "device": "auto", "amp": "auto", "progress": False,
                "log_every": max(1, recipe.iterations // 10), "checkpoint_every": recipe.iterations},
    }, source=f"row {row!r}")


def train_row(bench: Benchmark, row: str, recipe: Recipe, seed: int, cache_dir: str | Path) -> TrainResult:
    """The trained model of ``row`` (from ``<cache_dir>/models`` when trained before)."""
    return train_cached(train_config(bench, row, recipe, seed), resolve_path(cache_dir) / "models")


# ----------------------------------------------------------------------------------------- evaluation


def features(model: TrainResult, dataset: PackedDataset) -> np.ndarray:
    """Flip-concatenated features of every image of ``dataset`` (the paper's test feature, Sec. 4.1)."""
    return extract_features(model.backbone, dataset.images, flip="concat", progress=False)


def lfw_accuracy(model: TrainResult, bench: Benchmark) -> FoldAccuracy:
    """LFW (or LFW-like) verification accuracy over the folds of its pairs.txt, cosine scores (Table 3/4)."""
    if bench.lfw is None or bench.lfw_pairs is None:
        raise ExperimentError("lfw_accuracy: open the benchmark with 'lfw' in parts")
    a, b = pair_rows(bench.lfw, bench.lfw_pairs)
    f = features(model, bench.lfw)
    return k_fold_accuracy(f[a], f[b], bench.lfw_pairs.is_same, bench.lfw_pairs.folds)


def ytf_accuracy(model: TrainResult, bench: Benchmark) -> FoldAccuracy:
    """YTF (or YTF-like) 10-split video verification accuracy; a video is the mean of its frames."""
    if bench.ytf is None or bench.ytf_splits is None:
        raise ExperimentError("ytf_accuracy: open the benchmark with 'ytf' in parts")
    pairs = bench.ytf_splits
    videos = video_features(features(model, bench.ytf), video_rows(bench.ytf, pairs))
    a = np.stack([videos[k] for k in pairs.keys_a])
    b = np.stack([videos[k] for k in pairs.keys_b])
    return ytf_10fold(a, b, pairs.is_same, pairs.folds)


def megaface_results(model: TrainResult, bench: Benchmark, distractor_counts: Sequence[int],
                     fars: Sequence[float] = (1e-6,)) -> dict[int, MegaFaceResult]:
    """MegaFace identification (CMC) and verification (TAR at ``fars``) for each distractor count (Table 5)."""
    if bench.megaface_probe is None or bench.megaface_distractors is None:
        raise ExperimentError("megaface_results: open the benchmark with 'megaface_probe' and "
                              "'megaface_distractors' in parts")
    available = len(bench.megaface_distractors.labels)
    counts = sorted({min(int(d), available) for d in distractor_counts})
    return megaface_evaluate(features(model, bench.megaface_probe), bench.megaface_probe.labels,
                             features(model, bench.megaface_distractors), counts, fars=fars, progress=False)


def verification_table(bench: Benchmark, rows: Sequence[str], seeds: Sequence[int], recipe: Recipe,
                       cache_dir: str | Path, protocols: Sequence[str] = ("lfw", "ytf")) -> pd.DataFrame:
    """One line per (row, seed): the 10-fold mean accuracy and fold std (in %) of each protocol."""
    if not seeds:
        raise ExperimentError("seeds must name at least one seed, e.g. seeds = [0, 1]")
    out = []
    for row in rows:
        for seed in seeds:
            model = train_row(bench, row, recipe, seed, cache_dir)
            line: dict[str, Any] = {"row": row, "seed": seed}
            for protocol in protocols:
                acc = {"lfw": lfw_accuracy, "ytf": ytf_accuracy}[protocol](model, bench)
                line[protocol] = 100 * acc.mean
                line[f"{protocol}_fold_std"] = 100 * acc.std
            out.append(line)
    return pd.DataFrame(out)


def summary(table: pd.DataFrame, metrics: Sequence[str], by: str = "row") -> pd.DataFrame:
    """Mean over seeds of each metric, with the run-to-run std (ddof 1; NaN for one seed)."""
    g = table.groupby(by, sort=False)
    cols = {}
    for m in metrics:
        cols[m] = g[m].mean()
        cols[f"{m}_seed_std"] = g[m].std(ddof=1)
    return pd.DataFrame(cols)


# ------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """A computed comparison: the effect, the spread it is weighed against, and whether it exceeds it."""

    effect: float
    spread: float
    holds: bool
    evidence: str


def _standard_error(table: pd.DataFrame, row: str, metric: str, by: str) -> tuple[float, str]:
    """Standard error of a row's mean: from the seeds when there are several, else from the 10 folds."""
    values = table.loc[table[by] == row, metric].to_numpy()
    if len(values) == 0:
        raise ExperimentError(f"no results for {by}={row!r}")
    if len(values) > 1:
        return float(values.std(ddof=1) / math.sqrt(len(values))), f"{len(values)} seeds"
    fold_std = float(table.loc[table[by] == row, f"{metric}_fold_std"].iloc[0])
    return fold_std / math.sqrt(10), "10-fold standard error (one seed)"


def beats(table: pd.DataFrame, better: str, worse: str, metric: str, by: str = "row", z: float = 2.0) -> Verdict:
    """Whether ``better``'s mean ``metric`` exceeds ``worse``'s by more than ``z`` standard errors of the
    difference (run-to-run spread over seeds when both have several, else the 10-fold standard error)."""
    mean = table.groupby(by)[metric].mean()
    missing = [r for r in (better, worse) if r not in mean.index]
    if missing:
        raise ExperimentError(f"beats: {missing} not among the table's {by} values {sorted(mean.index)}")
    effect = float(mean[better] - mean[worse])
    se_a, how_a = _standard_error(table, better, metric, by)
    se_b, how_b = _standard_error(table, worse, metric, by)
    se = math.hypot(se_a, se_b)
    how = how_a if how_a == how_b else f"{how_a} / {how_b}"
    holds = bool(effect > z * se)
    return Verdict(effect, se, holds,
                   f"{metric.upper()} {better} - {worse} = {effect:+.2f} pts vs {z:g} SE = {z * se:.2f} pts ({how})")


def rises_with(table: pd.DataFrame, x: str, metric: str, z: float = 2.0) -> Verdict:
    """Whether ``metric`` rises with ``x``: least-squares slope over every (x, seed) result greater than ``z``
    standard errors of the slope (the residual scatter includes the run-to-run spread)."""
    xs, ys = table[x].to_numpy(float), table[metric].to_numpy(float)
    if len(np.unique(xs)) < 2:
        raise ExperimentError(f"rises_with: need at least two values of {x!r}")
    if len(xs) < 3:
        raise ExperimentError("rises_with: need at least three results to estimate the slope's error")
    fit = stats.linregress(xs, ys)
    holds = bool(fit.slope > z * fit.stderr)
    return Verdict(float(fit.slope), float(fit.stderr), holds,
                   f"slope {fit.slope:+.2f} pts per unit {x} vs {z:g} SE = {z * fit.stderr:.2f} "
                   f"(linear fit over {len(xs)} results)")



def rate_beats(rates: Mapping[str, float], trials: Mapping[str, int], best: str, z: float = 2.0) -> Verdict:
    """Whether rate ``best`` (e.g. rank-1, TAR) exceeds every other rate by more than ``z`` binomial standard
    errors of the difference, sqrt(p(1-p)/n) per rate over its ``trials`` (one model each, no folds)."""
    if best not in rates:
        raise ExperimentError(f"rate_beats: {best!r} is not among {sorted(rates)}")
    se = {k: math.sqrt(max(p * (1 - p), 0.0) / trials[k]) for k, p in rates.items()}
    gaps = {k: (rates[best] - p, math.hypot(se[best], se[k])) for k, p in rates.items() if k != best}
    if not gaps:
        raise ExperimentError("rate_beats: need at least one rate to compare against")
    wins = sum(effect > z * s for effect, s in gaps.values())
    worst = min(gaps, key=lambda k: gaps[k][0] - z * gaps[k][1])
    effect, s = gaps[worst]
    return Verdict(effect, s, wins == len(gaps),
                   f"{wins}/{len(gaps)} gaps beyond {z:g} binomial SE; smallest: {best} - {worst} = "
                   f"{100 * effect:+.2f} pts vs {z:g} SE = {100 * z * s:.2f} pts")
