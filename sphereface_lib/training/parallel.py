"""Independent cached models trained side by side: one worker process per core, each with the cache's fixed
thread count (:data:`~sphereface_lib.training.cache.CACHE_THREADS`), so a model's bits are the same whether it
trained alone or beside others.

Each worker goes through :func:`~sphereface_lib.training.cache.train_cached` (one code path for locking, resume
and corrupt entries). Only single-process CPU training is pooled: a model that trains on a GPU or with several
``torchrun`` processes (``$SPHEREFACE_TRAIN_PROCESSES``) is trained one after the other, as before.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Sequence

import torch

from ..errors import UserError
from .cache import CACHE_THREADS, DONE_NAME, cache_plan, train_cached
from .config import TrainConfig
from .trainer import TrainingDiverged, TrainResult


def default_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker() -> None:
    torch.set_num_threads(CACHE_THREADS)
    torch.set_num_interop_threads(CACHE_THREADS)


def _train_one(config: TrainConfig, cache_dir: str) -> tuple[str, str] | None:
    """Train one entry in a worker; a mistake in the config or data, or a divergence, comes back as
    (kind, message) rather than as an exception object that might not survive pickling."""
    try:
        train_cached(config, cache_dir)
    except TrainingDiverged as exc:
        return "diverged", str(exc)
    except UserError as exc:
        return "user", str(exc)
    return None


def _raise(outcome: tuple[str, str]) -> None:
    kind, message = outcome
    raise (TrainingDiverged if kind == "diverged" else UserError)(message)


def train_missing(configs: Sequence[TrainConfig], cache_dir: str | os.PathLike, workers: int | None = None) -> int:
    """Train the CPU single-process models of ``configs`` that ``cache_dir`` lacks, ``workers`` at a time (None:
    :func:`default_workers`) in spawned processes; return how many the pool trained (0 when fewer than two were
    missing or one worker was asked for: :func:`train_cached` then trains them here, with the same threads).
    The first error stops the models not yet started and is raised here as one line."""
    cache_dir = Path(cache_dir)
    missing: dict[str, TrainConfig] = {}
    for config in configs:
        plan = cache_plan(config)
        if plan.device.type == "cpu" and plan.processes == 1 and not (cache_dir / plan.key / DONE_NAME).is_file():
            missing.setdefault(plan.key, config)
    n = min(len(missing), default_workers() if workers is None else workers)
    if n < 2:
        return 0
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as pool:
        pending: set[Future] = {pool.submit(_train_one, c, str(cache_dir)) for c in missing.values()}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                outcome = future.result()
                if outcome is not None:
                    for other in pending:
                        other.cancel()
                    _raise(outcome)
    return len(missing)


def train_cached_many(configs: Sequence[TrainConfig], cache_dir: str | os.PathLike, workers: int | None = None
                      ) -> list[TrainResult]:
    """The models of ``configs``, in order: the missing ones trained side by side (:func:`train_missing`), then
    each loaded from ``cache_dir`` (or trained here: GPU and torchrun models, one after the other)."""
    train_missing(configs, cache_dir, workers)
    return [train_cached(config, cache_dir) for config in configs]
