"""Checks on features before any score is computed: a NaN, infinite or all-zero feature never becomes a result."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError


class BadFeaturesError(UserError):
    """Feature rows no score can be computed from; ``rows`` lists them (as named in the message)."""

    def __init__(self, message: str, rows: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)


class NonFiniteFeaturesError(BadFeaturesError):
    """Features that hold NaN or infinity (issue 15.1): every evaluation function refuses them, naming the rows."""


class ZeroFeaturesError(BadFeaturesError):
    """All-zero feature rows (issue 27): a zero vector has no direction, so its cosine score is undefined."""


def _listing(items: Sequence[object], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _labels(bad: np.ndarray, rows: np.ndarray | None) -> list[int]:
    return [int(r) for r in (bad if rows is None else np.asarray(rows)[bad])]


def require_finite(features: np.ndarray, name: str, rows: np.ndarray | None = None, what: str = "rows") -> None:
    """Raise :class:`NonFiniteFeaturesError` naming the ``rows`` (default 0 .. N-1) of ``features`` (N, D)
    that hold NaN or infinity; ``name`` is the argument, ``what`` what a row is (rows, images, videos)."""
    x = np.asarray(features)
    finite_rows = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if finite_rows.all():
        return
    labels = _labels(np.flatnonzero(~finite_rows), rows)
    raise NonFiniteFeaturesError(
        f"{name}: {len(labels)} of {len(x)} feature rows hold NaN or infinity ({what} {_listing(labels)}); "
        "no score computed from them would mean anything: check the model (a diverged training gives such "
        "features) or the images it was given", labels)


def require_nonzero(features: np.ndarray, name: str, rows: np.ndarray | None = None, what: str = "rows") -> None:
    """Raise :class:`ZeroFeaturesError` naming the ``rows`` (default 0 .. N-1) of ``features`` (N, D) whose
    every entry is zero (no direction: a cosine with them is undefined, not 0)."""
    x = np.asarray(features)
    zero_rows = ~x.reshape(len(x), -1).any(axis=1)
    if not zero_rows.any():
        return
    labels = _labels(np.flatnonzero(zero_rows), rows)
    raise ZeroFeaturesError(
        f"{name}: {len(labels)} of {len(x)} feature rows are all zero ({what} {_listing(labels)}); a "
        "zero feature has no direction, so no cosine score can be computed from it: check the model (one that "
        "outputs zeros is broken or untrained) or the file", labels)


def require_usable(features: np.ndarray, name: str, rows: np.ndarray | None = None, what: str = "rows") -> None:
    """:func:`require_finite` then :func:`require_nonzero`: features every score can be computed from."""
    require_finite(features, name, rows, what)
    require_nonzero(features, name, rows, what)
