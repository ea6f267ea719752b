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

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

FORMAT_VERSION = 1
_IMAGES = "images.u8"
_LABELS = "labels.npy"
_KEYS = "keys.txt"
_IDENTITIES = "identities.txt"
_MANIFEST = "manifest.json"


class PackedFormatError(ValueError):
    """A packed dataset folder is missing, incomplete or inconsistent."""


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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (creating its folder) through a hidden temporary file renamed over it, so a
    reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        self.partial.mkdir(parents=True)
        self.shape = (height, width, channels)
        self.source, self.version = source, version
        self.identities = list(identities) if identities is not None else None
        self.extra = dict(extra or {})
        self._images = open(self.partial / _IMAGES, "wb")
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
        bad = [k for k in keys if "\n" in k]
        if bad:
            raise ValueError(f"keys must not contain newlines: {bad[0]!r}")
        self._images.write(np.ascontiguousarray(images).tobytes())
        self._labels.append(labels)
        self._keys.extend(keys)

    def close(self) -> "PackedDataset":
        """Finish the dataset, move it into place and return a reader on it."""
        if self._closed:
            return PackedDataset(self.root)
        self._images.close()
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        num_ids = int(labels.max()) + 1 if len(labels) else 0
        identities = self.identities if self.identities is not None else [str(i) for i in range(num_ids)]
        if len(identities) < num_ids:
            raise ValueError(f"{len(identities)} identity names for labels up to {num_ids - 1}")
        np.save(self.partial / _LABELS, labels)
        (self.partial / _KEYS).write_text("".join(k + "\n" for k in self._keys))
        (self.partial / _IDENTITIES).write_text("".join(n + "\n" for n in identities))
        manifest = Manifest(
            height=self.shape[0], width=self.shape[1], channels=self.shape[2],
            num_identities=len(identities), num_images=len(labels),
            source=self.source, version=self.version, extra=self.extra,
        )
        (self.partial / _MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.partial, self.root)
        self._closed = True
        return PackedDataset(self.root)

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._closed:
            self._images.close()
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
        if not mpath.is_file():
            raise PackedFormatError(
                f"{self.root} is not a packed dataset: {_MANIFEST} is missing "
                "(produce one with sphereface_lib.data.synthetic or data_prep)"
            )
        try:
            raw = json.loads(mpath.read_text())
            self.manifest = Manifest(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise PackedFormatError(f"{mpath}: unreadable manifest ({exc})") from exc
        if self.manifest.format_version != FORMAT_VERSION:
            raise PackedFormatError(
                f"{mpath}: format_version {self.manifest.format_version}, this library reads {FORMAT_VERSION}"
            )
        n = self.manifest.num_images
        expected = n * int(np.prod(self.manifest.image_shape))
        ipath = self.root / _IMAGES
        size = ipath.stat().st_size if ipath.exists() else -1
        if size != expected:
            raise PackedFormatError(f"{ipath}: {size} bytes, the manifest implies {expected}")
        self.images = (
            np.memmap(ipath, dtype=np.uint8, mode="r", shape=(n, *self.manifest.image_shape))
            if n else np.zeros((0, *self.manifest.image_shape), np.uint8)
        )
        self.labels = np.load(self.root / _LABELS)
        if self.labels.shape != (n,):
            raise PackedFormatError(f"{self.root / _LABELS}: shape {self.labels.shape}, expected ({n},)")
        self.keys = (self.root / _KEYS).read_text().splitlines()
        self.identities = (self.root / _IDENTITIES).read_text().splitlines()
        if len(self.keys) != n:
            raise PackedFormatError(f"{self.root / _KEYS}: {len(self.keys)} keys for {n} images")
        self._index: dict[str, int] | None = None

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
