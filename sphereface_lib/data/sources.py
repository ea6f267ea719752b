"""Where a dataset comes from: a packed folder on disk, or the built-in synthetic data by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from .packed import SHARDS_INDEX, PackedDataset, shard_name

SYNTHETIC_PREFIX = "synthetic:"
#: where ``synthetic:...`` datasets are generated and cached, relative to the working directory
SYNTHETIC_CACHE = Path(os.environ.get("SPHEREFACE_CACHE", "cache")) / "synthetic"


def is_shard_set(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` is a folder of per-rank shards (it holds ``shards.json``)."""
    return not str(spec).startswith(SYNTHETIC_PREFIX) and (Path(spec) / SHARDS_INDEX).is_file()


def _read_index(root: Path) -> dict:
    index = root / SHARDS_INDEX
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
        int(content["shards"])
        return content
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{index}: unreadable shard index ({exc}); "
                        "write the shards again with write_shards") from None


def check_shard_count(spec: str | os.PathLike, world: int) -> int | None:
    """The number of shards when ``spec`` is a shard set (None otherwise); :class:`UserError` when it is not
    ``world``, the number of processes. Cheap and collective-free: call it before the process group starts."""
    if not is_shard_set(spec):
        return None
    count = int(_read_index(Path(spec))["shards"])
    if count != world:
        fix = "point data.path at the whole pack" if world == 1 else f"write {world} shards with write_shards"
        raise UserError(f"data.path {spec} holds {count} shards, one per process, but the run has {world} "
                        f"process{'es' if world > 1 else ''}; start {count} processes with torchrun or {fix}")
    return count


def _open_shard(root: Path, rank: int, count: int) -> PackedDataset:
    """Shard ``rank`` of the set ``root``, checked to be that shard of the pack ``shards.json`` names."""
    index = _read_index(root)
    shard = PackedDataset(root / shard_name(rank, count))
    extra = shard.manifest.extra
    mark = (extra.get("shard"), extra.get("shards"), extra.get("shard_set"))
    expected = (rank, count, index.get("shard_set"))
    if "shard_set" not in index:  # written before shard sets were marked: the position alone is checked
        mark, expected = mark[:2], expected[:2]
    if mark != expected:
        raise UserError(
            f"{shard.root} is not shard {rank} of {count} of the set {root} (written from {index.get('source')}, "
            f"set {index.get('shard_set')}): its manifest says shard {extra.get('shard')} of {extra.get('shards')}, "
            f"set {extra.get('shard_set')}; a shard of another pack or split was copied in: write the shards again "
            "with write_shards into an empty folder")
    return shard


def open_packed(spec: str | os.PathLike, rank: int = 0, world: int = 1) -> PackedDataset:
    """A packed dataset from a folder, or ``"synthetic:<size>"`` / ``"synthetic:<size>/<split>"``.

    A folder holding ``shards.json`` (see :func:`~sphereface_lib.data.packed.write_shards`) is a set of per-rank
    shards: process ``rank`` of ``world`` opens its own shard only, and the set must hold ``world`` shards.

    ``synthetic:default`` is the training split of the built-in synthetic benchmark at the CPU default
    size (generated once into ``SYNTHETIC_CACHE``); splits are ``train``, ``lfw``, ``ytf``,
    ``megaface_probe`` and ``megaface_distractors``.
    """
    text = str(spec)
    if not text.startswith(SYNTHETIC_PREFIX):
        count = check_shard_count(text, world)
        if count is None:
            return PackedDataset(text)
        return _open_shard(Path(text), rank, count)
    from .synthetic import SIZES, synthetic_benchmark

    size, _, split = text[len(SYNTHETIC_PREFIX):].partition("/")
    split = split or "train"
    if size not in SIZES:
        raise UserError(f"data {text!r}: unknown synthetic size {size!r}; use one of {sorted(SIZES)}")
    splits = ("train", "lfw", "ytf", "megaface_probe", "megaface_distractors")
    if split not in splits:
        raise UserError(f"data {text!r}: unknown split {split!r}; use one of {', '.join(splits)}")
    return getattr(synthetic_benchmark(SYNTHETIC_CACHE, size), split)
