"""What notebooks 04-07 share: open a benchmark, train a table row's model through the model cache, evaluate it
on the LFW / YTF 10-fold and MegaFace protocols, and decide a claim against the run-to-run spread.

A *row* is one line of the paper's tables, named by a string: ``softmax`` (original softmax, Eq. 1),
``asoftmax_m1`` .. ``asoftmax_m4`` (A-Softmax, Eq. 7, Table 3), ``lsoftmax``, ``softmax_contrastive``,
``triplet``, ``softmax_center``, ``cosface``, ``arcface`` (Table 4 and later references). A row's model is
the :class:`Recipe` (backbone, width, iterations, ...) plus the row's head, trained by ``train_cached`` so
that every notebook asking for the same model on the same data shares one training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.packed import PackedDataset
from ..errors import UserError
from . import statistics as S
from .project import project_root
from .claims import make_all_of_claim, make_claim  # noqa: F401 -- the notebooks build their claims as E.make_claim
from ..data.protocols import PairList, pair_rows, read_lfw_pairs, read_ytf_splits, video_rows
from ..data.synthetic import synthetic_benchmark
from ..evaluation import FoldAccuracy, MegaFaceResult, extract_features, k_fold_accuracy, megaface_evaluate
from ..evaluation import video_features, ytf_10fold
from ..losses import LambdaSchedule
from ..training import TrainConfig, TrainResult, train_cached, train_missing

PROJECT_ROOT = project_root()

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
    #: what the benchmark left out of its protocols (pairs whose image the data preparation could not align)
    notes: tuple[str, ...] = ()


def resolve_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the project root (papermill runs in notebooks/)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _real_part(root: Path, part: str) -> tuple[PackedDataset, Path | None]:
    folder, protocol, command = REAL_LAYOUT[part]
    pack = root / folder
    official = f"from the official download: `{command.replace('DATA', str(root))}` (see data_prep/README.md)"
    fix = official if part == "ytf" else (
        "from a folder-per-identity set, build a new real-data folder with every part: `python -m data_prep.openset "
        "--src <folder of identities> --out <new folder> --test-identities 20 --megaface-probe 6 "
        f"--megaface-distractors 4` and pass it as data; or this part alone {official}")
    if (root / "manifest.json").is_file():
        raise ExperimentError(f"data={root} is one packed dataset, not a real-data folder ({', '.join(REAL_LAYOUT)} "
                              f"sub-folders); {fix}")
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
        name = f"real data ({root.relative_to(PROJECT_ROOT) if root.is_relative_to(PROJECT_ROOT) else data})"
    opened: dict[str, Any] = {"train": found["train"][0]}
    notes: list[str] = []
    for part in parts:
        if part == "train":
            continue
        pack, protocol = found[part]
        opened[part] = pack
        if part == "lfw":
            opened["lfw_pairs"], note = _aligned_pairs(read_lfw_pairs(protocol), pack)
            notes += [note] if note else []
        if part == "ytf":
            opened["ytf_splits"] = read_ytf_splits(protocol)
    return Benchmark(name=name, notes=tuple(notes), **opened)


#: at most this share of a protocol's pairs may be skipped for images the data preparation could not align
MAX_SKIPPED_PAIRS = 0.01


def _aligned_pairs(pairs: PairList, pack: PackedDataset) -> tuple[PairList, str | None]:
    """``pairs`` less those naming an image missing from ``pack`` (MTCNN found no face in it), with a sentence saying
    which were skipped; an error when more than :data:`MAX_SKIPPED_PAIRS` of them would be."""
    absent = sorted(set(pairs.keys_a + pairs.keys_b) - set(pack.keys))
    if not absent:
        return pairs, None
    kept, drop = pairs.without(absent)
    lines = ", ".join(str(n) for n in pairs.lines[drop][:10])
    if drop.sum() > MAX_SKIPPED_PAIRS * len(pairs):
        raise ExperimentError(
            f"{pairs.source}: {drop.sum():,} of its {len(pairs):,} pairs (lines {lines}...) name images missing from "
            f"{pack.root} ({', '.join(absent[:5])}...): more than {MAX_SKIPPED_PAIRS:.0%}; pack the protocol's own "
            "image folder with data_prep (see data_prep/README.md)")
    return kept, (f"{Path(pairs.source).name}: {drop.sum()} of {len(pairs):,} pairs skipped "
                  f"(line{'s' if drop.sum() > 1 else ''} {lines}): "
                  f"{', '.join(absent)} could not be aligned (the data preparation's failures.tsv)")


def carve_validation(bench: Benchmark, identities: int, cache_dir: str | Path, seed: int = 0,
                     max_pairs_per_fold: int = 300, folds: int = 10) -> Benchmark:
    """A benchmark for choosing recipes and head settings without looking at any test set: ``identities``
    training identities (with >= 2 images, drawn with ``seed``) are held out, the others train, and the held-out
    images are verified LFW-style: ``folds`` folds of identity-disjoint matched and mismatched pairs, as many
    per fold as every fold offers (at most ``max_pairs_per_fold``)."""
    from .feature_study import write_subset

    train = bench.train
    counts = np.bincount(train.labels, minlength=train.num_identities)
    eligible = np.flatnonzero(counts >= 2)
    if not folds * 2 <= identities <= len(eligible) - 2:
        raise ExperimentError(f"carve_validation: identities={identities} must lie in [{2 * folds}, "
                              f"{len(eligible) - 2}] for {train.root.name} ({len(eligible)} identities with >= 2 images)")
    rng = np.random.default_rng([seed, 0x76616C])
    held = np.sort(rng.choice(eligible, identities, replace=False))
    keep = np.setdiff1d(np.arange(train.num_identities), held)
    keep_rows = np.flatnonzero(np.isin(train.labels, keep))
    relabel = np.full(train.num_identities, -1)
    relabel[keep] = np.arange(len(keep))
    held_rows = np.flatnonzero(np.isin(train.labels, held))
    relabel_held = np.full(train.num_identities, -1)
    relabel_held[held] = np.arange(len(held))
    names = train.identities
    part = write_subset(train, keep_rows, relabel[train.labels[keep_rows]], [names[i] for i in keep], cache_dir,
                        "validation", {"held_out_seed": seed, "held_out_identities": int(identities)})
    val = write_subset(train, held_rows, relabel_held[train.labels[held_rows]], [names[i] for i in held], cache_dir,
                       "validation", {"held_out_seed": seed, "role": "validation images"})
    by_fold = [held[f::folds] for f in range(folds)]
    rows_of = {int(i): np.flatnonzero(val.labels == relabel_held[i]) for i in held}
    offer = min(sum(len(rows_of[int(i)]) * (len(rows_of[int(i)]) - 1) // 2 for i in ids) for ids in by_fold)
    n = min(max_pairs_per_fold, offer)
    ka, kb, same, fold_of = [], [], [], []
    for f, ids in enumerate(by_fold):
        cand = [(a, b) for i in ids for x, a in enumerate(rows_of[int(i)]) for b in rows_of[int(i)][x + 1:]]
        matched = [cand[c] for c in rng.permutation(len(cand))[:n]]
        mismatched: dict[tuple[int, int], None] = {}
        while len(mismatched) < n:
            i, j = rng.choice(ids, 2, replace=False)
            mismatched.setdefault((int(rng.choice(rows_of[int(i)])), int(rng.choice(rows_of[int(j)]))))
        for (a, b), s in [*((m, True) for m in matched), *((m, False) for m in mismatched)]:
            ka.append(val.keys[a]), kb.append(val.keys[b]), same.append(s), fold_of.append(f)
    pairs = PairList.from_pairs(ka, kb, same, fold_of, source=f"validation pairs of {train.root.name}")
    return Benchmark(name=f"{bench.name}, validation: {identities} held-out training identities",
                     train=part, lfw=val, lfw_pairs=pairs)


# ------------------------------------------------------------------------------------------- training


#: the official solver (sphereface_solver.prototxt, Section 4.1): 28k iterations, lr divided by 10 at 16k and 24k;
#: lambda = max(5, 1000 / (1 + 0.12 i)) reaches lambda_min = 5 at i = (1000 / 5 - 1) / 0.12 = 1,658
OFFICIAL_ITERATIONS = 28_000
OFFICIAL_LR_STEPS = (16_000, 24_000)
OFFICIAL_LAMBDA_MIN_AT = (1000.0 / 5.0 - 1.0) / 0.12

#: head settings of the compared losses, chosen on validation identities carved from the training set
#: (scripts/recipe_study.py, docs/recipe.md); a row's entry overrides the head's defaults
BASELINE_KWARGS: dict[str, dict[str, float]] = {
    "cosface": {"s": 16.0, "m": 0.35},  # the paper's s = 64 does not train at this scale (validation 83-85%)
    "arcface": {"s": 16.0, "m": 0.3},  # s = 64: validation 55-62%
    "softmax_contrastive": {"lambda_": 0.5},
    "softmax_center": {"lambda_": 0.003},  # the center-loss paper's value
    "triplet": {"alpha": 0.2},  # FaceNet's value
}


@dataclass(frozen=True)
class Recipe:
    """A CPU- or paper-sized training recipe shared by every row of a table: the official solver's shape (SGD,
    momentum 0.9, weight decay 5e-4, lr divided by 10 at 16/28 and 24/28 of the run; lambda annealed as
    1000 / (1 + gamma i) down to 5, reached at the official 1,658/28,000 of the run), scaled by *fractions of the
    run*, so that a short CPU run or a few hundred real images keep the official proportions. The defaults are
    the recipe chosen in docs/recipe.md for the default profile of notebooks 04-07."""

    backbone: str = "sphereface4"
    width: float = 0.25
    feat_dim: int = 64
    iterations: int = 2000
    batch_size: int = 64
    lr: float = 0.05
    pk_k: int = 4  #: images per identity in a batch of the pair/triplet rows (sampler "pk")
    #: fraction of the run at which A-Softmax's lambda reaches 5: the official run's 1,658 / 28,000 (rounds 1-3 of
    #: docs/recipe.md moved it to 0.30 for the exact gradient, at which the official point collapsed)
    lambda_min_at: float = 0.0592
    lr_steps_at: tuple[float, ...] = tuple(s / OFFICIAL_ITERATIONS for s in OFFICIAL_LR_STEPS)  #: fractions
    #: A-Softmax's backward: "official" (the Caffe layer's, ``ASoftmax``'s docstring) or "exact" (autograd of Eq. 7)
    gradient: str = "official"
    #: where L-Softmax (which back-propagates its exact gradient, as the official L-Softmax layer does) reaches
    #: lambda = 5; None: ``lambda_min_at``. Round 5 of docs/recipe.md: the exact gradient collapses at 5.9%
    lsoftmax_lambda_min_at: float | None = 0.30

    def lambda_schedule(self, lambda_min: float = 5.0, base: float = 1000.0,
                        at: float | None = None) -> dict[str, float]:
        """The official annealing, max(lambda_min, base / (1 + gamma i)), reaching lambda_min at the fraction
        ``at`` of the run (default ``lambda_min_at``)."""
        gamma = (base / lambda_min - 1.0) / max(1.0, (self.lambda_min_at if at is None else at) * self.iterations)
        return {"base": base, "gamma": gamma, "power": 1.0, "lambda_min": lambda_min}

    def lr_steps(self) -> list[int]:
        """The iterations at which the learning rate drops tenfold."""
        return sorted({s for s in (round(f * self.iterations) for f in self.lr_steps_at) if 0 < s < self.iterations})

    def high_lr_fraction_near_lambda_min(self, within: float = 1.0) -> float:
        """Fraction of the iterations before the first lr step run at lambda <= lambda_min + ``within`` (the
        official run: 14.6k of its 16k, 0.91)."""
        s = LambdaSchedule(**self.lambda_schedule())
        first = (self.lr_steps() or [self.iterations])[0]
        return sum(s(i) <= s.lambda_min + within for i in range(first)) / first


def _head(row: str, recipe: Recipe) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(head name, head kwargs, sampler, sampler kwargs) of a row."""
    pk = ("pk", {"k": recipe.pk_k})
    annealed = {"lambda_schedule": recipe.lambda_schedule()}
    if row.startswith("asoftmax_m") and row[len("asoftmax_m"):] in ("1", "2", "3", "4"):
        return "asoftmax", {"m": int(row[len("asoftmax_m"):]), "gradient": recipe.gradient, **annealed}, "random", {}
    table: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
        "softmax": ("softmax", {}, "random", {}),
        # L-Softmax rows anneal with the SphereFace solver's schedule, at their own point (round 5)
        "lsoftmax": ("lsoftmax", {"m": 4, "lambda_schedule": recipe.lambda_schedule(
            at=recipe.lsoftmax_lambda_min_at)}, "random", {}),
        "softmax_contrastive": ("softmax_contrastive", {}, *pk),
        "triplet": ("triplet", {}, *pk),
        "softmax_center": ("softmax_center", {}, "random", {}),
        "cosface": ("cosface", {}, "random", {}),
        "arcface": ("arcface", {}, "random", {}),
    }
    if row not in table:
        raise ExperimentError(f"row {row!r} is unknown; choose among {', '.join(ROW_LABELS)}")
    head, kwargs, sampler, sampler_kwargs = table[row]
    return head, {**kwargs, **BASELINE_KWARGS.get(row, {})}, sampler, sampler_kwargs


def train_config(bench: Benchmark, row: str, recipe: Recipe, seed: int,
                 head_kwargs: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training configuration of ``row`` under ``recipe`` on the benchmark's training set; ``head_kwargs``
    override the row's head settings (the validation study of the compared losses)."""
    head, kwargs, sampler, sampler_kwargs = _head(row, recipe)
    return TrainConfig.from_dict({
        "data": {"path": str(bench.train.root), "sampler": sampler, "sampler_kwargs": sampler_kwargs},
        "model": {"backbone": recipe.backbone, "width": recipe.width, "feat_dim": recipe.feat_dim},
        "head": {"name": head, "kwargs": {**kwargs, **(head_kwargs or {})}},
        "optim": {"iterations": recipe.iterations, "batch_size": recipe.batch_size, "lr": recipe.lr,
                  "lr_steps": recipe.lr_steps()},
        "run": {"seed": seed, "device": "auto", "amp": "auto", "progress": False,
                "log_every": max(1, recipe.iterations // 20), "checkpoint_every": recipe.iterations},
    }, source=f"row {row!r}")


def train_row(bench: Benchmark, row: str, recipe: Recipe, seed: int, cache_dir: str | Path,
              head_kwargs: Mapping[str, Any] | None = None) -> TrainResult:
    """The trained model of ``row`` (from ``<cache_dir>/models`` when trained before)."""
    return train_cached(train_config(bench, row, recipe, seed, head_kwargs), resolve_path(cache_dir) / "models")


def train_rows(bench: Benchmark, rows: Sequence[str], seeds: Sequence[int], recipe: Recipe,
               cache_dir: str | Path) -> None:
    """Train the models of every (row, seed) missing from ``<cache_dir>/models``, side by side (one process per
    core, fixed threads: the same bits as :func:`train_row` alone)."""
    train_missing([train_config(bench, row, recipe, seed) for row in rows for seed in seeds],
                  resolve_path(cache_dir) / "models")


# ----------------------------------------------------------------------------------------- evaluation


def features(model: TrainResult, dataset: PackedDataset, rows: np.ndarray | None = None) -> np.ndarray:
    """Flip-concatenated features of the images ``rows`` (all when None) of ``dataset`` (the paper's test feature,
    Sec. 4.1)."""
    return extract_features(model.backbone, dataset.images, rows, flip="concat", progress=False)


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
    """One line per (row, seed): the final training loss (the last logged window), and the 10-fold mean accuracy,
    fold std and per-fold accuracies (in %) of each protocol (column ``<protocol>_folds``: what the paired
    statistics use)."""
    if not seeds:
        raise ExperimentError("seeds must name at least one seed, e.g. seeds = [0, 1]")
    train_rows(bench, rows, seeds, recipe, cache_dir)
    out = []
    for row in rows:
        for seed in seeds:
            model = train_row(bench, row, recipe, seed, cache_dir)
            line: dict[str, Any] = {"row": row, "seed": seed, "final_loss": model.metrics[-1]["loss"]}
            for protocol in protocols:
                acc = {"lfw": lfw_accuracy, "ytf": ytf_accuracy}[protocol](model, bench)
                line[protocol] = 100 * acc.mean
                line[f"{protocol}_fold_std"] = 100 * acc.std
                line[f"{protocol}_folds"] = 100 * np.asarray(acc.accuracies, dtype=np.float64)
            out.append(line)
    return pd.DataFrame(out)


def summary(table: pd.DataFrame, metrics: Sequence[str], by: str = "row") -> pd.DataFrame:
    """Mean over seeds of each metric, with the run-to-run std (ddof 1); the std column is left out when every
    row has one run, and reads "-" on a one-run row (one run has no spread)."""
    g = table.groupby(by, sort=False)
    runs = g.size()
    cols: dict[str, pd.Series] = {}
    for m in metrics:
        cols[m] = g[m].mean()
        if runs.max() > 1:
            std = g[m].std(ddof=1)
            cols[f"{m}_seed_std"] = std if runs.min() > 1 else std.round(2).astype(object).where(runs > 1, "-")
    return pd.DataFrame(cols)


# ------------------------------------------------------------------------------------------- claims


def fold_matrix(table: pd.DataFrame, row: str, metric: str, by: str = "row") -> np.ndarray:
    """Per-fold accuracies of one row, shape (seeds, folds), seeds in increasing order (rows that share seeds
    and test pairs line up cell by cell: the pairing of :func:`~.statistics.paired_difference`)."""
    lines = table[table[by] == row].sort_values("seed")
    if lines.empty:
        raise ExperimentError(f"no results for {by}={row!r}; the table holds {sorted(table[by].unique())}")
    return np.stack([np.asarray(v, dtype=np.float64) for v in lines[f"{metric}_folds"]])


def compare(table: pd.DataFrame, better: str, worse: str, metric: str, by: str = "row") -> S.Estimate:
    """``better`` minus ``worse`` in accuracy points, paired by seed and fold (:func:`~.statistics.paired_difference`)."""
    a, b = fold_matrix(table, better, metric, by), fold_matrix(table, worse, metric, by)
    if a.shape != b.shape:
        raise ExperimentError(f"compare: {better} has {a.shape[0]} seeds, {worse} {b.shape[0]}: train both with the same seeds")
    return S.paired_difference(a, b)


def compare_pooled(table: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str, by: str = "row") -> S.Estimate:
    """The mean of several ``(better, worse)`` differences that share seeds and test folds (e.g. A-Softmax minus
    softmax at every depth), pooled cell by cell (:func:`~.statistics.pooled_cells`): the shared folds and runs
    are counted once, not as independent estimates."""
    cells = []
    for better, worse in pairs:
        a, b = fold_matrix(table, better, metric, by), fold_matrix(table, worse, metric, by)
        if a.shape != b.shape or (cells and a.shape != cells[0].shape):
            first = cells[0].shape if cells else a.shape
            raise ExperimentError(f"compare_pooled: every row needs the same seeds and folds; {better} has "
                                  f"{a.shape}, {worse} {b.shape}, the first pair {first}")
        cells.append(a - b)
    return S.pooled_cells(np.stack(cells))


def trend_over(table: pd.DataFrame, rows: Sequence[str], x: Sequence[float], metric: str, by: str = "row") -> S.Estimate:
    """Slope of ``metric`` on ``x`` over ``rows`` (in that order), per seed and fold (:func:`~.statistics.trend`)."""
    return S.trend(np.asarray(x, dtype=np.float64), np.stack([fold_matrix(table, r, metric, by) for r in rows]))


@dataclass(frozen=True)
class MegaFaceHits:
    """Per-pair outcomes of one model on the MegaFace-like probes, for identity-clustered comparisons: rank-1 hit of
    each (probe, gallery mate) pair and true accept of each genuine pair at ``far``, with the identity of each."""

    rank1: np.ndarray
    rank1_identity: np.ndarray
    accept: np.ndarray
    accept_identity: np.ndarray
    far: float
    distractors: int


def megaface_hits(model: TrainResult, bench: Benchmark, result: MegaFaceResult, far: float, seed: int = 0) -> MegaFaceHits:
    """The per-pair outcomes behind ``result`` (one distractor count, from :func:`megaface_results` with ``far``
    among its FARs): the mate beats every distractor (rank 1); the genuine score passes the FAR's threshold.
    Checked against ``result``'s rank-1 and TAR."""
    probe = features(model, bench.megaface_probe)
    dis = bench.megaface_distractors
    order = np.sort(np.random.default_rng(seed).permutation(len(dis.labels))[: result.distractors])
    from .feature_study import unit

    p = unit(probe)
    best = np.full(len(p), -np.inf)
    for s in range(0, len(order), 4096):
        d = unit(features(model, dis, order[s:s + 4096]))
        best = np.maximum(best, (p @ d.T).max(axis=1))
    labels = np.asarray(bench.megaface_probe.labels)
    i, j = np.nonzero((labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool))
    scores = np.einsum("ij,ij->i", p[i], p[j])
    rank1 = scores > best[i]
    genuine = i < j
    accept = scores[genuine] > result.threshold_at_far[far]
    if abs(rank1.mean() - result.rank1) > 2e-3 or abs(accept.mean() - result.tar_at_far[far]) > 2e-3:
        raise RuntimeError(f"megaface_hits: rank-1 {rank1.mean():.4f} / TAR {accept.mean():.4f} differ from "
                           f"megaface_evaluate's {result.rank1:.4f} / {result.tar_at_far[far]:.4f}")
    return MegaFaceHits(rank1, labels[i], accept, labels[i][genuine], far, result.distractors)


def megaface_difference(hits: Mapping[tuple[str, int], MegaFaceHits], better: str, worse: str, seeds: Sequence[int],
                        kind: str = "rank1", n_resamples: int = 2000) -> S.Estimate:
    """``better`` minus ``worse`` in points of rank-1 (``kind`` "rank1") or TAR ("accept") on the same probe pairs,
    with two levels of sampling: the training run (seed) and the probe identity
    (:func:`~.statistics.seeded_rate_difference`)."""
    if kind not in ("rank1", "accept"):
        raise ExperimentError(f"megaface_difference: kind must be 'rank1' or 'accept', got {kind!r}")
    ids = getattr(hits[better, seeds[0]], f"{kind}_identity")
    for key in [(row, s) for row in (better, worse) for s in seeds]:
        if not np.array_equal(getattr(hits[key], f"{kind}_identity"), ids):
            raise ExperimentError(f"megaface_difference: {key} was evaluated on other probe pairs; evaluate every "
                                  "model at the same distractor count and FAR")
    a = np.stack([getattr(hits[better, s], kind) for s in seeds])
    b = np.stack([getattr(hits[worse, s], kind) for s in seeds])
    return S.seeded_rate_difference(a, b, ids, n_resamples=n_resamples)


def seed_spread(results: Mapping[tuple[str, int], MegaFaceResult], rows: Sequence[str], seeds: Sequence[int],
                far: float, distractors: int) -> pd.DataFrame:
    """Per row: rank-1 and TAR at ``far`` (in %) of each seed, their mean and their seed-to-seed std (ddof 1; left
    out for one seed): the run-to-run spread that a one-run MegaFace verdict cannot see."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        line: dict[str, float] = {}
        for name, value in (("rank1", lambda r: r.rank1), ("tar", lambda r: r.tar_at_far[far])):
            values = np.array([100 * value(results[row, s][distractors]) for s in seeds])
            line.update({f"{name} seed {s}": float(v) for s, v in zip(seeds, values)})
            line[f"{name} mean"] = float(values.mean())
            if len(seeds) > 1:
                line[f"{name} seed std"] = float(values.std(ddof=1))
        out[row] = line
    return pd.DataFrame.from_dict(out, orient="index")
