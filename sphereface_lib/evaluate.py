"""Command line: evaluate any face model on LFW, YouTube Faces or MegaFace with this library's exact protocols.

A replacement for the official MATLAB LFW evaluation (SphereFace's ``evaluation.m``) and the MegaFace devkit::

    python -m sphereface_lib.evaluate lfw --features lfw.npz --pairs pairs.txt
    python -m sphereface_lib.evaluate ytf --features ytf_frames.npy --keys ytf_frames.txt --splits splits.txt
    python -m sphereface_lib.evaluate megaface --probes facescrub.npz --distractors megaface.npy \\
        --distractor-keys megaface.txt --distractor-list megaface_1M.txt
    python -m sphereface_lib.evaluate lfw --images data/lfw_packed --model model.pt2 --pairs pairs.txt

Features come keyed by image: an ``.npz`` holding ``features`` (N, D) and ``keys`` (N,), or an ``.npy``
(N, D) with ``--keys`` (a text file, one key per line). Or ``--images`` (a packed dataset of aligned crops)
with ``--model`` (a ``torch.export`` ``.pt2`` file, batch dimension dynamic, or a TorchScript file) mapping
(B, C, H, W) normalized as (x - 127.5) / 128 to (B, D); the test feature is then [f(x), f(flip x)] as in
the paper (Sec. 4.1). Keys: LFW images ``Name/NNNN`` (``Name/Name_NNNN.jpg`` is accepted too), YTF frames ``Person/number/<frame>`` (a video's feature is the mean of its frames) or the
video ``Person/number`` itself, MegaFace probes ``Identity/<image>`` (the identity is the key's folder).

The result is written as JSON (``--out``, by default beside the input and named after it; atomically) and
summarized as a table on stdout, with the path it went to. A feature holding NaN or infinity, or all zero, is an
error naming its file and rows, never a number. ``--missing skip`` scores LFW / YTF without the pairs whose images
(videos) have no features and reports how many were skipped; MegaFace marks a TAR whose FAR leaves fewer than 50
expected false accepts among the impostor scores.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .data.packed import PackedFormatError, atomic_write_text
from .data.protocols import PairList, ProtocolFormatError, read_lfw_pairs, read_ytf_splits
from .errors import UserError, read_utf8, run_command

if TYPE_CHECKING:
    import torch

    from .evaluation import FoldAccuracy

_SHOW = 5  # missing or non-finite keys named in an error message
_CHUNK = 65536  # rows checked for finiteness at a time
_LFW_FILE_NAME = re.compile(r"^(?:.*/)?([^/]+)/\1_(\d+)(?:\.\w+)?$")  # Name/Name_0001.jpg -> Name/0001


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _shown(keys: Sequence[str]) -> str:
    """The first few ``keys`` for a message, '...' when there are more."""
    return ", ".join(repr(k) for k in keys[:_SHOW]) + (", ..." if len(keys) > _SHOW else "")


def _text_file(path: Path, option: str, what: str) -> str:
    """The UTF-8 text of ``path``; a :class:`UserError` naming ``option`` when it is absent, a folder or not UTF-8."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give the file itself ({what})")
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file ({what})")
    return read_utf8(path, option)


@dataclass
class FeatureTable:
    """Features keyed by image: ``array`` (N, D) for a features file, else ``compute(rows)`` (a model's)."""

    keys: tuple[str, ...]
    source: str
    array: np.ndarray | None = None
    compute: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.index: dict[str, int] = {}
        for row, key in enumerate(self.keys):
            if self.index.setdefault(key, row) != row:
                raise UserError(f"{self.source}: key {key!r} appears twice (rows {self.index[key]} and {row}); "
                                "give every image one key")

    def add_lfw_aliases(self) -> None:
        """Also find ``Name/Name_NNNN.jpg``-style keys under the protocol key ``Name/NNNN``."""
        for row, key in enumerate(self.keys):
            match = _LFW_FILE_NAME.match(key)
            if match:
                self.index.setdefault(f"{match.group(1)}/{int(match.group(2)):04d}", row)

    def missing(self, wanted: Sequence[str]) -> list[str]:
        """The ``wanted`` keys (each once, in order) that the table lacks."""
        return [k for k in dict.fromkeys(wanted) if k not in self.index]

    def rows(self, wanted: Sequence[str], named_by: str, hint: str, other_fix: str = "") -> np.ndarray:
        """Rows of the ``wanted`` keys; a :class:`UserError` naming the missing ones, how many, and the fix."""
        missing = self.missing(wanted)
        if missing:
            raise UserError(
                f"{self.source} lacks {len(missing):,} of the {len(dict.fromkeys(wanted)):,} keys that {named_by} "
                f"names ({_shown(missing)}); give features for every one of them ({hint}){other_fix}")
        return np.fromiter((self.index[k] for k in wanted), np.int64, len(wanted))

    def named_rows(self, rows: Sequence[int]) -> str:
        """``rows`` of the table by key, the first few, for a message."""
        return _shown([self.keys[r] for r in rows])

    def check_usable(self, feats: np.ndarray, rows: np.ndarray) -> None:
        """A :class:`UserError` naming the rows of ``feats`` (``rows`` of the table) that hold NaN or infinity,
        or are all zero (no direction: no cosine score can be computed from them)."""
        non_finite: list[int] = []
        zero: list[int] = []
        for start in range(0, len(feats), _CHUNK):
            block = feats[start:start + _CHUNK]
            non_finite.extend(rows[start:start + _CHUNK][~np.isfinite(block).all(axis=1)].tolist())
            zero.extend(rows[start:start + _CHUNK][~block.any(axis=1)].tolist())
        if non_finite:
            raise UserError(f"{self.source}: {_count(len(non_finite), 'feature row')} needed here hold NaN or "
                            f"infinity ({self.named_rows(non_finite)}); no result is computed from non-finite "
                            "features: check the model (a diverged training gives such features) or the file")
        if zero:
            raise UserError(f"{self.source}: {_count(len(zero), 'feature row')} needed here "
                            f"{'is' if len(zero) == 1 else 'are'} all zero ({self.named_rows(zero)}); a zero "
                            "feature has no direction, so no cosine score can be computed from it: check the model "
                            "(one that outputs zeros is broken or untrained) or the file")

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` (float16 and float64 keep their type, anything else becomes float32), each finite
        and nonzero."""
        unique, inverse = np.unique(rows, return_inverse=True)
        feats = np.asarray(self.array[unique] if self.array is not None else self.compute(unique))
        if feats.dtype not in (np.float16, np.float64):
            feats = feats.astype(np.float32)
        self.check_usable(feats, unique)
        return feats[inverse.reshape(-1)]


def _read_keys(path: Path, n: int, features: str, option: str) -> tuple[str, ...]:
    text = _text_file(path, option, "one key per line, one line per feature row")
    keys = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(keys) != n:
        raise UserError(f"{option} {path} has {_count(len(keys), 'key')}, {features} has {_count(n, 'row')}; "
                        "give one key per feature row, in row order")
    return keys


def load_feature_file(path: str | Path, keys_path: str | Path | None = None, option: str = "--features",
                      keys_required: bool = True, keys_option: str = "--keys") -> FeatureTable:
    """A features file: ``.npz`` with ``features`` (N, D) and ``keys`` (N,), or ``.npy`` (memory-mapped) with
    a keys text file; without ``keys_required``, rows without keys are keyed by their row number."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give the features file itself (.npz or .npy)")
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{option} {path} is empty (0 bytes); write the features again (np.save / np.savez)")
    keys: tuple[str, ...] | None = None
    if path.suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"{option} {path}: not a readable .npz ({exc}); save it with np.savez(path, "
                            "features=..., keys=...)") from None
        if "features" not in archive:
            raise UserError(f"{option} {path} has no array 'features' (it has {sorted(archive.files)}); save it "
                            "with np.savez(path, features=..., keys=...)")
        try:
            features = archive["features"]
            if "keys" in archive and keys_path is None:
                keys = tuple(str(k) for k in archive["keys"])
        except ValueError:
            raise UserError(f"{option} {path}: its arrays must be plain (not object arrays): save keys as "
                            "np.array(keys, dtype=str)") from None
    elif path.suffix == ".npy":
        try:
            features = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"{option} {path}: not a readable .npy ({exc}); save it with np.save") from None
    else:
        raise UserError(f"{option} {path}: expected a .npz (features + keys) or a .npy with --keys")
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise UserError(f"{option} {path}: features must be a numeric (N, D) array, got {features.dtype} "
                        f"{features.shape}")
    if len(features) == 0 or features.shape[1] == 0:
        raise UserError(f"{option} {path} holds no features (shape {features.shape}); give at least one row of "
                        "at least one number")
    if keys is None and keys_path is None and not keys_required:
        keys = tuple(str(i) for i in range(len(features)))
    if keys is None:
        if keys_path is None:
            raise UserError(f"{option} {path} holds no keys: add an array 'keys' to the .npz or pass a keys "
                            "text file (one key per feature row)")
        keys = _read_keys(Path(keys_path), len(features), f"{option} {path}", keys_option)
    if len(keys) != len(features):
        raise UserError(f"{option} {path}: {_count(len(keys), 'key')} for {_count(len(features), 'feature row')}")
    return FeatureTable(keys, f"{option} {path}", array=features)


def check_device(device: str | None) -> str | None:
    """``--device`` as given when this machine has it; a :class:`UserError` naming it and the fix otherwise."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a device; give cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu "
                            "(the default)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {_count(torch.cuda.device_count(), 'GPU')} "
                            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type != "cpu":
        raise UserError(f"--device {device}: expected cpu, cuda or cuda:N")
    return device


def load_model(path: Path, device: str) -> "torch.nn.Module":
    """A model saved with ``torch.export.save`` (``.pt2``, batch dimension dynamic) or ``torch.jit.save``."""
    import torch

    from ._export import ExportedModel, read_exported

    if path.suffix == ".pt2":
        return ExportedModel(read_exported(path, "--model").to(device))
    try:
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(
            f"--model {path}: not a TorchScript model "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); save yours with torch.export.save("
            "torch.export.export(model, (x,), dynamic_shapes=...), 'model.pt2')") from None


def load_model_features(images: str | Path, model: str | Path, flip: str, batch_size: int,
                        device: str | None) -> FeatureTable:
    """Features of a packed dataset's images from a saved model, computed only for the rows asked for."""
    from .data.packed import PackedDataset
    from .evaluation import extract_features
    from .evaluation.checks import BadFeaturesError

    try:
        dataset = PackedDataset(images)
    except (PackedFormatError, FileNotFoundError) as exc:
        raise UserError(f"--images {images}: {exc}") from None
    if Path(model).is_dir():
        raise UserError(f"--model {model} is a folder; give the model file (a torch.export .pt2 or TorchScript)")
    if not Path(model).is_file():
        raise UserError(f"--model {model}: no such file (a torch.export .pt2 or a TorchScript model)")
    net = load_model(Path(model), check_device(device) or "cpu")
    keys = tuple(dataset.keys)
    height, width, channels = dataset.manifest.image_shape
    crops = f"{channels}-channel {height}x{width} crops"

    def take(rows: np.ndarray) -> np.ndarray:
        try:
            return extract_features(net, dataset.images, rows, flip=flip, batch_size=batch_size, device=device,
                                    progress=False)
        except BadFeaturesError as exc:
            what = "hold NaN or infinity" if "NaN" in str(exc) else "are all zero"
            raise UserError(
                f"--model {model}: its features of {_count(len(exc.rows), 'image')} of --images {images} {what} "
                f"({_shown([keys[r] for r in exc.rows])}, in the first batch that has any); no cosine score can be "
                "computed from them: check the model (an untrained or diverged one gives such features)") from None
        except (RuntimeError, ValueError, AssertionError) as exc:  # an exported model's shape guard asserts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"--model {model} cannot compute features of --images {images} ({crops}): {first}; give a model "
                "made for these crops (channels and size), or pack the images as the model expects") from None

    return FeatureTable(keys, f"--images {images}", compute=take)


def _protocol(reader: Callable[[str], PairList], path: str, option: str) -> PairList:
    try:
        return reader(path)
    except (ProtocolFormatError, FileNotFoundError) as exc:
        raise UserError(f"{option}: {exc}") from None


def _finite(result: dict[str, Any], what: str) -> dict[str, Any]:
    """``result`` unchanged when every number in it is finite; a bug otherwise (features were checked)."""
    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, float) and not math.isfinite(x):
            raise RuntimeError(f"{what}: a non-finite number in the result {result}")
    walk(result)
    return result


def _roc_summary(scores: np.ndarray, is_same: np.ndarray) -> dict[str, Any]:
    from .evaluation import roc

    r = roc(scores, is_same, fars=(1e-3, 1e-2))
    return {"auc": r.auc, "eer": r.eer, "tar_at_far": {repr(f): t for f, t in r.tar_at_far.items()}}


def _fold_result(acc: FoldAccuracy, scores: np.ndarray, pairs: PairList) -> dict[str, Any]:
    return {
        "pairs": len(pairs), "same_pairs": int(pairs.is_same.sum()), "folds": len(acc.accuracies),
        "accuracy": acc.mean, "std": acc.std,
        "fold_accuracies": [float(a) for a in acc.accuracies],
        "fold_thresholds": [float(t) for t in acc.thresholds],
        "roc": _roc_summary(scores, pairs.is_same),
    }


_SKIP_HINT = "or pass --missing skip to score the protocol without the pairs that need them"


def _skipped(pairs: PairList, missing: list[str], what: str) -> tuple[PairList, dict[str, Any]]:
    """``pairs`` without those naming a ``missing`` key, and the JSON record of what was skipped; a
    :class:`UserError` when too few are left to score."""
    if not missing:
        return pairs, {"skipped_pairs": 0, f"missing_{what}s": []}
    kept, drop = pairs.without(missing)
    if len(np.unique(kept.folds)) < 2 or kept.is_same.all() or not kept.is_same.any():
        raise UserError(f"--missing skip leaves {_count(len(kept), 'pair')} of {pairs.source}'s {len(pairs):,}: too "
                        "few to score (at least two folds and both same and different pairs are needed); give "
                        "features for more of the protocol's images")
    return kept, {"skipped_pairs": int(drop.sum()), f"missing_{what}s": missing}


def evaluate_lfw(table: FeatureTable, pairs_path: str, missing: str = "error") -> dict[str, Any]:
    """LFW accuracy over the folds of ``pairs.txt`` (View 2: 10 x 600 pairs), as in evaluation.m; with ``missing``
    ``"skip"``, the pairs whose images the table lacks are left out (and counted in the result)."""
    from .evaluation import cosine_scores, k_fold_accuracy

    pairs = _protocol(read_lfw_pairs, pairs_path, f"--pairs {pairs_path}")
    if pairs.n_folds < 2:
        raise UserError(f"--pairs {pairs_path} has one fold (View 1, for model selection); evaluate on View 2's "
                        "pairs.txt (10 folds)")
    table.add_lfw_aliases()
    skipped: dict[str, Any] = {}
    if missing == "skip":
        pairs, skipped = _skipped(pairs, table.missing(pairs.keys_a + pairs.keys_b), "image")
    rows = table.rows(pairs.keys_a + pairs.keys_b, str(pairs_path), "keys 'Name/NNNN', numbered as in pairs.txt",
                      f", {_SKIP_HINT}")
    feats = table.take(rows)
    a, b = feats[: len(pairs)], feats[len(pairs):]
    acc = k_fold_accuracy(a, b, pairs.is_same, pairs.folds)
    return {"protocol": "lfw", "pairs_file": str(pairs_path), **_fold_result(acc, cosine_scores(a, b), pairs),
            **skipped}


def evaluate_ytf(table: FeatureTable, splits_path: str, missing: str = "error") -> dict[str, Any]:
    """YouTube Faces accuracy over the splits (10 x 500 video pairs); a video's feature is its frames' mean; with
    ``missing`` ``"skip"``, the pairs of videos without features are left out (and counted in the result)."""
    from .evaluation import cosine_scores, ytf_10fold

    pairs = _protocol(read_ytf_splits, splits_path, f"--splits {splits_path}")
    frames: dict[str, list[int]] = {}
    for row, key in enumerate(table.keys):
        frames.setdefault(key.rpartition("/")[0], []).append(row)
    absent = [v for v in dict.fromkeys(pairs.keys_a + pairs.keys_b) if v not in table.index and v not in frames]
    skipped: dict[str, Any] = {}
    if missing == "skip":
        pairs, skipped = _skipped(pairs, absent, "video")
    elif absent:
        raise UserError(
            f"{table.source} has no features for {len(absent):,} of the "
            f"{len(dict.fromkeys(pairs.keys_a + pairs.keys_b)):,} videos that {splits_path} names ({_shown(absent)}); "
            f"give keys 'Person/number/<frame>' for frames or 'Person/number' for a video, {_SKIP_HINT}")
    videos = list(dict.fromkeys(pairs.keys_a + pairs.keys_b))
    direct = [v for v in videos if v in table.index]
    video_feature: dict[str, np.ndarray] = {}
    if direct:
        for v, f in zip(direct, table.take(table.rows(direct, splits_path, ""))):
            video_feature[v] = f
    by_frames = [v for v in videos if v not in video_feature]
    if by_frames:
        rows = np.concatenate([np.asarray(frames[v], np.int64) for v in by_frames])
        feats = table.take(rows).astype(np.float64)
        start = 0
        for v in by_frames:
            n = len(frames[v])
            video_feature[v] = feats[start:start + n].mean(axis=0).astype(np.float32)
            start += n
    a = np.stack([video_feature[k] for k in pairs.keys_a])
    b = np.stack([video_feature[k] for k in pairs.keys_b])
    acc = ytf_10fold(a, b, pairs.is_same, pairs.folds)
    return {"protocol": "ytf", "splits_file": str(splits_path), "videos": len(videos),
            "videos_from_frames": len(by_frames), **_fold_result(acc, cosine_scores(a, b), pairs), **skipped}


def _select(table: FeatureTable, list_path: str | None, option: str) -> np.ndarray:
    """Rows named by a list file (one key per line), or every row without one."""
    if list_path is None:
        return np.arange(len(table.keys))
    path = Path(list_path)
    text = _text_file(path, option, "one image key per line")
    wanted = [line.strip() for line in text.splitlines() if line.strip()]
    if not wanted:
        raise UserError(f"{option} {path} names no image")
    return table.rows(wanted, f"{option} {path}", "keyed as in the list")


def evaluate_megaface(probes: FeatureTable, distractors: FeatureTable, probe_list: str | None,
                      distractor_list: str | None, counts: Sequence[int] | None, fars: Sequence[float],
                      max_rank: int, seed: int) -> dict[str, Any]:
    """MegaFace Challenge 1 identification (rank-1, CMC) and verification (TAR at FAR) per distractor count."""
    from .evaluation import MEGAFACE_DISTRACTORS, megaface_evaluate
    from .evaluation.far import MIN_FALSE_ACCEPTS, usable_far

    probe_dim, distractor_dim = probes.array.shape[1], distractors.array.shape[1]  # MegaFace reads feature files
    if probe_dim != distractor_dim:
        raise UserError(f"{distractors.source} holds {distractor_dim}-d features, {probes.source} {probe_dim}-d ones; "
                        "give probes and distractors from one model (features of one length)")
    probe_rows = _select(probes, probe_list, "--probe-list")
    identities = [probes.keys[r].rpartition("/")[0] for r in probe_rows]
    if any(not i for i in identities):
        bad = [probes.keys[r] for r, i in zip(probe_rows, identities) if not i][:_SHOW]
        raise UserError(f"{probes.source}: probe keys must be 'Identity/<image>' (the identity names the probe's "
                        f"mates), got {', '.join(map(repr, bad))}")
    names, labels = np.unique(np.asarray(identities), return_inverse=True)
    probe_feats = probes.take(probe_rows)
    if distractor_list is None and distractors.array is not None:  # the whole file, read chunk by chunk
        dist_feats = distractors.array
        distractors.check_usable(dist_feats, np.arange(len(dist_feats)))
    else:
        dist_feats = distractors.take(_select(distractors, distractor_list, "--distractor-list"))
    m = len(dist_feats)
    if counts is None:
        counts = [d for d in MEGAFACE_DISTRACTORS if d <= m] or [m]
    elif max(counts) > m:
        raise UserError(f"--distractor-counts {max(counts):,} exceeds the {m:,} distractors given")
    if np.bincount(labels).max() < 2:
        raise UserError(f"{probes.source}: no probe identity has two images; identification needs a probe and "
                        "a gallery mate of one identity")
    results = megaface_evaluate(probe_feats, labels, dist_feats, counts, max_rank=max_rank, fars=fars, seed=seed,
                                progress=False)
    return {
        "protocol": "megaface", "probes": len(probe_rows), "probe_identities": len(names), "distractors": m,
        "seed": seed, "min_false_accepts": MIN_FALSE_ACCEPTS,
        "results": [
            {"distractors": r.distractors, "rank1": r.rank1, "cmc": [float(c) for c in r.cmc],
             "tar_at_far": {repr(f): t for f, t in r.tar_at_far.items()},
             "threshold_at_far": {repr(f): t for f, t in r.threshold_at_far.items()},
             "usable_fars": [repr(f) for f in usable_far(r.num_impostors, fars)],
             "probe_pairs": r.num_probe_pairs, "genuine_pairs": r.num_genuine, "impostor_pairs": r.num_impostors}
            for r in (results[d] for d in sorted(results))],
    }


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of a result."""
    if result["protocol"] in ("lfw", "ytf"):
        name = "LFW" if result["protocol"] == "lfw" else "YouTube Faces"
        roc = result["roc"]
        tars = "  ".join(f"TAR@FAR={f} {100 * t:.2f}%" for f, t in roc["tar_at_far"].items())
        what = "image" if result["protocol"] == "lfw" else "video"
        missing = result.get(f"missing_{what}s", [])
        skipped = (f" ({_count(result['skipped_pairs'], 'pair')} skipped: {_count(len(missing), what)} without "
                   f"features, {_shown(missing)})" if missing else "")
        return (f"{name}: {result['pairs']:,} pairs, {result['folds']} folds{skipped}\n"
                f"  accuracy  {100 * result['accuracy']:.2f}% +- {100 * result['std']:.2f}%\n"
                f"  AUC {roc['auc']:.4f}  EER {100 * roc['eer']:.2f}%  {tars}")
    fars = list(result["results"][0]["tar_at_far"])
    lines = [f"MegaFace: {result['probes']:,} probes of {result['probe_identities']:,} identities, "
             f"{result['distractors']:,} distractors",
             f"  {'distractors':>11}  {'rank-1':>7}" + "".join(f"  {'TAR@FAR=' + f:>14}" for f in fars)]
    few = False
    for r in result["results"]:
        marks = {f: " " if f in r["usable_fars"] else "*" for f in fars}
        few = few or "*" in marks.values()
        lines.append(f"  {r['distractors']:>11,}  {100 * r['rank1']:>6.2f}%"
                     + "".join(f"  {100 * r['tar_at_far'][f]:>12.2f}%{marks[f]}" for f in fars))
    if few:
        lines.append(f"  * too few impostor scores: impostor pairs x FAR < {result['min_false_accepts']} expected "
                     "false accepts, so this TAR rests on a handful of scores (use more distractors or a higher FAR)")
    return "\n".join(lines)


def _features_args(p: argparse.ArgumentParser, option: str = "--features", keys: str = "--keys",
                   what: str = "the images") -> None:
    p.add_argument(option, metavar="FILE", help=f"features of {what}: .npz (features, keys) or .npy with {keys}")
    p.add_argument(keys, metavar="FILE", help="keys of the .npy's rows, one per line")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x.replace("_", "")) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,100,1000, got {text!r}")
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"distractor counts must be >= 1, got {text!r}")
    return counts


def _fars(text: str) -> list[float]:
    try:
        fars = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates such as 1e-6,1e-5, got {text!r}")
    if not all(0 < f < 1 for f in fars):
        raise argparse.ArgumentTypeError(f"false accept rates must lie strictly between 0 and 1, got {text!r}")
    return fars


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments: one sub-command per protocol."""
    parser = argparse.ArgumentParser(
        prog="python -m sphereface_lib.evaluate", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n")[2:]))
    sub = parser.add_subparsers(dest="protocol", required=True, metavar="{lfw,ytf,megaface}")
    for name, help_ in (("lfw", "LFW View 2 10-fold accuracy (paper Tables 3-4)"),
                        ("ytf", "YouTube Faces 10-fold accuracy (paper Tables 3-4)")):
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "lfw":
            p.add_argument("--pairs", required=True, metavar="FILE", help="LFW View 2 pairs.txt")
        else:
            p.add_argument("--splits", required=True, metavar="FILE",
                           help="YTF splits: the official splits.txt or a csv 'split,video_a,video_b,same'")
        _features_args(p)
        p.add_argument("--images", metavar="DIR", help="a packed dataset of aligned crops (instead of --features)")
        p.add_argument("--model", metavar="FILE", help="a torch.export .pt2 or TorchScript model computing --images' features")
        p.add_argument("--flip", choices=("concat", "sum", "none"), default="concat",
                       help="with --model: [f(x), f(flip x)] (the paper's, default), their sum, or f(x)")
        p.add_argument("--batch-size", type=int, default=256, help="with --model (default 256)")
        p.add_argument("--device", help="with --model: cpu, cuda, cuda:1 ... (default cpu)")
        p.add_argument("--missing", choices=("error", "skip"), default="error",
                       help="images (LFW) or videos (YTF) without features: an error (default), or skip the pairs "
                            "that need them and report how many")
        p.add_argument("--out", metavar="FILE",
                       help=f"the JSON result (default: <features>_{name}_result.json beside --features, or "
                            f"<model>_{name}_result.json beside --images)")
    p = sub.add_parser("megaface", help="MegaFace Challenge 1 identification and verification (paper Table 5)",
                       description="MegaFace Challenge 1: rank-1 / CMC and TAR at FAR under D distractors")
    _features_args(p, "--probes", "--probe-keys", "the probe set (FaceScrub), keys 'Identity/<image>'")
    _features_args(p, "--distractors", "--distractor-keys",
                   "the distractor set (MegaFace; rows without keys are keyed by row number)")
    p.add_argument("--probe-list", metavar="FILE", help="the probe keys to use, one per line (default: all)")
    p.add_argument("--distractor-list", metavar="FILE", help="the distractor keys to use, one per line (default: all)")
    p.add_argument("--distractor-counts", type=_counts, metavar="D,D,...",
                   help="distractor set sizes (default: those of 10,100,...,1000000 that fit)")
    p.add_argument("--fars", type=_fars, default=[1e-6], metavar="F,F,...", help="false accept rates (default 1e-6)")
    p.add_argument("--max-rank", type=int, default=10, help="CMC up to this rank (default 10)")
    p.add_argument("--seed", type=int, default=0, help="the permutation that draws the nested distractor sets")
    p.add_argument("--out", metavar="FILE", help="the JSON result (default: <probes>_megaface_result.json beside "
                                                 "--probes)")
    return parser


def _table(args: argparse.Namespace) -> FeatureTable:
    if (args.features is None) == (args.images is None):
        raise UserError(f"{args.protocol}: give either --features FILE or --images DIR with --model FILE")
    if args.images is not None:
        if args.model is None:
            raise UserError(f"{args.protocol}: --images {args.images} needs --model FILE (a torch.export .pt2 or TorchScript model)")
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
        return load_model_features(args.images, args.model, args.flip, args.batch_size, args.device)
    if args.model is not None:
        raise UserError(f"--model {args.model} computes features of --images DIR; with --features it is not used")
    return load_feature_file(args.features, args.keys)


def _out_path(args: argparse.Namespace) -> Path:
    """Where the JSON result goes: ``--out``, or beside the input, named after it; a :class:`UserError` when that
    is a folder or its folder does not exist (checked before any work)."""
    if args.out is not None:
        out = Path(args.out)
    elif args.protocol == "megaface":
        out = Path(args.probes).with_name(f"{Path(args.probes).stem}_megaface_result.json")
    elif args.features is not None:
        out = Path(args.features).with_name(f"{Path(args.features).stem}_{args.protocol}_result.json")
    else:
        images = Path(args.images).resolve()
        out = images.parent / f"{Path(args.model).stem}_{args.protocol}_result.json"
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / f'{args.protocol}_result.json'}")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist; create it or write elsewhere")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, write the JSON result, print the table and where it went; exit status 2 for a user's mistake."""
    args = build_parser().parse_args(argv)
    if args.protocol == "megaface":
        if args.probes is None or args.distractors is None:
            raise UserError("megaface: give --probes FILE and --distractors FILE (features keyed by image)")
        if args.max_rank < 1:
            raise UserError(f"--max-rank must be >= 1, got {args.max_rank}")
        out = _out_path(args)
        result = evaluate_megaface(
            load_feature_file(args.probes, args.probe_keys, "--probes", keys_option="--probe-keys"),
            load_feature_file(args.distractors, args.distractor_keys, "--distractors", keys_required=False,
                              keys_option="--distractor-keys"),
            args.probe_list, args.distractor_list, args.distractor_counts, args.fars, args.max_rank, args.seed)
    else:
        table = _table(args)
        out = _out_path(args)
        evaluate = evaluate_lfw if args.protocol == "lfw" else evaluate_ytf
        result = evaluate(table, args.pairs if args.protocol == "lfw" else args.splits, args.missing)
    _finite(result, args.protocol)
    atomic_write_text(out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def cli() -> int:
    """The ``sphereface-evaluate`` console script: :func:`main` with a user's mistake as one ``error:`` line."""
    return run_command(main)


if __name__ == "__main__":
    raise SystemExit(cli())
