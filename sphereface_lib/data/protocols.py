"""Protocol files: LFW ``pairs.txt`` (View 1 and View 2) and YouTube Faces splits, read and written.

Protocol entries are linked to packed images by key:

* LFW image ``n`` (1-based, as in ``pairs.txt``) of ``name`` has key ``f"{name}/{n:04d}"`` (:func:`lfw_key`);
* a YTF video is ``"Person/number"`` and its frame ``f`` has key ``f"{video}/{f:04d}"`` (:func:`ytf_frame_key`).

:func:`pair_rows` and :func:`video_rows` map parsed pairs to rows of a
:class:`~sphereface_lib.data.packed.PackedDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import UserError
from .packed import PackedDataset, atomic_write_text

YTF_CSV_HEADER = "split,video_a,video_b,same"
YTF_OFFICIAL_HEADER = "split number, pair number, first name, second name, is same person, is same video"


class ProtocolFormatError(UserError):
    """A protocol file is malformed; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class PairList:
    """Protocol pairs in file order: both keys, the same-identity flag and the fold (split) of each pair.

    ``folds`` are 0-based; ``lines`` are the 1-based line numbers in ``source`` (for error messages).
    """

    keys_a: tuple[str, ...]
    keys_b: tuple[str, ...]
    is_same: np.ndarray
    folds: np.ndarray
    lines: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = len(self.keys_a)
        for name in ("keys_b", "is_same", "folds", "lines"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PairList.{name} has {len(getattr(self, name))} entries, keys_a has {n}")

    def __len__(self) -> int:
        return len(self.keys_a)

    @property
    def n_folds(self) -> int:
        return int(self.folds.max()) + 1 if len(self) else 0

    def without(self, absent: Iterable[str]) -> tuple[PairList, np.ndarray]:
        """These pairs less every pair naming a key of ``absent``, and the mask of the dropped ones."""
        absent = set(absent)
        drop = np.fromiter((a in absent or b in absent for a, b in zip(self.keys_a, self.keys_b)), bool, len(self))
        keep = ~drop
        return PairList(tuple(k for k, ok in zip(self.keys_a, keep) if ok),
                        tuple(k for k, ok in zip(self.keys_b, keep) if ok),
                        self.is_same[keep], self.folds[keep], self.lines[keep], self.source), drop

    @classmethod
    def from_pairs(
        cls,
        keys_a: Sequence[str],
        keys_b: Sequence[str],
        is_same: Sequence[bool] | np.ndarray,
        folds: Sequence[int] | np.ndarray,
        source: str = "<memory>",
    ) -> "PairList":
        """Build a pair list in memory (for example to write a synthetic protocol)."""
        n = len(keys_a)
        return cls(
            tuple(keys_a), tuple(keys_b), np.asarray(is_same, dtype=bool),
            np.asarray(folds, dtype=np.int64), np.arange(1, n + 1, dtype=np.int64), source,
        )


def lfw_key(name: str, n: int) -> str:
    """Packed-dataset key of LFW image ``n`` (1-based, as in pairs.txt) of ``name``."""
    return f"{name}/{int(n):04d}"


def ytf_frame_key(video: str, frame: int) -> str:
    """Packed-dataset key of frame ``frame`` of YTF video ``video`` (``"Person/number"``)."""
    return f"{video}/{int(frame):04d}"


def _split_lfw_key(key: str, where: str) -> tuple[str, int]:
    name, sep, num = key.rpartition("/")
    if not sep or not num.isdigit():
        raise ValueError(f"{where}: key {key!r} is not an LFW key 'name/NNNN' (see lfw_key)")
    return name, int(num)


def _read_lines(path: str | os.PathLike) -> tuple[Path, list[str]]:
    path = Path(path)
    if path.is_dir():
        raise ProtocolFormatError(f"{path} is a folder, not a protocol file; give the file itself (e.g. "
                                  f"{path / 'pairs.txt'})")
    if not path.is_file():
        raise FileNotFoundError(f"protocol file {path} does not exist")
    data = path.read_bytes()
    try:
        return path, data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise ProtocolFormatError(
            f"{path}, line {lineno}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8 "
            "(or ASCII, as the official protocol files are)") from None


def _int_field(text: str, path: Path, lineno: int, what: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ProtocolFormatError(f"{path}, line {lineno}: expected {what}, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise ProtocolFormatError(f"{path}, line {lineno}: expected {what} >= {minimum}, got {value}")
    return value


def read_lfw_pairs(path: str | os.PathLike) -> PairList:
    """Read LFW ``pairs.txt`` (View 2: header ``folds<TAB>n``, per fold n matched then n mismatched
    lines) or ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` (View 1: header ``n``, one fold)."""
    path, lines = _read_lines(path)
    if not lines:
        raise ProtocolFormatError(f"{path}, line 1: empty file, expected a header 'folds<TAB>pairs' or 'pairs'")
    header = lines[0].split()
    if len(header) == 2:
        n_folds = _int_field(header[0], path, 1, "the number of folds", minimum=1)
        per = _int_field(header[1], path, 1, "the number of pairs of each kind per fold", minimum=1)
    elif len(header) == 1:
        n_folds, per = 1, _int_field(header[0], path, 1, "the number of pairs of each kind", minimum=1)
    else:
        raise ProtocolFormatError(
            f"{path}, line 1: expected a header 'folds<TAB>pairs' (View 2) or 'pairs' (View 1), got {lines[0]!r}"
        )
    body = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = 2 * n_folds * per
    if len(body) != expected:
        raise ProtocolFormatError(
            f"{path}: the header (line 1: {lines[0]!r}) announces {expected} pair lines, the file has {len(body)}"
        )
    keys_a, keys_b, same, folds, linenos = [], [], [], [], []
    for k, (lineno, line) in enumerate(body):
        fold, within = divmod(k, 2 * per)
        matched = within < per
        parts = line.split()
        if matched:
            if len(parts) != 3:
                raise ProtocolFormatError(
                    f"{path}, line {lineno}: expected a matched pair 'name<TAB>n1<TAB>n2', got {line!r}"
                )
            name, n1, n2 = parts
            a = lfw_key(name, _int_field(n1, path, lineno, "an image number", minimum=1))
            b = lfw_key(name, _int_field(n2, path, lineno, "an image number", minimum=1))
            if a == b:
                raise ProtocolFormatError(
                    f"{path}, line {lineno}: a matched pair names one image twice ({a!r}); a matched pair is two "
                    f"different images of one person (fix the line, or take the official file)")
        else:
            if len(parts) != 4:
                raise ProtocolFormatError(
                    f"{path}, line {lineno}: expected a mismatched pair 'name1<TAB>n1<TAB>name2<TAB>n2', got {line!r}"
                )
            a = lfw_key(parts[0], _int_field(parts[1], path, lineno, "an image number", minimum=1))
            b = lfw_key(parts[2], _int_field(parts[3], path, lineno, "an image number", minimum=1))
            if parts[0] == parts[2]:
                raise ProtocolFormatError(
                    f"{path}, line {lineno}: a mismatched pair names one person twice ({parts[0]!r}); a mismatched "
                    f"pair is two different people (fix the line, or take the official file)")
        keys_a.append(a)
        keys_b.append(b)
        same.append(matched)
        folds.append(fold)
        linenos.append(lineno)
    return PairList(tuple(keys_a), tuple(keys_b), np.array(same, bool), np.array(folds, np.int64),
                    np.array(linenos, np.int64), str(path))


def write_lfw_pairs(path: str | os.PathLike, pairs: PairList, view: int | None = None) -> None:
    """Write ``pairs`` in the LFW format read by :func:`read_lfw_pairs`, atomically.

    ``view`` 2 writes the ``folds<TAB>n`` header, 1 the single-count header (one fold only);
    by default 1 for a single fold and 2 otherwise. Each fold must hold n matched pairs followed by
    n mismatched pairs, with keys made by :func:`lfw_key`.
    """
    n_folds = pairs.n_folds
    view = view if view is not None else (1 if n_folds == 1 else 2)
    if view not in (1, 2):
        raise ValueError(f"view must be 1 or 2, got {view}")
    if view == 1 and n_folds != 1:
        raise ValueError(f"View 1 format holds one fold, the pairs have {n_folds}; pass view=2")
    if len(pairs) % (2 * max(n_folds, 1)):
        raise ValueError(f"{len(pairs)} pairs cannot form {n_folds} folds of n matched + n mismatched")
    per = len(pairs) // (2 * max(n_folds, 1))
    expect_fold = np.repeat(np.arange(n_folds), 2 * per)
    expect_same = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], n_folds)
    if not (np.array_equal(pairs.folds, expect_fold) and np.array_equal(pairs.is_same, expect_same)):
        raise ValueError(
            "pairs must be ordered fold by fold, each fold n matched pairs then n mismatched pairs (as in pairs.txt)"
        )
    out = [f"{n_folds}\t{per}" if view == 2 else f"{per}"]
    for i, (a, b, s) in enumerate(zip(pairs.keys_a, pairs.keys_b, pairs.is_same)):
        where = f"pair {i} of {pairs.source}"
        (na, ia), (nb, ib) = _split_lfw_key(a, where), _split_lfw_key(b, where)
        if s:
            if na != nb:
                raise ValueError(f"{where}: a matched pair must name one person, got {a!r} and {b!r}")
            out.append(f"{na}\t{ia}\t{ib}")
        else:
            out.append(f"{na}\t{ia}\t{nb}\t{ib}")
    atomic_write_text(path, "\n".join(out) + "\n")


def _flag(text: str, path: Path, lineno: int, what: str) -> bool:
    value = text.strip()
    if value not in ("0", "1"):
        raise ProtocolFormatError(f"{path}, line {lineno}: expected {what} as 0 or 1, got {value!r}")
    return value == "1"


def read_ytf_splits(path: str | os.PathLike) -> PairList:
    """Read YouTube Faces splits: the official ``splits.txt`` (header
    ``split number, pair number, first name, second name, is same person, is same video``) or the CSV
    ``split,video_a,video_b,same``. Splits are 1-based in the file, 0-based in ``folds``."""
    path, lines = _read_lines(path)
    header = lines[0].strip() if lines else ""
    if header.replace(" ", "") == YTF_CSV_HEADER:
        n_fields, cols = 4, (0, 1, 2, 3)
        expected = "'split,video_a,video_b,same'"
    elif header.replace(" ", "") == YTF_OFFICIAL_HEADER.replace(" ", ""):
        n_fields, cols = 6, (0, 2, 3, 4)
        expected = "'split, pair, first video, second video, same person, same video'"
    else:
        raise ProtocolFormatError(
            f"{path}, line 1: expected the header {YTF_CSV_HEADER!r} or {YTF_OFFICIAL_HEADER!r}, got {header!r}"
        )
    keys_a, keys_b, same, folds, linenos = [], [], [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != n_fields:
            raise ProtocolFormatError(f"{path}, line {lineno}: expected {n_fields} fields {expected}, got {line!r}")
        split = _int_field(parts[cols[0]], path, lineno, "a split number (1-based)")
        if split < 1:
            raise ProtocolFormatError(f"{path}, line {lineno}: split numbers start at 1, got {split}")
        for video in (parts[cols[1]], parts[cols[2]]):
            if "/" not in video:
                raise ProtocolFormatError(f"{path}, line {lineno}: expected a video 'Person/number', got {video!r}")
        is_same = _flag(parts[cols[3]], path, lineno, "the same-person flag")
        person_a, person_b = (parts[c].rpartition("/")[0] for c in cols[1:3])
        if is_same != (person_a == person_b):
            raise ProtocolFormatError(
                f"{path}, line {lineno}: the same-person flag is {int(is_same)} but the videos show "
                f"{'two people' if is_same else 'one person'} ({parts[cols[1]]!r}, {parts[cols[2]]!r}); fix the "
                "flag or the videos (or take the official file)")
        keys_a.append(parts[cols[1]])
        keys_b.append(parts[cols[2]])
        same.append(is_same)
        folds.append(split - 1)
        linenos.append(lineno)
    return PairList(tuple(keys_a), tuple(keys_b), np.array(same, bool), np.array(folds, np.int64),
                    np.array(linenos, np.int64), str(path))


def write_ytf_splits(path: str | os.PathLike, pairs: PairList, official: bool = False) -> None:
    """Write ``pairs`` as YTF splits, atomically: CSV ``split,video_a,video_b,same`` or, with
    ``official``, the ``splits.txt`` layout (pair numbers restart at 1 in each split)."""
    if official:
        out = [YTF_OFFICIAL_HEADER]
        counter: dict[int, int] = {}
        for a, b, s, f in zip(pairs.keys_a, pairs.keys_b, pairs.is_same, pairs.folds):
            counter[int(f)] = counter.get(int(f), 0) + 1
            out.append(f"{int(f) + 1}, {counter[int(f)]}, {a}, {b}, {int(s)}, {int(a == b)}")
    else:
        out = [YTF_CSV_HEADER]
        out += [f"{int(f) + 1},{a},{b},{int(s)}" for a, b, s, f in zip(pairs.keys_a, pairs.keys_b, pairs.is_same,
                                                                       pairs.folds)]
    atomic_write_text(path, "\n".join(out) + "\n")


def pair_rows(dataset: PackedDataset, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``dataset`` holding each pair's two images (keys as in :func:`lfw_key`)."""
    rows = np.empty((2, len(pairs)), np.int64)
    for side, keys in enumerate((pairs.keys_a, pairs.keys_b)):
        for i, key in enumerate(keys):
            try:
                rows[side, i] = dataset.index_of(key)
            except KeyError:
                raise KeyError(
                    f"{pairs.source}, line {pairs.lines[i]}: image {key!r} is not in the packed dataset "
                    f"{dataset.root}; pack the protocol's images with keys 'name/NNNN' (lfw_key)"
                ) from None
    return rows[0], rows[1]


def video_rows(dataset: PackedDataset, pairs: PairList) -> dict[str, np.ndarray]:
    """For each video named in ``pairs``, the rows of its frames in ``dataset`` (keys ``video/NNNN``)."""
    by_video: dict[str, list[int]] = {}
    for row, key in enumerate(dataset.keys):
        video, sep, _ = key.rpartition("/")
        if sep:
            by_video.setdefault(video, []).append(row)
    out: dict[str, np.ndarray] = {}
    for keys in (pairs.keys_a, pairs.keys_b):
        for i, video in enumerate(keys):
            if video in out:
                continue
            if video not in by_video:
                raise KeyError(
                    f"{pairs.source}, line {pairs.lines[i]}: video {video!r} has no frames in the packed dataset "
                    f"{dataset.root}; pack its frames with keys 'Person/number/NNNN' (ytf_frame_key)"
                )
            out[video] = np.asarray(by_video[video], np.int64)
    return out
