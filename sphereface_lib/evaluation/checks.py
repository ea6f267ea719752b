"""Checks on features before any score is computed: a NaN or infinite feature never becomes a result."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError


class NonFiniteFeaturesError(UserError):
    """Features that hold NaN or infinity (issue 15.1): every evaluation function refuses them, naming the rows."""


def _listing(items: Sequence[object], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def require_finite(features: np.ndarray, name: str, rows: np.ndarray | None = None, what: str = "rows") -> None:
    """Raise :class:`NonFiniteFeaturesError` naming the ``rows`` (default 0 .. N-1) of ``features`` (N, D)
    that hold NaN or infinity; ``name`` is the argument, ``what`` what a row is (rows, images, videos)."""
    x = np.asarray(features)
    finite_rows = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if finite_rows.all():
        return
    bad = np.flatnonzero(~finite_rows)
    labels = bad if rows is None else np.asarray(rows)[bad]
    raise NonFiniteFeaturesError(
        f"{name}: {len(bad)} of {len(x)} feature rows hold NaN or infinity ({what} {_listing(list(labels))}); "
        "no score computed from them would mean anything: check the model (a diverged training gives such "
        "features) or the images it was given")
