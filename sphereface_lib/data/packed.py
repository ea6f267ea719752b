"""The one dataset format of the companion: uint8 images in a memory map, identity labels, a manifest.

A packed dataset is a folder::

    images.u8       raw uint8 array, shape (num_images, height, width, channels), C order
    labels.npy      int64 identity label per image, in 0 .. num_identities - 1
    keys.txt        one key per image (for example ``Aaron_Peckham/0001``), used by protocol files
    identities.txt  one identity name per label
    manifest.json   image size, channels, counts, source, version, free-form ``extra``

Every source (the synthetic generator, ``data_prep`` on a real download) writes this format with
:class:`PackedWriter`; training and evaluation read it with :class:`PackedDataset`.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import OutputWriteError, UserError, storage_error

FORMAT_VERSION = 1
_IMAGES = "images.u8"
_LABELS = "labels.npy"
_KEYS = "keys.txt"
_IDENTITIES = "identities.txt"
_MANIFEST = "manifest.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the process's umask, for files made by atomic_write
_REPACK = "pack it again with data_prep or PackedWriter"
TEMP_SUFFIX = ".tmp"  #: ending of :func:`atomic_write`'s temporary files


class PackedFormatError(UserError):
    """A packed dataset folder is missing, incomplete or inconsistent; the message names the pack and the fix."""


@dataclass(frozen=True)
class Manifest:
    height: int
    width: int
    channels: int
    num_identities: int
    num_images: int
    source: str
    version: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def problem(self) -> str | None:
        """What is wrong with the fields' types or ranges (``height is '28' (str), expected an integer >= 1``),
        or None when the manifest is well formed."""
        minimum = {"height": 1, "width": 1, "channels": 1, "num_identities": 0, "num_images": 0, "format_version": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                return f"{name} is {value!r} ({type(value).__name__}), expected an integer >= {low}"
        if self.channels not in (1, 3):
            return f"channels is {self.channels}, expected 1 or 3"
        for name in ("source", "version"):
            if not isinstance(getattr(self, name), str):
                return f"{name} is {getattr(self, name)!r}, expected a string"
        if not isinstance(self.extra, dict):
            return f"extra is {self.extra!r}, expected a mapping"
        return None


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a fresh temporary file beside ``path`` (unique name ``.<name>.<random>.tmp``),
    fsync it, rename it over ``path`` and fsync the folder: a reader (or a crash) sees the old file or the
    whole new one, never a part. On failure the temporary file is removed and the old file stays; a full
    disk or a permission problem becomes :class:`~sphereface_lib.errors.OutputWriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise (storage_error(path, exc) or exc) from exc
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the file the mode open() would
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = storage_cause(exc)
        if cause is not None:
            raise storage_error(path, cause) from exc
        raise
    _fsync_dir(path.parent)


def storage_cause(exc: BaseException) -> OSError | None:
    """The storage fault (disk full, quota, permissions, read-only) behind ``exc``, or None: ``exc`` itself or an
    exception in its chain, as torch.save wraps the ``OSError(ENOSPC)`` of a file write in a RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and storage_error("", current) is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


def write_fault(path: str | os.PathLike, exc: BaseException, fix: str) -> OutputWriteError | None:
    """An :class:`~sphereface_lib.errors.OutputWriteError` "disk full while writing <path> (...); <fix>" (or
    "cannot write" for a permission or read-only fault) when :func:`storage_cause` finds one behind ``exc``."""
    cause = storage_cause(exc)
    if cause is None:
        return None
    what = "disk full while writing" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot write"
    return OutputWriteError(f"{what} {os.fspath(path)} ({cause.strerror or cause}); {fix}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: what to do after a storage fault in a writer that leaves nothing behind
WRITE_FAULT_FIX = ("nothing partial was left behind; free space there (or fix the permissions) or write elsewhere, "
                   "then run the command again")


@contextmanager
def removed_on_failure(path: str | os.PathLike, fix: str = WRITE_FAULT_FIX) -> Iterator[None]:
    """Run the block; when it fails, delete ``path`` (a file or a folder being written) and re-raise, a storage
    fault as :func:`write_fault` naming ``path`` and ``fix``."""
    path = Path(path)
    try:
        yield
    except BaseException as exc:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        fault = write_fault(path, exc, fix)
        if fault is not None:
            raise fault from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves beside ``path`` when its process is killed
    mid-write; call only while no other process writes ``path``. Returns what was removed."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class PackedWriter:
    """Writes a packed dataset batch by batch, atomically: the folder appears only on :meth:`close`.

    Images go to ``<root>.partial/`` first; ``close`` writes labels, keys and manifest and renames
    the folder into place, so a reader never sees a half-written dataset.

    Example::

        with PackedWriter(root, height=112, width=96, channels=3, source="synthetic") as w:
            w.add(images, labels, keys)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        height: int,
        width: int,
        channels: int,
        source: str,
        version: str = "1",
        identities: Sequence[str] | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} already exists; pass overwrite=True to replace it")
        self.partial = self.root.with_name(self.root.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        with removed_on_failure(self.partial):
            self.partial.mkdir(parents=True)
            self._images = open(self.partial / _IMAGES, "wb")
        self.shape = (height, width, channels)
        self.source, self.version = source, version
        self.identities = list(identities) if identities is not None else None
        self.extra = dict(extra or {})
        self._labels: list[np.ndarray] = []
        self._keys: list[str] = []
        self._closed = False

    def add(self, images: np.ndarray, labels: Iterable[int], keys: Sequence[str] | None = None) -> None:
        """Append a batch: ``images`` uint8 (n, H, W, C) (or (n, H, W) for one channel)."""
        images = np.asarray(images)
        if images.ndim == 3 and self.shape[2] == 1:
            images = images[..., None]
        if images.dtype != np.uint8 or images.shape[1:] != self.shape:
            raise ValueError(
                f"images must be uint8 of shape (n, {', '.join(map(str, self.shape))}), "
                f"got {images.dtype} {images.shape}"
            )
        labels = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"need one label per image: {len(images)} images, labels shape {labels.shape}")
        if keys is None:
            start = len(self._keys)
            keys = [f"{start + i:08d}" for i in range(len(images))]
        if len(keys) != len(images):
            raise ValueError(f"need one key per image: {len(images)} images, {len(keys)} keys")
        if len(labels) and int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
        bad = [k for k in keys if k.splitlines() != [k] or not k]
        if bad:
            raise ValueError(f"keys must be non-empty and hold no line breaks: {bad[0]!r}")
        with self.failing_aborts():
            self._images.write(np.ascontiguousarray(images).tobytes())
        self._labels.append(labels)
        self._keys.extend(keys)

    def close(self) -> "PackedDataset":
        """Finish the dataset, move it into place and return a reader on it."""
        if self._closed:
            return PackedDataset(self.root)
        with self.failing_aborts():
            self._finish()
        self._closed = True
        return PackedDataset(self.root)

    @contextmanager
    def failing_aborts(self) -> Iterator[None]:
        """Run the block (a write into :attr:`partial`); when it fails, :meth:`abort` and re-raise, a full disk
        as :class:`~sphereface_lib.errors.OutputWriteError` naming the folder."""
        with removed_on_failure(self.partial):
            try:
                yield
            except BaseException:
                self.abort()
                raise

    def _finish(self) -> None:
        self._images.close()
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        num_ids = int(labels.max()) + 1 if len(labels) else 0
        identities = self.identities if self.identities is not None else [str(i) for i in range(num_ids)]
        if len(identities) < num_ids:
            raise ValueError(f"{len(identities)} identity names for labels up to {num_ids - 1}")
        bad_names = [n for n in identities if n.splitlines() != [n]]
        if bad_names:
            raise ValueError(f"identity names must be non-empty and hold no line breaks: {bad_names[0]!r}")
        np.save(self.partial / _LABELS, labels)
        (self.partial / _KEYS).write_text("".join(k + "\n" for k in self._keys), encoding="utf-8")
        (self.partial / _IDENTITIES).write_text("".join(n + "\n" for n in identities), encoding="utf-8")
        manifest = Manifest(
            height=self.shape[0], width=self.shape[1], channels=self.shape[2],
            num_identities=len(identities), num_images=len(labels),
            source=self.source, version=self.version, extra=self.extra,
        )
        (self.partial / _MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.partial, self.root)

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._closed:
            try:
                self._images.close()
            except OSError:  # the buffer's last write failed (disk full): the folder goes anyway
                pass
            shutil.rmtree(self.partial, ignore_errors=True)
            self._closed = True

    def __enter__(self) -> "PackedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PackedDataset:
    """Reads a packed dataset; ``images`` is a read-only memory map of shape (N, H, W, C)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        mpath = self.root / _MANIFEST
        if not self.root.is_dir():
            raise PackedFormatError(
                f"{self.root} is not a packed dataset: no such folder (pack images with data_prep, or use "
                "data.path=synthetic:<size> for the built-in data)")
        if not mpath.is_file():
            raise PackedFormatError(
                f"{self.root} is not a packed dataset: {_MANIFEST} is missing "
                f"({_REPACK})"
            )
        try:
            raw = json.loads(mpath.read_text(encoding="utf-8"))
            self.manifest = Manifest(**raw)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise PackedFormatError(f"{mpath}: unreadable manifest ({exc}); {_REPACK}") from None
        problem = self.manifest.problem()
        if problem is not None:
            raise PackedFormatError(f"{mpath}: {problem}; {_REPACK}")
        if self.manifest.format_version != FORMAT_VERSION:
            raise PackedFormatError(
                f"{mpath}: format_version {self.manifest.format_version}, this library reads {FORMAT_VERSION}; "
                f"{_REPACK}"
            )
        n = self.manifest.num_images
        expected = n * int(np.prod(self.manifest.image_shape))
        ipath = self.root / _IMAGES
        size = ipath.stat().st_size if ipath.exists() else -1
        if size != expected:
            raise PackedFormatError(f"{ipath}: {size} bytes, the manifest implies {expected}; {_REPACK}")
        self.images = (
            np.memmap(ipath, dtype=np.uint8, mode="r", shape=(n, *self.manifest.image_shape))
            if n else np.zeros((0, *self.manifest.image_shape), np.uint8)
        )
        lpath = self.root / _LABELS
        try:
            self.labels = np.load(lpath, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise PackedFormatError(f"{lpath}: unreadable labels ({exc}); {_REPACK}") from exc
        if self.labels.shape != (n,) or not np.issubdtype(self.labels.dtype, np.integer):
            raise PackedFormatError(
                f"{lpath}: {self.labels.dtype} of shape {self.labels.shape}, expected integers of shape ({n},); {_REPACK}")
        ids = self.manifest.num_identities
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= ids):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= ids))[0])
            raise PackedFormatError(
                f"{lpath}: label {int(self.labels[bad])} at row {bad} lies outside [0, {ids}) (the manifest's "
                f"num_identities); {_REPACK}")
        self.keys = self._lines(_KEYS)
        self.identities = self._lines(_IDENTITIES)
        if len(self.keys) != n:
            raise PackedFormatError(f"{self.root / _KEYS}: {len(self.keys)} keys for {n} images; {_REPACK}")
        if len(self.identities) != ids:
            raise PackedFormatError(
                f"{self.root / _IDENTITIES}: {len(self.identities)} names for the manifest's {ids} identities; "
                f"{_REPACK}")
        self._index: dict[str, int] | None = None

    def _lines(self, name: str) -> list[str]:
        path = self.root / name
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise PackedFormatError(f"{self.root} is not a complete packed dataset: {name} is missing; {_REPACK}") from None
        except UnicodeDecodeError as exc:
            raise PackedFormatError(f"{path}: not UTF-8 text ({exc}); {_REPACK}") from None

    def __len__(self) -> int:
        return self.manifest.num_images

    @property
    def num_identities(self) -> int:
        return self.manifest.num_identities

    def index_of(self, key: str) -> int:
        """Row of the image with this key; ``KeyError`` naming the dataset if absent."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"no image with key {key!r} in {self.root}") from None

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"PackedDataset({str(self.root)!r}: {m.num_images} images of {m.num_identities} identities, "
            f"{m.height}x{m.width}x{m.channels}, source={m.source!r})"
        )


SHARDS_INDEX = "shards.json"  #: the file that marks a folder as a set of per-rank shards (:func:`write_shards`)


def shard_name(index: int, count: int) -> str:
    """Folder name of shard ``index`` of ``count`` inside a shard set."""
    return f"shard-{index}-of-{count}"


def write_shards(dataset: PackedDataset, root: str | os.PathLike, count: int) -> Path:
    """Split ``dataset`` by identity into ``count`` packed folders ``root/shard-<k>-of-<count>`` (identity ``i``
    goes to shard ``i % count``) and mark ``root`` as a shard set with ``shards.json``. Labels, identity names and
    keys stay those of the whole pack, so every shard's head has all the classes; each shard's manifest and the
    index carry :func:`shard_set_id`, so a shard of another pack is refused. Holds ``root``'s output lock.
    Returns ``root``."""
    if not isinstance(count, int) or count < 2:
        raise UserError(f"write_shards: count must be an integer of at least 2 (one shard per rank), got {count!r}")
    if count > dataset.num_identities:
        raise UserError(f"write_shards: {dataset.root} has {dataset.num_identities} identities, fewer than "
                        f"{count} shards; write fewer shards")
    from ..locking import output_lock

    root = Path(root)
    m = dataset.manifest
    set_id = shard_set_id(dataset)
    with output_lock(root, "write_shards root"):
        for k in range(count):
            rows = np.flatnonzero(dataset.labels % count == k)
            with PackedWriter(root / shard_name(k, count), height=m.height, width=m.width, channels=m.channels,
                              source=m.source, version=m.version, identities=dataset.identities, overwrite=True,
                              extra={**m.extra, "shard": k, "shards": count, "shard_set": set_id}) as w:
                for lo in range(0, len(rows), 4096):
                    part = rows[lo:lo + 4096]
                    w.add(np.asarray(dataset.images[part]), dataset.labels[part], [dataset.keys[i] for i in part])
        atomic_write_text(root / SHARDS_INDEX, json.dumps({"shards": count, "source": str(dataset.root),
                                                           "shard_set": set_id}) + "\n")
    return root


def shard_set_id(dataset: PackedDataset) -> str:
    """A digest of a pack's shape, identity names and keys: the mark shared by the shards written from it."""
    h = hashlib.sha1(json.dumps([list(dataset.manifest.image_shape), dataset.identities]).encode("utf-8"))
    h.update("\n".join(dataset.keys).encode("utf-8"))
    return h.hexdigest()[:16]
