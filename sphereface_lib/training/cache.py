"""A model cache: notebooks that need the same model share one training run.

An entry is a run folder ``<cache_dir>/<key>/`` (checkpoint, metrics log, ``done.json``) where the key
hashes what changes the trained weights: the config (all of it except where the run writes and whether it
draws a progress bar), the dataset manifest, the library's source (every ``.py`` file, see
:func:`~sphereface_lib.fingerprint.library_fingerprint`) and torch's version. A file lock serializes
processes that race for the same entry: the first trains, the others wait and then load. A run killed half
way resumes from its last checkpoint on the next call; an entry that cannot be read is moved aside
(``<key>.corrupt-<n>``, with a warning) and trained again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from filelock import FileLock

from ..data.packed import Manifest, atomic_write_text
from ..data.sources import open_packed
from ..fingerprint import library_fingerprint
from .config import TrainConfig
from .trainer import RunFileError, TrainResult, load_checkpoint, resolve_device, train

DONE_NAME = "done.json"

logger = logging.getLogger(__name__)


def cache_key(config: TrainConfig, manifest: Manifest) -> str:
    """Hex digest identifying the trained model ``config`` produces on the dataset of ``manifest`` with this
    library's source and this torch."""
    d = config.to_dict()
    d["run"].pop("out_dir")
    d["run"].pop("progress")
    blob = json.dumps(
        {"config": d, "dataset": dataclasses.asdict(manifest), "library": library_fingerprint(),
         "torch": str(torch.__version__)},
        sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _set_aside(entry: Path, exc: Exception) -> None:
    """Rename an unreadable entry to ``<key>.corrupt-<n>`` (kept for inspection) so it trains again."""
    n = 1
    while entry.with_name(f"{entry.name}.corrupt-{n}").exists():
        n += 1
    aside = entry.with_name(f"{entry.name}.corrupt-{n}")
    os.replace(entry, aside)
    logger.warning("model cache: %s cannot be read (%s); moved it to %s and training it again", entry, exc, aside)


def train_cached(config: TrainConfig, cache_dir: str | os.PathLike) -> TrainResult:
    """The model ``config`` trains (eval mode) with its metrics log: loaded from ``cache_dir`` when a
    previous call trained it, trained (and stored) otherwise. Safe when several processes race."""
    manifest = open_packed(config.data.path).manifest
    key = cache_key(config, manifest)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / key
    done = entry / DONE_NAME
    device = resolve_device(config.run.device)
    if done.is_file():
        try:
            return load_checkpoint(entry, device)
        except (RunFileError, FileNotFoundError):
            pass  # set aside below, under the lock
    with FileLock(cache_dir / f"{key}.lock"):
        if done.is_file():  # another process finished it while we waited, or the entry is broken
            try:
                return load_checkpoint(entry, device)
            except (RunFileError, FileNotFoundError) as exc:
                _set_aside(entry, exc)
        run = dataclasses.replace(config, run=dataclasses.replace(config.run, out_dir=str(entry)))
        try:
            result = train(run)
        except RunFileError as exc:  # a killed entry whose checkpoint or log cannot be read
            _set_aside(entry, exc)
            result = train(run)
        atomic_write_text(done, json.dumps({"key": key, "config": result.config.to_dict(),
                                            "dataset": dataclasses.asdict(manifest)}, indent=2) + "\n")
        return result
