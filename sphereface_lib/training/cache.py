"""A model cache: notebooks that need the same model share one training run.

An entry is a run folder ``<cache_dir>/<key>/`` (checkpoint, metrics log, ``done.json``) where the key
hashes the config (all of it except where the run writes and whether it draws a progress bar), the
dataset manifest and the library and torch versions. A file lock serializes processes that race for
the same entry: the first trains, the others wait and then load. A run killed half way resumes from
its last checkpoint on the next call.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path

import torch

from ..data.packed import Manifest, atomic_write_text
from ..data.sources import open_packed
from .config import TrainConfig
from .trainer import TrainResult, _library_version, load_checkpoint, resolve_device, train

DONE_NAME = "done.json"


def cache_key(config: TrainConfig, manifest: Manifest) -> str:
    """Hex digest identifying the trained model ``config`` produces on the dataset of ``manifest``."""
    d = config.to_dict()
    d["run"].pop("out_dir")
    d["run"].pop("progress")
    blob = json.dumps(
        {"config": d, "dataset": dataclasses.asdict(manifest), "library": _library_version(),
         "torch": str(torch.__version__)},
        sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


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
        return load_checkpoint(entry, device)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():  # another process finished it while we waited
            return load_checkpoint(entry, device)
        result = train(dataclasses.replace(config, run=dataclasses.replace(config.run, out_dir=str(entry))))
        atomic_write_text(done, json.dumps({"key": key, "config": result.config.to_dict(),
                                            "dataset": dataclasses.asdict(manifest)}, indent=2) + "\n")
        return result
