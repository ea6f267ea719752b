"""How many impostor scores a TAR at a FAR needs before it can be relied on (one rule for the CLI and notebooks)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: expected false accepts (impostors x FAR) below which a TAR at that FAR rests on too few impostor scores
MIN_FALSE_ACCEPTS = 50


def usable_far(n_impostors: int, fars: Sequence[float], min_false_accepts: int = MIN_FALSE_ACCEPTS) -> list[float]:
    """The FARs (in the given order) at which ``n_impostors * far >= min_false_accepts``.

    A TAR at a FAR is set by the threshold at the top ``n_impostors * far`` impostor scores; below a few dozen
    expected false accepts that threshold (and the TAR) rests on a handful of scores, so such a FAR is not
    used for a verdict. A relative tolerance of 1e-9 absorbs float rounding of the product.
    """
    where = "usable_far"
    if isinstance(n_impostors, bool) or not isinstance(n_impostors, (int, np.integer)) or n_impostors < 0:
        raise ValueError(f"{where}: n_impostors must be a non-negative integer, got {n_impostors!r}")
    if isinstance(min_false_accepts, bool) or not isinstance(min_false_accepts, (int, np.integer)) \
            or min_false_accepts < 1:
        raise ValueError(f"{where}: min_false_accepts must be a positive integer, got {min_false_accepts!r}")
    far_values = np.asarray(fars, dtype=np.float64)
    if far_values.ndim != 1:
        raise ValueError(f"{where}: fars must be 1-D, got shape {far_values.shape}")
    bad = ~np.isfinite(far_values)
    if bad.any():
        raise ValueError(f"{where}: fars contains NaN or inf (first at index {(int(np.argmax(bad)),)})")
    if np.any((far_values <= 0.0) | (far_values > 1.0)):
        raise ValueError(f"{where}: every far must be in (0, 1], got {far_values.tolist()}")
    threshold = min_false_accepts * (1.0 - 1e-9)
    return [float(far) for far in far_values if n_impostors * far >= threshold]
