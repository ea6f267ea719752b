"""L-Softmax (Liu et al., "Large-Margin Softmax Loss for Convolutional Neural Networks", ICML 2016).

The large-margin softmax that A-Softmax builds on (SphereFace, Section 3.3 and Table 4): weights keep
their norms and the target logit ||W_y|| ||x|| psi(theta_y) uses the same psi as A-Softmax (L-Softmax
Eq. 6, SphereFace Eq. 7), computed by the shared Chebyshev :func:`~sphereface_lib.losses.angular.psi`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .angular import SUPPORTED_M, LambdaSchedule, psi
from .base import Head, check_inputs, float32_autocast_off, register_head

# The official L-Softmax MNIST solver (wy1iu/LargeMargin_Softmax_Loss, largemargin_inner_product_param):
# base 1000, gamma 0.000025, power 35, lambda_min 0.
LSOFTMAX_SCHEDULE = LambdaSchedule(base=1000.0, gamma=0.000025, power=35.0, lambda_min=0.0)


def compute_dtype(features: Tensor) -> torch.dtype:
    """float64 for float64 inputs (gradient checks), float32 for everything else (fp16 / bf16 included)."""
    return torch.promote_types(features.dtype, torch.float32)


@register_head("lsoftmax")
class LSoftmax(Head):
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
        super().__init__(feat_dim, num_classes)
        if not isinstance(m, int) or isinstance(m, bool) or m not in SUPPORTED_M:
            raise ValueError(f"L-Softmax margin m must be an integer in {SUPPORTED_M}, got {m!r}")
        self.m = m
        self.lambda_schedule = lambda_schedule if lambda_schedule is not None else LSOFTMAX_SCHEDULE
        weight = torch.empty(num_classes, feat_dim)
        nn.init.xavier_uniform_(weight)
        self.weight = nn.Parameter(weight)
        # A Python int saved through get/set_extra_state: reading lambda never synchronizes with a GPU.
        self.iteration = 0

    @property
    def lambda_(self) -> float:
        """The current lambda."""
        return self.lambda_schedule(self.iteration)

    def update(self, iteration: int) -> None:
        self.iteration = int(iteration)

    def get_extra_state(self) -> dict[str, int]:
        return {"iteration": self.iteration}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.iteration = int(state["iteration"])

    def log_values(self) -> dict[str, float]:
        return {"lambda": self.lambda_}

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            dtype = compute_dtype(features)
            x, w = features.to(dtype), self.weight.to(dtype)
            # ||W_j|| ||x|| cos theta_j == W_j^T x; the factored form keeps cos in [-1, 1] for psi and is
            # finite for zero-norm features (cos = 0 there).
            x_norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            w_norm = torch.linalg.vector_norm(w, dim=1)
            cos = F.linear(F.normalize(x, dim=1), F.normalize(w, dim=1)).clamp(-1.0, 1.0)
            lam = self.lambda_
            cos_y = cos.gather(1, labels[:, None])
            target = (lam * cos_y + psi(cos_y, self.m)) / (1.0 + lam)
            return x_norm * w_norm * cos.scatter(1, labels[:, None], target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, lambda_schedule={self.lambda_schedule}"
