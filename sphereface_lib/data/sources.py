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
        if not is_shard_set(text):
            return PackedDataset(text)
        index = Path(text) / SHARDS_INDEX
        try:
            count = int(json.loads(index.read_text(encoding="utf-8"))["shards"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{index}: unreadable shard index ({exc}); "
                            "write the shards again with write_shards") from None
        if count != world:
            fix = "point data.path at the whole pack" if world == 1 else f"write {world} shards with write_shards"
            raise UserError(f"data.path {text} holds {count} shards, one per process, but the run has {world} "
                            f"process{'es' if world > 1 else ''}; start {count} processes with torchrun or {fix}")
        return PackedDataset(Path(text) / shard_name(rank, count))
    from .synthetic import SIZES, synthetic_benchmark

    size, _, split = text[len(SYNTHETIC_PREFIX):].partition("/")
    split = split or "train"
    if size not in SIZES:
        raise UserError(f"data {text!r}: unknown synthetic size {size!r}; use one of {sorted(SIZES)}")
    splits = ("train", "lfw", "ytf", "megaface_probe", "megaface_distractors")
    if split not in splits:
        raise UserError(f"data {text!r}: unknown split {split!r}; use one of {', '.join(splits)}")
    return getattr(synthetic_benchmark(SYNTHETIC_CACHE, size), split)
