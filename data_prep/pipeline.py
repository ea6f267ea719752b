"""The shared engine of every ``data_prep`` command: images -> detect + align -> shards -> packed dataset.

Work is split into shards of images. Each shard's result (aligned crops, statuses, messages) is written
atomically to ``<work_dir>/shard-NNNNN-<hash>.npz``, so an interrupted run loses at most the shards in
flight: a re-run reuses every finished shard. Shards run in parallel processes (``workers``). Finally the
shards are packed in order with :class:`sphereface_lib.data.packed.PackedWriter`; beside the images go
``landmarks.npy`` (the five MTCNN landmarks per image in its source image's pixels, NaN for centre crops),
the protocol files, and ``failures.tsv``, which lists every problem (unreadable file, no face, ...); the
manifest's ``extra`` counts them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from sphereface_lib.data.packed import PackedDataset, PackedWriter

from .align import HEIGHT, WIDTH, centre_crop, detect_and_align

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
#: What happens to an image in which MTCNN finds no face.
ON_MISS = ("skip", "centre")


@dataclass(frozen=True)
class Item:
    """One image to prepare: its key in the pack, its identity name, its file."""

    key: str
    identity: str
    path: str


@dataclass(frozen=True)
class Problem:
    """Something that went wrong with one file (or folder, or protocol line): where, and what."""

    path: str
    kind: str
    message: str


@dataclass(frozen=True)
class PrepConfig:
    """Options common to all datasets (see :func:`add_common_arguments`)."""

    out: Path
    work_dir: Path | None = None
    workers: int = 1
    shard_size: int = 256
    pad: float = 0.0
    on_miss: str = "skip"
    channels: int = 3
    min_face_size: int = 20
    overwrite: bool = False
    keep_work: bool = False

    def __post_init__(self) -> None:
        if self.on_miss not in ON_MISS:
            raise ValueError(f"on_miss must be one of {ON_MISS}, got {self.on_miss!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.workers < 1 or self.shard_size < 1:
            raise ValueError(f"workers and shard_size must be >= 1, got {self.workers}, {self.shard_size}")

    @property
    def work(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.out.with_name(self.out.name + ".work")


@dataclass
class PrepResult:
    """What a run produced: the pack, the problems, and the counts stored in the manifest."""

    dataset: PackedDataset
    problems: list[Problem]
    counts: dict[str, int] = field(default_factory=dict)


def read_rgb(path: str) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (H, W, 3); raises ``OSError``/``ValueError`` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: truncated files fail here, not later
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise OSError(f"{path}: file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise OSError(f"{path}: unreadable image ({exc})") from None


def image_files(folder: Path) -> tuple[list[Path], list[Problem]]:
    """Image files directly in ``folder`` (sorted), and a problem for every other non-hidden file."""
    images, problems = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            problems.append(Problem(str(p), "unsupported_format",
                                    f"not an image format data_prep reads ({', '.join(sorted(IMAGE_SUFFIXES))})"))
    return images, problems


def _shard_name(index: int, items: Sequence[Item], config: PrepConfig) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([config.pad, config.on_miss, config.channels, config.min_face_size]).encode())
    for it in items:
        h.update(f"{it.key}\t{it.identity}\t{it.path}\n".encode())
    return f"shard-{index:05d}-{h.hexdigest()[:12]}.npz"


_DETECTOR = None


def _init_worker(min_face_size: int) -> None:
    global _DETECTOR
    import torch

    from .mtcnn import MTCNN

    torch.set_num_threads(1)
    _DETECTOR = MTCNN(min_face_size=min_face_size)


def _process_shard(args: tuple[list[Item], PrepConfig, str]) -> str:
    """Align every item of one shard and write ``<work>/<name>`` atomically; returns the name."""
    items, config, name = args
    crops = np.zeros((len(items), HEIGHT, WIDTH, config.channels), np.uint8)
    landmarks = np.full((len(items), 5, 2), np.nan, np.float32)
    status, messages = [], []
    for i, it in enumerate(items):
        try:
            image = read_rgb(it.path)
        except OSError as exc:
            status.append("unreadable")
            messages.append(str(exc))
            continue
        found = detect_and_align(_DETECTOR, image, pad=config.pad)
        if found is not None:
            crop, state, msg = found[0], "aligned", ""
            landmarks[i] = found[1]
        elif config.on_miss == "centre":
            crop, state, msg = centre_crop(image), "centre", f"{it.path}: no face found, centre crop used"
        else:
            status.append("no_face")
            messages.append(f"{it.path}: no face found, skipped")
            continue
        crops[i] = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None] if config.channels == 1 else crop
        status.append(state)
        messages.append(msg)
    path = config.work / name
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=crops, landmarks=landmarks, status=np.array(status), messages=np.array(messages, dtype=object).astype(str))
    os.replace(tmp, path)
    return name


def prepare(
    items: Sequence[Item],
    config: PrepConfig,
    *,
    source: str,
    command: str,
    problems: Sequence[Problem] = (),
    protocol_files: dict[str, Path] | None = None,
    protocol_check: Callable[[set[str]], list[Problem]] | None = None,
    extra: dict | None = None,
) -> PrepResult:
    """Detect, align and pack ``items``; ``protocol_files`` (name in pack -> file) are copied beside them.

    ``problems`` found while listing the dataset are reported with those found while reading images and
    those ``protocol_check`` returns for the set of keys that made it into the pack (missing pair entries).
    """
    if config.out.exists() and not config.overwrite:
        raise FileExistsError(f"{config.out} already exists; pass --overwrite to replace it")
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k, c in Counter(keys).items() if c > 1)
        raise ValueError(f"duplicate key {dup!r}: two images map to the same key")
    config.work.mkdir(parents=True, exist_ok=True)
    shards = [list(items[i:i + config.shard_size]) for i in range(0, len(items), config.shard_size)]
    names = [_shard_name(i, s, config) for i, s in enumerate(shards)]
    todo = [(s, config, n) for s, n in zip(shards, names) if not (config.work / n).is_file()]
    reused = len(shards) - len(todo)
    if reused:
        print(f"resuming: {reused} of {len(shards)} shards already done in {config.work}", file=sys.stderr)
    bar = tqdm(total=sum(len(t[0]) for t in todo), unit="img", desc=source, disable=not todo, file=sys.stderr)
    if config.workers == 1 or len(todo) <= 1:
        import torch

        threads = torch.get_num_threads()
        _init_worker(config.min_face_size)  # one thread, as in the workers, so results match bit for bit
        try:
            for t in todo:
                _process_shard(t)
                bar.update(len(t[0]))
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(config.workers, initializer=_init_worker, initargs=(config.min_face_size,)) as pool:
            size_of = {n: len(s) for s, _, n in todo}
            for name in pool.imap_unordered(_process_shard, todo):
                bar.update(size_of[name])
    bar.close()
    return _pack(shards, names, config, source, command, list(problems), protocol_files or {}, protocol_check,
                 extra or {})


def _pack(
    shards: list[list[Item]], names: list[str], config: PrepConfig, source: str, command: str,
    problems: list[Problem], protocol_files: dict[str, Path],
    protocol_check: Callable[[set[str]], list[Problem]] | None, extra: dict,
) -> PrepResult:
    kept: list[tuple[np.ndarray, list[Item]]] = []
    kept_landmarks: list[np.ndarray] = []
    status_count: Counter[str] = Counter()
    for shard, name in zip(shards, names):
        with np.load(config.work / name) as z:
            images, status, messages = z["images"], z["status"], z["messages"]
            ok = np.isin(status, ["aligned", "centre"])
            kept_landmarks.append(z["landmarks"][ok])
        status_count.update(status.tolist())
        for it, st, msg in zip(shard, status, messages):
            if st != "aligned" and msg:
                problems.append(Problem(it.path, str(st), str(msg)))
        kept.append((images[ok], [it for it, k in zip(shard, ok) if k]))
    if protocol_check is not None:
        problems += protocol_check({it.key for _, its in kept for it in its})
    identities = sorted({it.identity for _, its in kept for it in its})
    label_of = {name: i for i, name in enumerate(identities)}
    problem_kinds = Counter(p.kind for p in problems)
    counts = {
        "identities": len(identities),
        "images": sum(len(its) for _, its in kept),
        "listed": sum(len(s) for s in shards),
        "aligned": status_count["aligned"],
        "centre_crops": status_count["centre"],
        "failures": sum(n for k, n in problem_kinds.items() if k != "centre"),
    }
    manifest_extra = {
        **counts,
        "failures_by_kind": dict(sorted(problem_kinds.items())),
        "command": command,
        "detector": "MTCNN (Zhang et al. 2016), weights from facenet-pytorch 2.6.0",
        "alignment": "similarity transform of 5 landmarks onto the SphereFace 112x96 template",
        "pad": config.pad,
        "on_miss": config.on_miss,
        "min_face_size": config.min_face_size,
        "protocol_files": sorted(protocol_files),
        **extra,
    }
    writer = PackedWriter(config.out, height=HEIGHT, width=WIDTH, channels=config.channels, source=source,
                          identities=identities, extra=manifest_extra, overwrite=config.overwrite)
    try:
        for images, its in kept:
            if its:
                writer.add(images, [label_of[it.identity] for it in its], [it.key for it in its])
        np.save(writer.partial / "landmarks.npy",
                np.concatenate(kept_landmarks) if kept_landmarks else np.zeros((0, 5, 2), np.float32))
        for dest, src in protocol_files.items():
            shutil.copyfile(src, writer.partial / dest)
        (writer.partial / "failures.tsv").write_text(
            "path\tkind\tmessage\n" + "".join(f"{p.path}\t{p.kind}\t{p.message}\n" for p in problems))
        dataset = writer.close()
    except BaseException:
        writer.abort()
        raise
    if not config.keep_work:
        shutil.rmtree(config.work, ignore_errors=True)
    return PrepResult(dataset, problems, counts)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every ``data_prep`` command shares."""
    parser.add_argument("--out", required=True, type=Path, help="packed dataset folder to create")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where finished shards are kept for resuming (default: <out>.work)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="processes")
    parser.add_argument("--shard-size", type=int, default=256, help="images per resumable shard")
    parser.add_argument("--pad", type=float, default=0.0,
                        help="black border (fraction of the longer side) added before detection; "
                             "helps on tightly cropped faces")
    parser.add_argument("--on-miss", choices=ON_MISS, default="skip",
                        help="no face found: skip the image, or use a centred crop (for pre-cropped sets)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="output channels")
    parser.add_argument("--min-face-size", type=int, default=20, help="smallest face MTCNN searches for (px)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--keep-work", action="store_true", help="keep the shard folder after packing")


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    """A :class:`PrepConfig` from parsed common arguments; bad values exit with the option named."""
    try:
        return PrepConfig(out=args.out, work_dir=args.work_dir, workers=args.workers, shard_size=args.shard_size,
                          pad=args.pad, on_miss=args.on_miss, channels=args.channels,
                          min_face_size=args.min_face_size, overwrite=args.overwrite, keep_work=args.keep_work)
    except ValueError as exc:
        raise SystemExit(f"error: {exc} (see --help)") from None


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a pack, for its manifest."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def report(result: PrepResult, stream=sys.stderr) -> None:
    """Print the counts and every problem, grouped by kind."""
    for p in result.problems:
        print(f"  [{p.kind}] {p.message if p.path in p.message else p.path + ': ' + p.message}", file=stream)
    c = result.counts
    print(f"{result.dataset.root}: {c['images']} images of {c['identities']} identities "
          f"({c['aligned']} aligned, {c['centre_crops']} centre crops) from {c['listed']} listed; "
          f"{c['failures']} failures (list in {result.dataset.root / 'failures.tsv'})", file=stream)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else exit with a message naming it."""
    if not path.is_dir():
        raise SystemExit(f"error: {what} {path} is not a folder (check the path)")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else exit with a message naming it."""
    if not path.is_file():
        raise SystemExit(f"error: {what} {path} is not a file (check the path)")
    return path


__all__ = ["Item", "Problem", "PrepConfig", "PrepResult", "prepare", "read_rgb", "image_files", "report",
           "add_common_arguments", "config_from_args", "command_line", "require_dir", "require_file"]
