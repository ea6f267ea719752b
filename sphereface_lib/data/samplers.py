"""Batch samplers: which rows of a packed dataset form the batch of each training iteration.

A sampler is a pure function of (seed, iteration), so a resumed run draws exactly the batches an
uninterrupted one would, and data-parallel ranks split one global batch between them.
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol

import numpy as np

from ..errors import UserError

_SAMPLERS: dict[str, Callable[..., "BatchSampler"]] = {}


class BatchSampler(Protocol):
    batch_size: int

    def indices(self, iteration: int) -> np.ndarray:
        """Row indices (int64, length ``batch_size``) of the global batch for ``iteration``."""
        ...


def _entropy(seed: int | tuple[int, ...]) -> tuple[int, ...]:
    """A seed as the leading words of a generator's entropy: ``s`` -> (s,), a tuple as it is."""
    return seed if isinstance(seed, tuple) else (seed,)


def register_sampler(name: str):
    """Class decorator: make a sampler available to :func:`create_sampler` under ``name``."""

    def deco(cls):
        _SAMPLERS[name] = cls
        return cls

    return deco


def list_samplers() -> list[str]:
    """Names accepted by :func:`create_sampler`."""
    return sorted(_SAMPLERS)


def create_sampler(
    name: str, labels: np.ndarray, batch_size: int, seed: int | tuple[int, ...], **kwargs,
) -> BatchSampler:
    """Build a sampler by name (``"random"``, ...) over the given labels; ``seed`` is an integer or a tuple
    of them (e.g. (seed, rank) for a rank's own shard). An unknown name or keyword raises
    :class:`~sphereface_lib.errors.UserError` listing the valid ones."""
    try:
        cls = _SAMPLERS[name]
    except KeyError:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(list_samplers())}") from None
    accepted = list(inspect.signature(cls).parameters)[3:]  # after labels, batch_size, seed
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserError(
            f"sampler {name!r} takes no argument {unknown[0]!r}; it accepts "
            f"{', '.join(accepted) if accepted else 'no keyword arguments'}")
    return cls(labels, batch_size, seed, **kwargs)


@register_sampler("random")
class EpochShuffleSampler:
    """Every image once per epoch, in a fresh permutation per epoch (seeded by (seed, epoch))."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int | tuple[int, ...]) -> None:
        n = len(labels)
        if batch_size < 1 or n < 1:
            raise ValueError(f"need a positive batch size and a non-empty dataset, got {batch_size}, {n} images")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([*_entropy(self.seed), epoch]).permutation(self.n)}
        return self._cache[epoch]

    def indices(self, iteration: int) -> np.ndarray:
        start = iteration * self.batch_size
        out = np.empty(self.batch_size, dtype=np.int64)
        filled = 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.n)
            take = min(self.batch_size - filled, self.n - offset)
            out[filled:filled + take] = self._permutation(epoch)[offset:offset + take]
            filled += take
        return out


@register_sampler("pk")
class PKSampler:
    """P identities x K images per batch, for losses computed within the batch (triplet, contrastive).

    ``batch_size`` = P * K. Iteration i draws, from a generator seeded by (seed, i), P distinct identities
    and K images of each (with replacement for identities that have fewer than K images). The batch is
    P contiguous blocks of K rows, one identity each, so data-parallel ranks that split it contiguously
    get whole identities when P is a multiple of the number of ranks.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int | tuple[int, ...], k: int = 4) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) < 1:
            raise ValueError(f"sampler 'pk' needs a non-empty 1-d label array, got shape {labels.shape}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"sampler 'pk': k (images per identity) must be a positive integer, got {k!r}")
        if batch_size < k or batch_size % k:
            raise ValueError(
                f"sampler 'pk': batch_size ({batch_size}) must be a positive multiple of k ({k}); "
                f"e.g. batch_size={max(1, batch_size // k) * k}")
        identities, counts = np.unique(labels, return_counts=True)
        self.p, self.k = batch_size // k, int(k)
        if len(identities) < self.p:
            raise ValueError(
                f"sampler 'pk': the dataset has {len(identities)} identities, fewer than P = batch_size / k = "
                f"{self.p}; lower batch_size or raise k")
        self.batch_size, self.seed = batch_size, seed
        order = np.argsort(labels, kind="stable")
        self._rows = np.split(order, np.cumsum(counts)[:-1])  # rows of each identity, in label order

    def indices(self, iteration: int) -> np.ndarray:
        rng = np.random.default_rng([*_entropy(self.seed), iteration])
        chosen = rng.choice(len(self._rows), size=self.p, replace=False)
        return np.concatenate([
            rng.choice(self._rows[i], size=self.k, replace=len(self._rows[i]) < self.k) for i in chosen
        ]).astype(np.int64)
