"""L-Softmax (Liu et al., "Large-Margin Softmax Loss for Convolutional Neural Networks", ICML 2016).

The large-margin softmax that A-Softmax builds on (SphereFace, Section 3.3 and Table 4): weights keep
their norms and the target logit ||W_y|| ||x|| psi(theta_y) uses the same psi as A-Softmax (L-Softmax
Eq. 6, SphereFace Eq. 7), computed by the shared Chebyshev :func:`~sphereface_lib.losses.angular.psi`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .angular import AnnealedMarginHead, LambdaSchedule, norm_and_cos
from .base import check_inputs, compute_dtype, float32_autocast_off, register_head

# The official L-Softmax MNIST solver (wy1iu/LargeMargin_Softmax_Loss, largemargin_inner_product_param):
# base 1000, gamma 0.000025, power 35, lambda_min 0.
LSOFTMAX_SCHEDULE = LambdaSchedule(base=1000.0, gamma=0.000025, power=35.0, lambda_min=0.0)


@register_head("lsoftmax")
class LSoftmax(AnnealedMarginHead):
    """L-Softmax: logits W_j^T x (no bias); target logit ||W_y|| ||x|| psi(theta_y) (L-Softmax Eq. 4-6).

    Annealed as in the official code: target logit
    (lambda ||W_y|| ||x|| cos theta_y + ||W_y|| ||x|| psi(theta_y)) / (1 + lambda), lambda from
    ``lambda_schedule`` at the iteration given to :meth:`update`. Unlike A-Softmax the weights are not
    normalized, so the decision depends on ||W_j|| as well as on the angle (SphereFace, Section 3.3).
    """

    def __init__(
        self,
        feat_dim: int,
        num_classes: int,
        m: int = 4,
        lambda_schedule: LambdaSchedule | None = None,
    ) -> None:
        super().__init__(feat_dim, num_classes, m, lambda_schedule or LSOFTMAX_SCHEDULE)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            # ||W_j|| ||x|| cos theta_j == W_j^T x; the factored form keeps cos in [-1, 1] for psi and is
            # finite for zero-norm features (cos = 0 there).
            weight = self.weight.to(compute_dtype(features))
            w_norm = torch.linalg.vector_norm(weight, dim=1)
            x_norm, cos = norm_and_cos(features, weight / w_norm.clamp_min(1e-12)[:, None])
            return x_norm * w_norm * self.margin_cos(cos, labels)
