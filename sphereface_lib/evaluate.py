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

The result is written as JSON (``--out``, atomically) and summarized as a table on stdout.
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
from .errors import UserError, run_command

if TYPE_CHECKING:
    import torch

    from .evaluation import FoldAccuracy

_SHOW = 5  # missing or non-finite keys named in an error message
_CHUNK = 65536  # rows checked for finiteness at a time
_LFW_FILE_NAME = re.compile(r"^(?:.*/)?([^/]+)/\1_(\d+)(?:\.\w+)?$")  # Name/Name_0001.jpg -> Name/0001


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


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

    def rows(self, wanted: Sequence[str], named_by: str, hint: str) -> np.ndarray:
        """Rows of the ``wanted`` keys; a :class:`UserError` naming the missing ones and how many."""
        unique = list(dict.fromkeys(wanted))
        missing = [k for k in unique if k not in self.index]
        if missing:
            shown = ", ".join(repr(k) for k in missing[:_SHOW]) + (", ..." if len(missing) > _SHOW else "")
            raise UserError(
                f"{self.source} lacks {len(missing):,} of the {len(unique):,} keys that {named_by} names "
                f"({shown}); give features for every one of them ({hint})")
        return np.fromiter((self.index[k] for k in wanted), np.int64, len(wanted))

    def check_finite(self, feats: np.ndarray, rows: np.ndarray) -> None:
        """A :class:`UserError` naming the rows of ``feats`` (``rows`` of the table) that hold NaN or infinity."""
        bad: list[int] = []
        for start in range(0, len(feats), _CHUNK):
            ok = np.isfinite(feats[start:start + _CHUNK]).all(axis=1)
            bad.extend(rows[start:start + _CHUNK][~ok].tolist())
        if bad:
            shown = ", ".join(repr(self.keys[r]) for r in bad[:_SHOW]) + (", ..." if len(bad) > _SHOW else "")
            raise UserError(f"{self.source}: {_count(len(bad), 'feature row')} needed here hold NaN or infinity "
                            f"({shown}); no result is computed from non-finite features")

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` (float16 stays float16, anything else becomes float32), all finite."""
        unique, inverse = np.unique(rows, return_inverse=True)
        feats = self.array[unique] if self.array is not None else self.compute(unique)
        feats = np.asarray(feats, dtype=np.float16 if feats.dtype == np.float16 else np.float32)
        self.check_finite(feats, unique)
        return feats[inverse.reshape(-1)]


def _read_keys(path: Path, n: int, features: str) -> tuple[str, ...]:
    if not path.is_file():
        raise UserError(f"--keys {path}: no such file (one key per line, one line per feature row)")
    keys = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(keys) != n:
        raise UserError(f"--keys {path} has {_count(len(keys), 'key')}, {features} has {_count(n, 'row')}; "
                        "give one key per feature row, in row order")
    return keys


def load_feature_file(path: str | Path, keys_path: str | Path | None = None, option: str = "--features",
                      keys_required: bool = True) -> FeatureTable:
    """A features file: ``.npz`` with ``features`` (N, D) and ``keys`` (N,), or ``.npy`` (memory-mapped) with
    a keys text file; without ``keys_required``, rows without keys are keyed by their row number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    keys: tuple[str, ...] | None = None
    if path.suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"{option} {path}: not a readable .npz ({exc})") from None
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
        except (ValueError, OSError) as exc:
            raise UserError(f"{option} {path}: not a readable .npy ({exc})") from None
    else:
        raise UserError(f"{option} {path}: expected a .npz (features + keys) or a .npy with --keys")
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise UserError(f"{option} {path}: features must be a numeric (N, D) array, got {features.dtype} "
                        f"{features.shape}")
    if keys is None and keys_path is None and not keys_required:
        keys = tuple(str(i) for i in range(len(features)))
    if keys is None:
        if keys_path is None:
            raise UserError(f"{option} {path} holds no keys: add an array 'keys' to the .npz or pass a keys "
                            "text file (one key per feature row)")
        keys = _read_keys(Path(keys_path), len(features), f"{option} {path}")
    if len(keys) != len(features):
        raise UserError(f"{option} {path}: {_count(len(keys), 'key')} for {_count(len(features), 'feature row')}")
    return FeatureTable(keys, str(path), array=features)


def load_model(path: Path, device: str) -> "torch.nn.Module":
    """A model saved with ``torch.export.save`` (``.pt2``, batch dimension dynamic) or ``torch.jit.save``."""
    import torch

    from ._export import ExportedModel

    try:
        if path.suffix == ".pt2":
            return ExportedModel(torch.export.load(str(path)).module().to(device))
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(
            f"--model {path}: not a {'torch.export' if path.suffix == '.pt2' else 'TorchScript'} model "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); save yours with torch.export.save("
            "torch.export.export(model, (x,), dynamic_shapes=...), 'model.pt2')") from None


def load_model_features(images: str | Path, model: str | Path, flip: str, batch_size: int,
                        device: str | None) -> FeatureTable:
    """Features of a packed dataset's images from a saved model, computed only for the rows asked for."""
    import torch

    from .data.packed import PackedDataset
    from .evaluation import extract_features

    try:
        dataset = PackedDataset(images)
    except (PackedFormatError, FileNotFoundError) as exc:
        raise UserError(f"--images {images}: {exc}") from None
    if not Path(model).is_file():
        raise UserError(f"--model {model}: no such file (a torch.export .pt2 or a TorchScript model)")
    net = load_model(Path(model), device or "cpu")

    def take(rows: np.ndarray) -> np.ndarray:
        return extract_features(net, dataset.images, rows, flip=flip, batch_size=batch_size, device=device)

    return FeatureTable(tuple(dataset.keys), f"--images {images}", compute=take)


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


def evaluate_lfw(table: FeatureTable, pairs_path: str) -> dict[str, Any]:
    """LFW accuracy over the folds of ``pairs.txt`` (View 2: 10 x 600 pairs), as in evaluation.m."""
    from .evaluation import cosine_scores, k_fold_accuracy

    pairs = _protocol(read_lfw_pairs, pairs_path, f"--pairs {pairs_path}")
    if pairs.n_folds < 2:
        raise UserError(f"--pairs {pairs_path} has one fold (View 1, for model selection); evaluate on View 2's "
                        "pairs.txt (10 folds)")
    table.add_lfw_aliases()
    rows = table.rows(pairs.keys_a + pairs.keys_b, str(pairs_path), "keys 'Name/NNNN', numbered as in pairs.txt")
    feats = table.take(rows)
    a, b = feats[: len(pairs)], feats[len(pairs):]
    acc = k_fold_accuracy(a, b, pairs.is_same, pairs.folds)
    return {"protocol": "lfw", "pairs_file": str(pairs_path), **_fold_result(acc, cosine_scores(a, b), pairs)}


def evaluate_ytf(table: FeatureTable, splits_path: str) -> dict[str, Any]:
    """YouTube Faces accuracy over the splits (10 x 500 video pairs); a video's feature is its frames' mean."""
    from .evaluation import cosine_scores, ytf_10fold

    pairs = _protocol(read_ytf_splits, splits_path, f"--splits {splits_path}")
    videos = list(dict.fromkeys(pairs.keys_a + pairs.keys_b))
    frames: dict[str, list[int]] = {}
    for row, key in enumerate(table.keys):
        frames.setdefault(key.rpartition("/")[0], []).append(row)
    direct = [v for v in videos if v in table.index]
    missing = [v for v in videos if v not in table.index and v not in frames]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:_SHOW]) + (", ..." if len(missing) > _SHOW else "")
        raise UserError(
            f"{table.source} has no features for {len(missing):,} of the {len(videos):,} videos that {splits_path} "
            f"names ({shown}); give keys 'Person/number/<frame>' for frames or 'Person/number' for a video")
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
            "videos_from_frames": len(by_frames), **_fold_result(acc, cosine_scores(a, b), pairs)}


def _select(table: FeatureTable, list_path: str | None, option: str) -> np.ndarray:
    """Rows named by a list file (one key per line), or every row without one."""
    if list_path is None:
        return np.arange(len(table.keys))
    path = Path(list_path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file (one image key per line)")
    wanted = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise UserError(f"{option} {path} names no image")
    return table.rows(wanted, f"{option} {path}", "keyed as in the list")


def evaluate_megaface(probes: FeatureTable, distractors: FeatureTable, probe_list: str | None,
                      distractor_list: str | None, counts: Sequence[int] | None, fars: Sequence[float],
                      max_rank: int, seed: int) -> dict[str, Any]:
    """MegaFace Challenge 1 identification (rank-1, CMC) and verification (TAR at FAR) per distractor count."""
    from .evaluation import MEGAFACE_DISTRACTORS, megaface_evaluate

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
        distractors.check_finite(dist_feats, np.arange(len(dist_feats)))
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
        "seed": seed,
        "results": [
            {"distractors": r.distractors, "rank1": r.rank1, "cmc": [float(c) for c in r.cmc],
             "tar_at_far": {repr(f): t for f, t in r.tar_at_far.items()},
             "threshold_at_far": {repr(f): t for f, t in r.threshold_at_far.items()},
             "probe_pairs": r.num_probe_pairs, "genuine_pairs": r.num_genuine, "impostor_pairs": r.num_impostors}
            for r in (results[d] for d in sorted(results))],
    }


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of a result."""
    if result["protocol"] in ("lfw", "ytf"):
        name = "LFW" if result["protocol"] == "lfw" else "YouTube Faces"
        roc = result["roc"]
        tars = "  ".join(f"TAR@FAR={f} {100 * t:.2f}%" for f, t in roc["tar_at_far"].items())
        return (f"{name}: {result['pairs']:,} pairs, {result['folds']} folds\n"
                f"  accuracy  {100 * result['accuracy']:.2f}% +- {100 * result['std']:.2f}%\n"
                f"  AUC {roc['auc']:.4f}  EER {100 * roc['eer']:.2f}%  {tars}")
    fars = list(result["results"][0]["tar_at_far"])
    lines = [f"MegaFace: {result['probes']:,} probes of {result['probe_identities']:,} identities, "
             f"{result['distractors']:,} distractors",
             f"  {'distractors':>11}  {'rank-1':>7}" + "".join(f"  {'TAR@FAR=' + f:>14}" for f in fars)]
    for r in result["results"]:
        lines.append(f"  {r['distractors']:>11,}  {100 * r['rank1']:>6.2f}%"
                     + "".join(f"  {100 * r['tar_at_far'][f]:>13.2f}%" for f in fars))
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
        p.add_argument("--out", metavar="FILE", default=f"{name}_result.json",
                       help=f"the JSON result (default {name}_result.json)")
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
    p.add_argument("--out", metavar="FILE", default="megaface_result.json",
                   help="the JSON result (default megaface_result.json)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, write the JSON result, print the table; exit status 2 for a user's mistake."""
    args = build_parser().parse_args(argv)
    if args.protocol == "lfw":
        result = evaluate_lfw(_table(args), args.pairs)
    elif args.protocol == "ytf":
        result = evaluate_ytf(_table(args), args.splits)
    else:
        if args.probes is None or args.distractors is None:
            raise UserError("megaface: give --probes FILE and --distractors FILE (features keyed by image)")
        if args.max_rank < 1:
            raise UserError(f"--max-rank must be >= 1, got {args.max_rank}")
        result = evaluate_megaface(
            load_feature_file(args.probes, args.probe_keys, "--probes"),
            load_feature_file(args.distractors, args.distractor_keys, "--distractors", keys_required=False),
            args.probe_list, args.distractor_list, args.distractor_counts, args.fars, args.max_rank, args.seed)
    _finite(result, args.protocol)
    atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


def cli() -> int:
    """The ``sphereface-evaluate`` console script: :func:`main` with a user's mistake as one ``error:`` line."""
    return run_command(main)


if __name__ == "__main__":
    raise SystemExit(cli())
