"""A model cache: notebooks that need the same model share one training run.

An entry is a run folder ``<cache_dir>/<key>/`` (checkpoint, metrics log, ``done.json``) where the key
hashes what changes the trained weights: the config (all of it except where the run writes and whether it
draws a progress bar), the dataset manifest, the source of the modules training depends on
(:func:`~sphereface_lib.fingerprint.training_fingerprint`), torch's version, and how many processes and CPU threads
train it. On the CPU a cached model trains with :data:`CACHE_THREADS` intra-op threads however it is asked for,
alone or beside others (``training/parallel.py``), so its bits do not depend on what ran beside it. A file lock
serializes processes that race for the same entry: the first trains, the others wait and then load. A run killed
half way resumes from its last checkpoint on the next call; an entry that cannot be read, or that holds the model
of another config than its key's, is moved aside (``<key>.corrupt-<n>``, with a warning) and trained again.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch
from filelock import FileLock

from ..data.packed import Manifest, atomic_write_text
from ..data.sources import open_packed
from ..errors import UserError
from ..fingerprint import training_fingerprint
from .config import ConfigError, TrainConfig
from .trainer import (CHECKPOINT_NAME, RunFileError, TrainingDiverged, TrainResult, load_checkpoint, read_checkpoint,
                      resolve_device, train)

DONE_NAME = "done.json"
PROCESSES_ENV = "SPHEREFACE_TRAIN_PROCESSES"
TORCHRUN_LOG = "torchrun.log"
#: intra-op threads of a cached model trained by one CPU process: fixed, so that its bits are the same whether it
#: trained alone or beside other models in a pool of worker processes (one per core, training/parallel.py)
CACHE_THREADS = 1

logger = logging.getLogger(__name__)


def _model_config(config: TrainConfig) -> dict[str, Any]:
    """The config as the key sees it: all of it except where the run writes and whether it draws a progress bar."""
    d = config.to_dict()
    d["run"].pop("out_dir")
    d["run"].pop("progress")
    return d


def key_inputs(config: TrainConfig, manifest: Manifest, processes: int = 1, threads: int | None = None
               ) -> dict[str, Any]:
    """What :func:`cache_key` hashes (stored in an entry's ``done.json``)."""
    parts: dict[str, Any] = {"config": _model_config(config), "dataset": dataclasses.asdict(manifest),
                             "library": training_fingerprint(), "torch": str(torch.__version__)}
    if processes > 1:  # the batch is split and its gradients reduced across processes: other last bits
        parts["processes"] = processes
    if threads is not None:  # a CPU reduction split between threads sums in another order: other last bits
        parts["threads"] = threads
    return parts


def cache_key(config: TrainConfig, manifest: Manifest, processes: int = 1, threads: int | None = None) -> str:
    """Hex digest identifying the trained model ``config`` produces on the dataset of ``manifest`` with this
    library's training source and this torch, trained by ``processes`` data-parallel processes with ``threads``
    intra-op threads each (None: not fixed by the cache, as on a GPU)."""
    blob = json.dumps(key_inputs(config, manifest, processes, threads), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class CachePlan(NamedTuple):
    """How the cache trains a config: its key, dataset manifest, device, process count and CPU thread count."""

    key: str
    manifest: Manifest
    device: torch.device
    processes: int
    threads: int | None


def cache_plan(config: TrainConfig) -> CachePlan:
    """The entry ``config`` trains into and how (one CPU process: :data:`CACHE_THREADS` threads)."""
    manifest = open_packed(config.data.path).manifest
    device = resolve_device(config.run.device)
    processes = training_processes(config, device)
    threads = CACHE_THREADS if device.type == "cpu" and processes == 1 else None
    return CachePlan(cache_key(config, manifest, processes, threads), manifest, device, processes, threads)


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


def _differences(stored: Any, asked: Any, prefix: str = "") -> list[str]:
    """``key: stored (asked: value)`` for each leaf where two config dicts differ."""
    if isinstance(stored, dict) and isinstance(asked, dict):
        return [d for k in sorted(set(stored) | set(asked), key=str)
                for d in _differences(stored.get(k), asked.get(k), f"{prefix}{k}.")]
    return [] if stored == asked else [f"{prefix[:-1]}: {stored!r} (asked: {asked!r})"]


def _load_entry(entry: Path, config: TrainConfig, device: torch.device) -> TrainResult:
    """The model of a finished entry, checked against the config asked for: an entry holding another config's
    model (or a run stopped early) raises :class:`RunFileError`, like an unreadable one."""
    result = load_checkpoint(entry, device)
    differ = _differences(_model_config(result.config), _model_config(config))
    if result.iteration != config.optim.iterations:
        differ.append(f"iteration {result.iteration} (asked: {config.optim.iterations})")
    if differ:
        raise RunFileError(f"{entry} holds the model of another config than its key's: {'; '.join(differ[:3])}"
                           f"{'; ...' if len(differ) > 3 else ''}")
    return result


@contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch intra-op threads (None: as they are), restored afterwards."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    plan = cache_plan(config)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / plan.key
    done = entry / DONE_NAME
    if done.is_file():
        try:
            return _load_entry(entry, config, plan.device)
        except (RunFileError, FileNotFoundError):
            pass  # set aside below, under the lock
    with FileLock(cache_dir / f"{plan.key}.lock"):
        if done.is_file():  # another process finished it while we waited, or the entry is broken
            try:
                return _load_entry(entry, config, plan.device)
            except (RunFileError, FileNotFoundError) as exc:
                _set_aside(entry, exc)
        run = dataclasses.replace(config, run=dataclasses.replace(config.run, out_dir=str(entry)))
        with _intra_op_threads(plan.threads):
            try:
                result = _train(run, plan.processes, plan.device)
            except RunFileError as exc:  # a killed entry whose checkpoint or log cannot be read
                _set_aside(entry, exc)
                result = _train(run, plan.processes, plan.device)
        stored = {"key": plan.key, **key_inputs(result.config, plan.manifest, plan.processes, plan.threads)}
        atomic_write_text(done, json.dumps(stored, indent=2) + "\n")
        return result
