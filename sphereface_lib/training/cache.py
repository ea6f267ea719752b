"""A model cache: notebooks that need the same model share one training run.

An entry is a run folder ``<cache_dir>/<key>/`` (checkpoint, metrics log, ``done.json``) where the key
hashes what changes the trained weights: the config (all of it except where the run writes and whether it
draws a progress bar), the dataset manifest, the library's source (every ``.py`` file, see
:func:`~sphereface_lib.fingerprint.library_fingerprint`) and torch's version. A file lock serializes
processes that race for the same entry: the first trains, the others wait and then load. A run killed half
way resumes from its last checkpoint on the next call; an entry that cannot be read is moved aside
(``<key>.corrupt-<n>``, with a warning) and trained again.

On a machine with several GPUs the cache trains each model data-parallel, one ``torchrun`` process per GPU
(``$SPHEREFACE_TRAIN_PROCESSES`` sets the count, also on CPU with gloo): the notebooks of the paper profile
need no change to use them. A model trained by several processes has its own key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from filelock import FileLock

from ..data.packed import Manifest, atomic_write_text
from ..data.sources import open_packed
from ..errors import UserError
from ..fingerprint import library_fingerprint
from .config import ConfigError, TrainConfig
from .trainer import (CHECKPOINT_NAME, RunFileError, TrainingDiverged, TrainResult, load_checkpoint, read_checkpoint,
                      resolve_device, train)

DONE_NAME = "done.json"
PROCESSES_ENV = "SPHEREFACE_TRAIN_PROCESSES"
TORCHRUN_LOG = "torchrun.log"

logger = logging.getLogger(__name__)


def cache_key(config: TrainConfig, manifest: Manifest, processes: int = 1) -> str:
    """Hex digest identifying the trained model ``config`` produces on the dataset of ``manifest`` with this
    library's source and this torch, trained by ``processes`` data-parallel processes."""
    d = config.to_dict()
    d["run"].pop("out_dir")
    d["run"].pop("progress")
    parts = {"config": d, "dataset": dataclasses.asdict(manifest), "library": library_fingerprint(),
             "torch": str(torch.__version__)}
    if processes > 1:  # the batch is split and its gradients reduced across processes: other last bits
        parts["processes"] = processes
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def training_processes(config: TrainConfig, device: torch.device) -> int:
    """Processes a cached model trains with: ``$SPHEREFACE_TRAIN_PROCESSES`` when set, else one per visible GPU
    when training on CUDA (no device index given) outside a torchrun launch, else one; the batch must split
    evenly between them."""
    value = os.environ.get(PROCESSES_ENV)
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"{PROCESSES_ENV}={value!r}: write a whole number of processes, at least 1 (e.g. 2)")
        n = int(value)
    elif device.type == "cuda" and device.index is None and "WORLD_SIZE" not in os.environ:
        n = max(1, torch.cuda.device_count())
    else:
        n = 1
    if config.optim.batch_size % n:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} does not split between {n} training processes; "
                          f"set {PROCESSES_ENV} to a divisor of it (1 for one process)")
    return n


def train_with_torchrun(run: TrainConfig, processes: int) -> None:
    """Train ``run`` in ``processes`` data-parallel processes (``torch.distributed.run --standalone``) into its
    ``run.out_dir``, their output in ``<out_dir>/torchrun.log``; their ``error:`` line is raised here."""
    out = Path(run.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    atomic_write_text(config_file, run.to_yaml())
    library_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (library_parent, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "sphereface_lib.train", "--config", str(config_file)]
    with open(out / TORCHRUN_LOG, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code == 0:
        return
    text = (out / TORCHRUN_LOG).read_text(errors="replace")
    errors = [line[len("error: "):] for line in text.splitlines() if line.startswith("error: ")]
    message = errors[0] if errors else f"torchrun exited with status {code}; see {out / TORCHRUN_LOG}"
    if errors and message.startswith("training diverged"):
        raise TrainingDiverged(message)
    if errors:  # a mistake in the config, the data or the run folder, as the command line reports it
        raise UserError(message)
    raise RuntimeError(message)


def _set_aside(entry: Path, exc: Exception) -> None:
    """Rename an unreadable entry to ``<key>.corrupt-<n>`` (kept for inspection) so it trains again."""
    n = 1
    while entry.with_name(f"{entry.name}.corrupt-{n}").exists():
        n += 1
    aside = entry.with_name(f"{entry.name}.corrupt-{n}")
    os.replace(entry, aside)
    logger.warning("model cache: %s cannot be read (%s); moved it to %s and training it again", entry, exc, aside)


def _train(run: TrainConfig, processes: int, device: torch.device) -> TrainResult:
    if processes == 1:
        return train(run)
    checkpoint = Path(run.run.out_dir) / CHECKPOINT_NAME
    if checkpoint.is_file():  # a killed entry's unreadable checkpoint: RunFileError here, set aside by the caller
        read_checkpoint(checkpoint)
    train_with_torchrun(run, processes)
    return load_checkpoint(run.run.out_dir, device)


def train_cached(config: TrainConfig, cache_dir: str | os.PathLike) -> TrainResult:
    """The model ``config`` trains (eval mode) with its metrics log: loaded from ``cache_dir`` when a
    previous call trained it, trained (and stored) otherwise. Safe when several processes race."""
    manifest = open_packed(config.data.path).manifest
    device = resolve_device(config.run.device)
    processes = training_processes(config, device)
    key = cache_key(config, manifest, processes)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / key
    done = entry / DONE_NAME
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
            result = _train(run, processes, device)
        except RunFileError as exc:  # a killed entry whose checkpoint or log cannot be read
            _set_aside(entry, exc)
            result = _train(run, processes, device)
        atomic_write_text(done, json.dumps({"key": key, "config": result.config.to_dict(),
                                            "dataset": dataclasses.asdict(manifest)}, indent=2) + "\n")
        return result
