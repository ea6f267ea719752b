"""Where a dataset comes from: a packed folder on disk, or the built-in synthetic data by name."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .packed import PackedDataset

SYNTHETIC_PREFIX = "synthetic:"
#: where ``synthetic:...`` datasets are generated and cached, relative to the working directory
SYNTHETIC_CACHE = Path(os.environ.get("SPHEREFACE_CACHE", "cache")) / "synthetic"


def open_packed(spec: str | os.PathLike) -> PackedDataset:
    """A packed dataset from a folder, or ``"synthetic:<size>"`` / ``"synthetic:<size>/<split>"``.

    ``synthetic:default`` is the training split of the built-in synthetic benchmark at the CPU default
    size (generated once into ``SYNTHETIC_CACHE``); splits are ``train``, ``lfw``, ``ytf``,
    ``megaface_probe`` and ``megaface_distractors``.
    """
    text = str(spec)
    if not text.startswith(SYNTHETIC_PREFIX):
        return PackedDataset(text)
    from .synthetic import SIZES, synthetic_benchmark

    size, _, split = text[len(SYNTHETIC_PREFIX):].partition("/")
    split = split or "train"
    if size not in SIZES:
        raise UserError(f"data {text!r}: unknown synthetic size {size!r}; use one of {sorted(SIZES)}")
    splits = ("train", "lfw", "ytf", "megaface_probe", "megaface_distractors")
    if split not in splits:
        raise UserError(f"data {text!r}: unknown split {split!r}; use one of {', '.join(splits)}")
    return getattr(synthetic_benchmark(SYNTHETIC_CACHE, size), split)
