"""The A-Softmax family (SphereFace, CVPR 2017, Section 3): softmax, modified softmax, A-Softmax.

Notation of the paper: features x, class weights W_j, theta_j the angle between x and W_j.

* :class:`Softmax`          logits W_j^T x + b_j                          (Eq. 1)
* :class:`ModifiedSoftmax`  ||W_j|| = 1, b_j = 0: logits ||x|| cos theta_j  (Eq. 4-5)
* :class:`ASoftmax`         target logit ||x|| psi(theta_y), psi of Eq. 7, annealed with lambda as the
                            official implementation does; other logits ||x|| cos theta_j. By default it
                            back-propagates the official Caffe layer's gradient, not Eq. 7's
                            (:class:`OfficialMarginLogits`).
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
# T_m'(c), m = 1..4.
_CHEBYSHEV_SLOPE = {
    1: lambda c: torch.ones_like(c),
    2: lambda c: 4 * c,
    3: lambda c: 12 * c**2 - 3,
    4: lambda c: 32 * c**3 - 16 * c,
}
SUPPORTED_M = (1, 2, 3, 4)
GRADIENTS = ("official", "exact")


def cos_m_theta(cos_theta: Tensor, m: int) -> Tensor:
    """cos(m theta) from cos(theta) by the Chebyshev polynomial T_m (no acos)."""
    if m not in _CHEBYSHEV:
        raise ValueError(f"m must be an integer in 0..4, got {m!r}")
    return _CHEBYSHEV[m](cos_theta)


def _branch(c: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """(k, (-1)^k) of Eq. 7 for cos(theta) = ``c`` in [-1, 1]: k counts the thresholds cos(j pi / m), j = 1..m-1,
    that ``c`` lies at or below."""
    k = torch.zeros_like(c)
    for j in range(1, m):
        k = k + (c <= math.cos(j * math.pi / m)).to(c.dtype)
    return k, 1.0 - 2.0 * torch.remainder(k, 2.0)


def psi(cos_theta: Tensor, m: int) -> Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m] (Eq. 7), from cos(theta).

    k counts the thresholds cos(j pi / m), j = 1..m-1, that cos(theta) lies at or below, so no acos is
    needed; psi is continuous and monotonically decreasing on [0, pi], from 1 to -(2m - 1).
    """
    c = cos_theta.clamp(-1.0, 1.0)
    k, sign = _branch(c, m)
    return sign * cos_m_theta(c, m) - 2.0 * k


def psi_and_slope(cos_theta: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """(psi, d psi / d cos theta) of Eq. 7 as functions of cos(theta) in [-1, 1], m = 1..4; the slope is
    (-1)^k T_m'(cos theta), 0 at the thresholds cos(j pi / m) from either side."""
    if m not in _CHEBYSHEV_SLOPE:
        raise ValueError(f"m must be an integer in {SUPPORTED_M}, got {m!r}")
    c = cos_theta.clamp(-1.0, 1.0)
    k, sign = _branch(c, m)
    return sign * cos_m_theta(c, m) - 2.0 * k, sign * _CHEBYSHEV_SLOPE[m](c)


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
    [-1, 1]; ``weight`` rows must already have unit length (see :class:`UnitWeights`). Safe for features of
    any finite norm."""
    unit = F.normalize(_scale_rows_to_unit_range(features), dim=1)
    return F.linear(unit, weight.to(features.dtype)).clamp(-1.0, 1.0)


def _scale_rows_to_unit_range(features: Tensor) -> Tensor:
    """Each row times the power of two that brings its largest magnitude into [0.5, 1) (as far as the dtype's
    exponent range allows; zero rows stay zero). The scaling is exact, so normalizing the result gives bit for
    bit what normalizing the row gives, but the sum of squares can no longer overflow (float32: ||x|| above
    about 1.8e19) or underflow (below about 1e-19)."""
    _, exponent = torch.frexp(features.abs().amax(dim=1, keepdim=True))
    largest = math.floor(math.log2(torch.finfo(features.dtype).max))  # 2**largest: the largest finite power of 2
    return features * torch.exp2((-exponent).clamp(max=largest).to(features.dtype))


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
    gradient is taken at the unit rows as they are, its radial part not projected out, as in Caffe; its value
    is the derivative of the head's logits, except for :class:`ASoftmax` with ``gradient="official"``, whose
    weight gradient is the Caffe layer's top_diff^T x (a plain inner product's, the margin ignored); for
    :class:`ModifiedSoftmax`, whose logits are W_j^T x, the two coincide. Other ports: clcarwin's
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


def margin_cos(cos: Tensor, labels: Tensor, lambda_value: Tensor, m: int) -> Tensor:
    """cos theta_j (N, C) with the target column replaced by (lambda cos theta_y + psi(theta_y)) / (1 + lambda)."""
    lam = lambda_value.to(cos.dtype)
    cos_y = cos.gather(1, labels[:, None])
    return cos.scatter(1, labels[:, None], (lam * cos_y + psi(cos_y, m)) / (1.0 + lam))


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
        return margin_cos(cos, labels, self.lambda_value, self.m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, lambda_schedule={self.lambda_schedule}"


class OfficialMarginLogits(torch.autograd.Function):
    """A-Softmax's annealed logits (forward) with the gradient of the official Caffe layer (backward).

    ``apply(features, weight, labels, lambda_value, m)``: features (N, D) and unit-row weight (C, D) in the
    compute dtype, labels (N,), lambda a 0-d tensor. The forward is the formula of :class:`ASoftmax`. The
    backward is ``MarginInnerProductLayer::Backward_cpu`` of the official SphereFace Caffe:

    * weight: top_diff^T x, the gradient of a plain inner product (the margin is ignored);
    * features, class j != y: top_diff_j w_j, the plain gradient;
    * features, target y (m >= 2): top_diff_y (lambda w_y + a_w w_y + a_x x) / (1 + lambda), where
      (a_w, a_x) is the exact pair (psi'(cos theta_y), (psi - cos theta_y psi') / ||x||) of d(||x|| psi)/dx
      scaled to unit length; for m = 1 the plain gradient.
    """

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, labels: Tensor, lambda_value: Tensor, m: int) -> Tensor:
        norm, cos = norm_and_cos(features, weight)
        ctx.m = m
        ctx.save_for_backward(features, weight, labels, lambda_value, norm, cos.gather(1, labels[:, None]))
        return norm * margin_cos(cos, labels, lambda_value, m)

    @staticmethod
    def backward(ctx, grad_logits: Tensor) -> tuple[Tensor | None, ...]:
        features, weight, labels, lambda_value, norm, cos_y = ctx.saved_tensors
        grad_features = grad_weight = None
        # in float32 as the forward: torch.compile traces this backward inside the caller's autocast region
        with float32_autocast_off(grad_logits):
            if ctx.needs_input_grad[0]:
                grad_features = grad_logits @ weight
                if ctx.m > 1:
                    grad_features = grad_features + _official_target_correction(
                        grad_logits, features, weight, labels, lambda_value, norm, cos_y, ctx.m)
            if ctx.needs_input_grad[1]:
                grad_weight = grad_logits.t() @ features
        return grad_features, grad_weight, None, None, None


def _official_target_correction(
    grad_logits: Tensor, features: Tensor, weight: Tensor, labels: Tensor, lambda_value: Tensor,
    norm: Tensor, cos_y: Tensor, m: int,
) -> Tensor:
    """(N, D): the official target-class feature gradient minus the plain one, top_diff_y w_y.

    Caffe's unit pair (a_w, a_x) = (psi', (psi - c psi') / ||x||) / sqrt(psi'^2 + (psi - c psi')^2 / ||x||^2),
    written with both entries times ||x|| so that zero, tiny and huge norms stay finite: a_w = psi' ||x|| / r,
    a_x = (psi - c psi') / r with r = hypot(psi' ||x||, psi - c psi') (r > 0: psi - c psi' and psi' never
    vanish together, and at ||x|| = 0, c = 0 where psi = psi(pi / 2) != 0).
    """
    psi_y, slope = psi_and_slope(cos_y, m)
    along_w = slope * norm
    along_x = psi_y - cos_y * slope
    r = torch.hypot(along_w, along_x)
    share = grad_logits.gather(1, labels[:, None]) / (1.0 + lambda_value.to(features.dtype))
    return (share * (along_w / r - 1.0)) * weight[labels] + (share * along_x / r) * features


@register_head("asoftmax")
class ASoftmax(UnitWeights, AnnealedMarginHead):
    """A-Softmax (Eq. 6-7): target logit ||x|| psi(theta_y), other logits ||x|| cos theta_j.

    Weight rows are kept at unit length in place as the official layer keeps them (:class:`UnitWeights`),
    there is no bias and features are not normalized. Annealing as in the official code: the target logit is
    (lambda ||x|| cos theta_y + ||x|| psi(theta_y)) / (1 + lambda), lambda from ``lambda_schedule``
    evaluated at the iteration given to :meth:`update` (the trainer calls it every iteration). Caffe's layer
    increments its iteration counter before computing lambda, so its 0-based step i uses lambda(i + 1) where
    this head, given ``update(i)``, uses lambda(i).

    ``gradient`` chooses the backward; the forward is the same for both.

    * ``"official"`` (the default): what the official Caffe ``MarginInnerProduct`` layer back-propagates
      (:class:`OfficialMarginLogits`), which is not the gradient of Eq. 7. For the target class, the two
      coefficients of the exact feature gradient d(||x|| psi(theta_y))/dx = psi' w_y + (psi - cos psi') x /
      ||x|| are rescaled to a unit-length pair, which changes the length and the direction of that gradient;
      the weight gradient is that of a plain inner product, top_diff^T x, with the margin ignored. The
      published SphereFace numbers came from this gradient and its lambda schedule, and the official README
      warns that the exact gradient needs other lambda settings, so the companion trains with it.
    * ``"exact"``: the exact autograd gradient of the logits above (Eq. 7 differentiated as written).
    """

    def __init__(
        self,
        feat_dim: int,
        num_classes: int,
        m: int = 4,
        lambda_schedule: LambdaSchedule | None = None,
        gradient: str = "official",
    ) -> None:
        if gradient not in GRADIENTS:
            raise ValueError(f"ASoftmax gradient must be 'official' or 'exact', got {gradient!r}")
        super().__init__(feat_dim, num_classes, m, lambda_schedule or LambdaSchedule())
        self.gradient = gradient
        unit_rows_(self.weight)  # on the sphere from the start

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            if self.gradient == "exact":
                norm, cos = norm_and_cos(features, self.unit_weight())
                return norm * self.margin_cos(cos, labels)
            dtype = compute_dtype(features)
            return OfficialMarginLogits.apply(
                features.to(dtype), self.unit_weight().to(dtype), labels, self.lambda_value, self.m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gradient={self.gradient!r}"
