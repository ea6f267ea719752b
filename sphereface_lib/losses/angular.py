"""The A-Softmax family (SphereFace, CVPR 2017, Section 3): softmax, modified softmax, A-Softmax.

Notation of the paper: features x, class weights W_j, theta_j the angle between x and W_j.

* :class:`Softmax`          logits W_j^T x + b_j                          (Eq. 1)
* :class:`ModifiedSoftmax`  ||W_j|| = 1, b_j = 0: logits ||x|| cos theta_j  (Eq. 4-5)
* :class:`ASoftmax`         target logit ||x|| psi(theta_y), psi of Eq. 7, annealed with lambda as the
                            official implementation does; other logits ||x|| cos theta_j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Head, check_inputs, compute_dtype, float32_autocast_off, register_head

# cos(m theta) as a polynomial in cos(theta): the Chebyshev polynomials T_m, m = 0..4.
_CHEBYSHEV = {
    0: lambda c: torch.ones_like(c),
    1: lambda c: c,
    2: lambda c: 2 * c**2 - 1,
    3: lambda c: 4 * c**3 - 3 * c,
    4: lambda c: 8 * c**4 - 8 * c**2 + 1,
}
SUPPORTED_M = (1, 2, 3, 4)


def cos_m_theta(cos_theta: Tensor, m: int) -> Tensor:
    """cos(m theta) from cos(theta) by the Chebyshev polynomial T_m (no acos)."""
    if m not in _CHEBYSHEV:
        raise ValueError(f"m must be an integer in 0..4, got {m!r}")
    return _CHEBYSHEV[m](cos_theta)


def psi(cos_theta: Tensor, m: int) -> Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m] (Eq. 7), from cos(theta).

    k counts the thresholds cos(j pi / m), j = 1..m-1, that cos(theta) lies at or below, so no acos is
    needed; psi is continuous and monotonically decreasing on [0, pi], from 1 to -(2m - 1).
    """
    c = cos_theta.clamp(-1.0, 1.0)
    k = torch.zeros_like(c)
    for j in range(1, m):
        k = k + (c <= math.cos(j * math.pi / m)).to(c.dtype)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * cos_m_theta(c, m) - 2.0 * k


@dataclass(frozen=True)
class LambdaSchedule:
    """lambda(iteration) = max(lambda_min, base * (1 + gamma * iteration) ** (-power)); ``fixed`` overrides.

    The official SphereFace solver anneals lambda from 1000 towards 5 so that training starts close to
    the modified softmax and ends close to A-Softmax (the paper's Section 4.1 / the released prototxt).
    """

    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    lambda_min: float = 5.0
    fixed: float | None = None

    def __post_init__(self) -> None:
        if self.fixed is not None and self.fixed < 0:
            raise ValueError(f"LambdaSchedule.fixed must be >= 0, got {self.fixed}")
        if self.base < 0 or self.lambda_min < 0 or self.gamma < 0:
            raise ValueError("LambdaSchedule: base, gamma and lambda_min must be >= 0")

    def __call__(self, iteration: int) -> float:
        if self.fixed is not None:
            return float(self.fixed)
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))


def norm_and_cos(features: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """(||x||, cos theta_j) in float32 (float64 for float64 input), safe for zero and very large features."""
    dtype = compute_dtype(features)
    x = features.to(dtype)
    # the norm in float64: float32's sum of squares overflows once ||x|| exceeds about 1.8e19
    norm = torch.linalg.vector_norm(x.double(), dim=1, keepdim=True).to(dtype)
    return norm, cosine(x, weight)


def cosine(features: Tensor, weight: Tensor) -> Tensor:
    """cos theta_j (N, C) between features and unit-length class weights, in the features' dtype, clamped to
    [-1, 1]; ``weight`` rows must already have unit length (see :class:`UnitWeights`)."""
    return F.linear(F.normalize(features, dim=1), weight.to(features.dtype)).clamp(-1.0, 1.0)


def xavier_weight(num_classes: int, feat_dim: int) -> nn.Parameter:
    """Class weights (C, D) from Caffe's ``xavier`` filler of the official prototxt: U(-sqrt(3/D), sqrt(3/D))."""
    bound = math.sqrt(3.0 / feat_dim)
    return nn.Parameter(torch.empty(num_classes, feat_dim).uniform_(-bound, bound))


def unit_rows_(weight: Tensor) -> Tensor:
    """Scale every row of ``weight`` to unit length in place, outside autograd; returns ``weight``."""
    with torch.no_grad():
        # .data: the projection is invisible to autograd's version check, as Caffe's in-place blob rescale
        target = weight if torch.compiler.is_compiling() else weight.data
        target.div_(torch.linalg.vector_norm(target, dim=1, keepdim=True).clamp_min(1e-12))
    return weight


class UnitWeights:
    """Mixin of the heads whose logits use ||W_j|| = 1: ``self.weight`` is kept on the unit sphere in place.

    As the official Caffe ``MarginInnerProduct`` layer does (it rescales every row of its weight blob to unit
    length at the start of each forward), the rows are initialized on the sphere and re-projected in place,
    outside autograd, at every forward; the logits use the weight as it is, so SGD, momentum and weight decay
    act on unit rows and no normalized copy of the (C, D) matrix is built or kept for backward. The weight
    gradient is therefore Caffe's (the radial part is not projected out). Other ports: clcarwin's
    sphereface_pytorch renormalizes a copy on every forward and back-propagates through it; OpenSphere
    normalizes the parameter in place.
    """

    weight: nn.Parameter

    def unit_weight(self) -> Tensor:
        """The class weights, re-projected onto the unit sphere in place."""
        return unit_rows_(self.weight)


@register_head("softmax")
class Softmax(Head):
    """The original softmax: a fully connected layer with bias (Eq. 1); labels are ignored."""

    def __init__(self, feat_dim: int, num_classes: int) -> None:
        super().__init__(feat_dim, num_classes)
        self.fc = nn.Linear(feat_dim, num_classes)

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        check_inputs(self, features, None)
        with float32_autocast_off(features):
            dtype = compute_dtype(features)
            return F.linear(features.to(dtype), self.fc.weight.to(dtype), self.fc.bias.to(dtype))


@register_head("modified_softmax")
class ModifiedSoftmax(UnitWeights, Head):
    """Softmax with ||W_j|| = 1 and b_j = 0: logit_j = ||x|| cos theta_j (Eq. 4-5); labels are ignored.

    The weight rows are kept at unit length in place (:class:`UnitWeights`)."""

    def __init__(self, feat_dim: int, num_classes: int) -> None:
        super().__init__(feat_dim, num_classes)
        self.weight = unit_rows_(xavier_weight(num_classes, feat_dim))

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        check_inputs(self, features, None)
        with float32_autocast_off(features):
            norm, cos = norm_and_cos(features, self.unit_weight())
            return norm * cos


class AnnealedMarginHead(Head):
    """Shared by A-Softmax and L-Softmax: an integer margin m on the target angle, annealed by lambda.

    The target cosine becomes (lambda cos theta_y + psi(theta_y)) / (1 + lambda), lambda from
    ``lambda_schedule`` at the iteration given to :meth:`update`. The iteration is a Python int saved
    through ``get_extra_state``, so reading lambda never synchronizes with a GPU; the forward reads lambda
    from a 0-d buffer filled by :meth:`update`, so ``torch.compile`` does not recompile as lambda changes.
    """

    def __init__(self, feat_dim: int, num_classes: int, m: int, lambda_schedule: LambdaSchedule) -> None:
        super().__init__(feat_dim, num_classes)
        if not isinstance(m, int) or isinstance(m, bool) or m not in SUPPORTED_M:
            raise ValueError(f"{type(self).__name__} margin m must be an integer in {SUPPORTED_M}, got {m!r}")
        self.m = m
        self.lambda_schedule = lambda_schedule
        self.weight = xavier_weight(num_classes, feat_dim)
        self.register_buffer("lambda_value", torch.zeros(()), persistent=False)
        self.update(0)

    @property
    def lambda_(self) -> float:
        """The current lambda."""
        return self.lambda_schedule(self.iteration)

    def update(self, iteration: int) -> None:
        self.iteration = int(iteration)
        self.lambda_value.fill_(self.lambda_)

    def get_extra_state(self) -> dict[str, int]:
        return {"iteration": self.iteration}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.update(int(state["iteration"]))

    def log_values(self) -> dict[str, float]:
        return {"lambda": self.lambda_}

    def margin_cos(self, cos: Tensor, labels: Tensor) -> Tensor:
        """cos theta_j with the target column replaced by (lambda cos theta_y + psi(theta_y)) / (1 + lambda)."""
        lam = self.lambda_value.to(cos.dtype)
        cos_y = cos.gather(1, labels[:, None])
        return cos.scatter(1, labels[:, None], (lam * cos_y + psi(cos_y, self.m)) / (1.0 + lam))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, lambda_schedule={self.lambda_schedule}"


@register_head("asoftmax")
class ASoftmax(UnitWeights, AnnealedMarginHead):
    """A-Softmax (Eq. 6-7): target logit ||x|| psi(theta_y), other logits ||x|| cos theta_j.

    Weight rows are kept at unit length in place as the official layer keeps them (:class:`UnitWeights`),
    there is no bias and features are not normalized. Annealing as in the official code: the target logit is
    (lambda ||x|| cos theta_y + ||x|| psi(theta_y)) / (1 + lambda), lambda from ``lambda_schedule``
    evaluated at the iteration given to :meth:`update` (the trainer calls it every iteration).

    Gradients: this head back-propagates the exact autograd gradient of the logits above. The official
    Caffe ``MarginInnerProduct`` layer instead back-propagates a rescaled feature gradient (it treats
    parts of the expression as constants in its hand-written backward), so trajectories differ slightly
    from Caffe's. The forward formula is the same; Caffe's layer increments its iteration counter before
    computing lambda, so its 0-based step i uses lambda(i + 1) where this head, given ``update(i)``,
    uses lambda(i).
    """

    def __init__(
        self,
        feat_dim: int,
        num_classes: int,
        m: int = 4,
        lambda_schedule: LambdaSchedule | None = None,
    ) -> None:
        super().__init__(feat_dim, num_classes, m, lambda_schedule or LambdaSchedule())
        unit_rows_(self.weight)  # on the sphere from the start

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            norm, cos = norm_and_cos(features, self.unit_weight())
            return norm * self.margin_cos(cos, labels)
