"""Additive margins that followed SphereFace: CosFace / LMCL and ArcFace.

Both normalize features and weights and scale every logit by s, so only angles matter:

* :class:`CosFace` (Wang et al., CVPR 2018, Eq. 4):   target logit s (cos theta_y - m)
* :class:`ArcFace` (Deng et al., CVPR 2019, Eq. 3):   target logit s cos(theta_y + m), with the fallback
  of the reference implementation where theta_y + m would pass pi (see :func:`arc_margin`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .angular import UnitWeights, cosine, unit_rows_, xavier_weight
from .base import Head, check_inputs, compute_dtype, float32_autocast_off, register_head


def arc_margin(cos_theta: Tensor, m: float) -> Tensor:
    """cos(theta + m) where theta + m <= pi, else cos(theta) - m sin(m); from cos(theta), without acos.

    This is the ``easy_margin=False`` rule of insightface (MXNet ``train_softmax.py``:
    ``threshold = cos(pi - m)``, ``mm = sin(pi - m) * m``; the target is cos(theta + m) if
    cos(theta) > threshold, else cos(theta) - mm). The target stays monotonically decreasing in theta over
    [0, pi], with a downward step of cos(m) + m sin(m) - 1 >= 0 at theta = pi - m. sin(theta) = sqrt(max(1 - cos^2, tiny)) so that the gradient stays finite at
    cos(theta) = +-1.
    """
    c = cos_theta.clamp(-1.0, 1.0)
    sin = torch.sqrt((1.0 - c * c).clamp_min(torch.finfo(c.dtype).tiny))
    cos_theta_plus_m = c * math.cos(m) - sin * math.sin(m)
    return torch.where(c > math.cos(math.pi - m), cos_theta_plus_m, c - math.sin(math.pi - m) * m)


class _NormalizedMarginHead(UnitWeights, Head):
    """Logits s cos theta_j with ||x|| = ||W_j|| = 1 (weight rows kept at unit length in place, as
    :class:`~sphereface_lib.losses.angular.UnitWeights` says); subclasses say how the margin changes the target."""

    def __init__(self, feat_dim: int, num_classes: int, s: float, m: float) -> None:
        super().__init__(feat_dim, num_classes)
        if not s > 0:
            raise ValueError(f"{type(self).__name__}: scale s must be > 0, got {s!r}")
        self.s, self.m = float(s), float(m)
        self.weight = unit_rows_(xavier_weight(num_classes, feat_dim))

    def margin(self, cos_y: Tensor) -> Tensor:
        """The target class's cos after the margin."""
        raise NotImplementedError

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            cos = cosine(features.to(compute_dtype(features)), self.unit_weight())
            target = self.margin(cos.gather(1, labels[:, None]))
            return self.s * cos.scatter(1, labels[:, None], target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"


@register_head("cosface")
class CosFace(_NormalizedMarginHead):
    """CosFace / large margin cosine loss: target logit s (cos theta_y - m) (CosFace Eq. 4; s=64, m=0.35)."""

    def __init__(self, feat_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35) -> None:
        if not 0 <= m < 2:
            raise ValueError(f"CosFace margin m must lie in [0, 2), got {m!r}")
        super().__init__(feat_dim, num_classes, s, m)

    def margin(self, cos_y: Tensor) -> Tensor:
        return cos_y - self.m


@register_head("arcface")
class ArcFace(_NormalizedMarginHead):
    """ArcFace: target logit s cos(theta_y + m) (ArcFace Eq. 3; s=64, m=0.5), fallback of :func:`arc_margin`."""

    def __init__(self, feat_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        if not 0 <= m < math.pi / 2:
            raise ValueError(f"ArcFace margin m must lie in [0, pi/2) radians, got {m!r}")
        super().__init__(feat_dim, num_classes, s, m)

    def margin(self, cos_y: Tensor) -> Tensor:
        return arc_margin(cos_y, self.m)
