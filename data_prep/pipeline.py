"""The shared engine of every ``data_prep`` command: images -> detect + align -> shards -> packed dataset.

Work is split into shards of images. Each shard's result (aligned crops, statuses, messages) is written
atomically to ``<work_dir>/shard-NNNNN-<hash>.npz``, so an interrupted run loses at most the shards in
flight: a re-run reuses every finished shard. Shards run in parallel processes (``workers``). Finally the
shards are packed in order with :class:`sphereface_lib.data.packed.PackedWriter`; beside the images go
``landmarks.npy`` (the five MTCNN landmarks per image in its source image's pixels, NaN for centre crops),
the protocol files, and ``failures.tsv``, which lists every problem (unreadable file, no face, ...); the
manifest's ``extra`` counts them. ``outside.npy`` holds, per image, the fraction of the crop that lies outside
its source image (black fill): the manifest counts the crops above 10% and 25%, and ``max_outside`` skips
crops above a threshold (listed in ``failures.tsv``, kind ``outside``).

A user's mistake (a bad option, an existing ``--out``, two files with one key, a second command writing the same
``--out``, which :func:`sphereface_lib.locking.output_lock` refuses) raises :class:`sphereface_lib.errors.UserError`
before any image is aligned; every command's ``__main__`` goes through :func:`sphereface_lib.errors.run_command`
(one ``error:`` line, exit status 2). A full disk is one such line naming the file, with nothing partial left.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from sphereface_lib.data.packed import (WRITE_FAULT_FIX, PackedDataset, PackedWriter, removed_on_failure,
                                         write_fault)
from sphereface_lib.errors import UserError, read_utf8, run_command
from sphereface_lib.locking import output_lock

from .align import FACE_RULES, HEIGHT, WIDTH, centre_crop, detect_and_align, outside_fraction

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
#: What happens to an image in which MTCNN finds no face.
ON_MISS = ("skip", "centre")
#: the smallest face MTCNN can search for: its P-Net window (pixels)
MIN_FACE_SIZE = 12
#: outside-the-image fractions counted in every manifest and report (``outside_above_10pct``, ...)
OUTSIDE_LEVELS = (0.10, 0.25)
#: bump when a shard's content changes, so shards of an older layout are recomputed, not misread
_SHARD_VERSION = 2
_SHARD_ARRAYS = ("images", "landmarks", "outside", "status", "messages")
#: after a full disk while aligning: the finished shards stay and are reused
_WORK_FAULT_FIX = WRITE_FAULT_FIX + " (the shards already finished in the work folder are reused)"


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
    max_outside: float | None = None
    face: str = "central"

    def __post_init__(self) -> None:
        if self.on_miss not in ON_MISS:
            raise UserError(f"--on-miss must be one of {ON_MISS}, got {self.on_miss!r}")
        if self.channels not in (1, 3):
            raise UserError(f"--channels must be 1 or 3, got {self.channels}")
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise UserError(f"--shard-size must be >= 1, got {self.shard_size}")
        if not (math.isfinite(self.pad) and self.pad >= 0):
            raise UserError(f"--pad must be a finite fraction >= 0 of the longer side (0.25 adds a quarter), "
                            f"got {self.pad}")
        if self.min_face_size < MIN_FACE_SIZE:
            raise UserError(f"--min-face-size must be >= {MIN_FACE_SIZE} (MTCNN's P-Net window, in pixels), "
                            f"got {self.min_face_size}")
        if self.face not in FACE_RULES:
            raise UserError(f"--face must be one of {sorted(FACE_RULES)}, got {self.face!r}")
        if self.max_outside is not None and not (0 <= self.max_outside <= 1):
            raise UserError(f"--max-outside must be a fraction in [0, 1] of the crop, got {self.max_outside}")

    @property
    def work(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.out.with_name(self.out.name + ".work")


@dataclass
class PrepResult:
    """What a run produced: the pack, the problems, and the counts stored in the manifest."""

    dataset: PackedDataset
    problems: list[Problem]
    counts: dict[str, int] = field(default_factory=dict)


#: PIL modes of more than 8 bits per sample (16-bit and 32-bit integer, 32-bit float), one channel
_DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def to_uint8(pixels: np.ndarray, path: str) -> np.ndarray:
    """``pixels`` (integer or float, any range) mapped linearly from their own [min, max] onto 0..255.

    Raises ``OSError`` naming ``path`` for non-finite pixels. A constant image becomes all 0.
    """
    if pixels.dtype == np.uint8:
        return pixels
    a = np.asarray(pixels, np.float64)
    if not np.all(np.isfinite(a)):
        raise OSError(f"{path}: unsupported image: {int(np.sum(~np.isfinite(a)))} non-finite pixel values")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _as_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[..., :3])
    raise OSError(f"unsupported pixel layout {a.shape}")


def read_rgb(path: str) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (H, W, 3); raises ``OSError`` naming the file.

    8-bit images are read by PIL; 16-bit, 32-bit and float images (grey, or colour ones PIL cannot decode,
    read by OpenCV) are scaled from their own value range to 0..255 (:func:`to_uint8`), never clipped.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: truncated files fail here, not later
            if im.mode in _DEEP_MODES:
                return _as_rgb(to_uint8(np.asarray(im), path))
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise OSError(f"{path}: file not found") from None
    except Image.UnidentifiedImageError as exc:
        deep = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # e.g. a 3-channel float TIFF
        if deep is None or deep.dtype == np.uint8 or deep.size == 0:
            raise OSError(f"{path}: unreadable image ({exc})") from None
        try:
            rgb = _as_rgb(to_uint8(deep, path))
        except OSError as bad:
            raise OSError(f"{path}: {bad}" if path not in str(bad) else str(bad)) from None
        return np.ascontiguousarray(rgb[..., ::-1])  # OpenCV's BGR
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if str(exc).startswith(path):
            raise OSError(str(exc)) from None
        raise OSError(f"{path}: unreadable image ({exc})") from None


def printable(path: str | os.PathLike) -> str:
    """``path`` as text that can be written and printed: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def utf8_name_problem(path: Path) -> Problem | None:
    """A ``bad_name`` problem if ``path``'s name is not valid UTF-8 (keys and reports could not hold it)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        what = "folder" if path.is_dir() else "file"
        return Problem(printable(path), "bad_name", f"{what} name is not valid UTF-8; skipped (rename it)")
    return None


def image_files(folder: Path) -> tuple[list[Path], list[Problem]]:
    """Image files directly in ``folder`` (sorted), and a problem for every other non-hidden file."""
    images, problems = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        bad_name = utf8_name_problem(p)
        if bad_name is not None:
            problems.append(bad_name)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            problems.append(Problem(str(p), "unsupported_format",
                                    f"not an image format data_prep reads ({', '.join(sorted(IMAGE_SUFFIXES))})"))
    return images, problems


def _shard_name(index: int, items: Sequence[Item], config: PrepConfig) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([_SHARD_VERSION, config.pad, config.on_miss, config.channels, config.min_face_size,
                         config.face]).encode())
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
    outside = np.zeros(len(items), np.float32)
    status, messages = [], []
    for i, it in enumerate(items):
        try:
            image = read_rgb(it.path)
        except OSError as exc:
            status.append("unreadable")
            messages.append(str(exc))
            continue
        found = detect_and_align(_DETECTOR, image, pad=config.pad, face=config.face)
        if found is not None:
            crop, state, msg = found[0], "aligned", ""
            landmarks[i] = found[1]
            outside[i] = outside_fraction(found[1], image.shape)
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
    with removed_on_failure(tmp, _WORK_FAULT_FIX):
        np.savez(tmp, images=crops, landmarks=landmarks, outside=outside, status=np.array(status),
                 messages=np.array(messages, dtype=object).astype(str))
        os.replace(tmp, path)
    return name


def _shard_is_complete(path: Path, size: int, channels: int) -> bool:
    """Whether the shard file at ``path`` holds every array for ``size`` images (a torn or foreign file: no)."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in _SHARD_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    return (arrays["images"].shape == (size, HEIGHT, WIDTH, channels)
            and all(len(arrays[k]) == size for k in _SHARD_ARRAYS))


def check_unique_keys(items: Sequence[Item]) -> None:
    """Raise :class:`UserError` naming both files when two items share a key."""
    first: dict[str, str] = {}
    for it in items:
        other = first.setdefault(it.key, it.path)
        if other != it.path:
            raise UserError(f"{printable(other)} and {printable(it.path)} both map to the key {it.key!r}; "
                            "rename one of them (keys are identity/file-stem)")


def check_out(out: Path, overwrite: bool) -> None:
    """Raise :class:`UserError` if ``out`` exists and ``overwrite`` is not set."""
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out")


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
    with output_lock(config.out):
        return _prepare(items, config, source, command, list(problems), protocol_files or {}, protocol_check,
                        extra or {})


def _prepare(items: Sequence[Item], config: PrepConfig, source: str, command: str, problems: list[Problem],
             protocol_files: dict[str, Path], protocol_check: Callable[[set[str]], list[Problem]] | None,
             extra: dict) -> PrepResult:
    """:func:`prepare` with the output's lock held."""
    check_out(config.out, config.overwrite)
    check_unique_keys(items)
    try:
        config.work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_fault(config.work, exc, _WORK_FAULT_FIX) or exc) from exc
    shards = [list(items[i:i + config.shard_size]) for i in range(0, len(items), config.shard_size)]
    names = [_shard_name(i, s, config) for i, s in enumerate(shards)]
    todo, reused = [], 0
    for s, n in zip(shards, names):
        path = config.work / n
        if path.is_file() and _shard_is_complete(path, len(s), config.channels):
            reused += 1
            continue
        if path.is_file():
            print(f"recomputing {path}: unreadable or incomplete shard", file=sys.stderr)
            path.unlink()
        todo.append((s, config, n))
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
    return _pack(shards, names, config, source, command, problems, protocol_files, protocol_check, extra)


def _pack(
    shards: list[list[Item]], names: list[str], config: PrepConfig, source: str, command: str,
    problems: list[Problem], protocol_files: dict[str, Path],
    protocol_check: Callable[[set[str]], list[Problem]] | None, extra: dict,
) -> PrepResult:
    kept: list[tuple[np.ndarray, list[Item]]] = []
    kept_landmarks: list[np.ndarray] = []
    kept_outside: list[np.ndarray] = []
    status_count: Counter[str] = Counter()
    for shard, name in zip(shards, names):
        with np.load(config.work / name) as z:
            images, status, messages, outside = z["images"], z["status"], z["messages"], z["outside"]
            landmarks = z["landmarks"]
        ok = np.isin(status, ["aligned", "centre"])
        status_count.update(status.tolist())
        for it, st, msg in zip(shard, status, messages):
            if st != "aligned" and msg:
                problems.append(Problem(it.path, str(st), str(msg)))
        if config.max_outside is not None:
            over = ok & (outside > config.max_outside)
            for i in np.flatnonzero(over):
                problems.append(Problem(shard[i].path, "outside",
                                        f"{shard[i].path}: {outside[i]:.1%} of the crop lies outside the image "
                                        f"(above --max-outside {config.max_outside:g}); skipped"))
            status_count["outside"] += int(over.sum())
            ok &= ~over
        kept_landmarks.append(landmarks[ok])
        kept_outside.append(outside[ok])
        kept.append((images[ok], [it for it, k in zip(shard, ok) if k]))
    all_outside = np.concatenate(kept_outside) if kept_outside else np.zeros(0, np.float32)
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
        **outside_counts(all_outside),
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
        "face": config.face,
        "max_outside": config.max_outside,
        "outside": "outside.npy: per image, the fraction of the crop outside its source image (black fill)",
        "protocol_files": sorted(protocol_files),
        **extra,
    }
    writer = PackedWriter(config.out, height=HEIGHT, width=WIDTH, channels=config.channels, source=source,
                          identities=identities, extra=manifest_extra, overwrite=config.overwrite)
    with writer.failing_aborts():
        for images, its in kept:
            if its:
                writer.add(images, [label_of[it.identity] for it in its], [it.key for it in its])
        np.save(writer.partial / "landmarks.npy",
                np.concatenate(kept_landmarks) if kept_landmarks else np.zeros((0, 5, 2), np.float32))
        np.save(writer.partial / "outside.npy", all_outside)
        for dest, src in protocol_files.items():
            shutil.copyfile(src, writer.partial / dest)
        write_failures(writer.partial / "failures.tsv", problems)
    dataset = writer.close()
    if not config.keep_work:
        shutil.rmtree(config.work, ignore_errors=True)
    return PrepResult(dataset, problems, counts)


def outside_counts(outside: np.ndarray) -> dict[str, int]:
    """How many crops have more than each of :data:`OUTSIDE_LEVELS` of their area outside the source image."""
    return {f"outside_above_{round(level * 100)}pct": int(np.sum(outside > level)) for level in OUTSIDE_LEVELS}


def write_failures(path: Path, problems: Sequence[Problem]) -> None:
    """``failures.tsv``: one ``path, kind, message`` row per problem (tabs and newlines in text replaced)."""
    def cell(text: str) -> str:
        return printable(text).replace("\t", " ").replace("\n", " ")
    path.write_text("path\tkind\tmessage\n" + "".join(f"{cell(p.path)}\t{p.kind}\t{cell(p.message)}\n"
                                                      for p in problems), encoding="utf-8")


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
    parser.add_argument("--max-outside", type=float, default=None,
                        help="skip crops with more than this fraction outside the source image (listed in "
                             "failures.tsv); default: keep all, counted in the manifest")


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    """A :class:`PrepConfig` from parsed common arguments; a bad value or an existing ``--out`` raises
    :class:`UserError` naming the option, before any work starts."""
    config = PrepConfig(out=args.out, work_dir=args.work_dir, workers=args.workers, shard_size=args.shard_size,
                        pad=args.pad, on_miss=args.on_miss, channels=args.channels,
                        min_face_size=args.min_face_size, overwrite=args.overwrite, keep_work=args.keep_work,
                        max_outside=args.max_outside)
    check_out(config.out, config.overwrite)
    return config


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a pack, for its manifest."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def report(result: PrepResult, stream=None) -> None:
    """Print every problem, the counts and the questionable crops."""
    stream = sys.stderr if stream is None else stream
    for p in result.problems:
        line = p.message if p.path in p.message else p.path + ": " + p.message
        print(f"  [{p.kind}] {printable(line)}", file=stream)
    c = result.counts
    print(f"{result.dataset.root}: {c['images']} images of {c['identities']} identities "
          f"({c['aligned']} aligned, {c['centre_crops']} centre crops) from {c['listed']} listed; "
          f"{c['failures']} failures (list in {result.dataset.root / 'failures.tsv'})", file=stream)
    print(f"  crops partly outside their image: {c['outside_above_10pct']} above 10%, "
          f"{c['outside_above_25pct']} above 25% (outside.npy; --max-outside skips them)", file=stream)


def cli(run: Callable[[Sequence[str] | None], object]) -> None:
    """Run a command's ``run(argv)`` as ``__main__``: a :class:`UserError` is one ``error:`` line, exit 2."""
    def main(argv: Sequence[str] | None) -> int:
        run(argv)
        return 0
    sys.exit(run_command(main))


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else exit with a message naming it."""
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a folder (check the path)")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else exit with a message naming it."""
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file (check the path)")
    return path


__all__ = ["Item", "Problem", "PrepConfig", "PrepResult", "prepare", "read_rgb", "to_uint8", "image_files",
           "report", "add_common_arguments", "config_from_args", "command_line", "require_dir", "require_file",
           "read_utf8", "printable", "utf8_name_problem", "check_unique_keys", "check_out", "outside_counts",
           "write_failures", "cli", "OUTSIDE_LEVELS"]
