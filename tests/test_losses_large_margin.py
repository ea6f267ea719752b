"""L-Softmax: against a per-sample acos reference, gradients in float64, and numerically hard inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from sphereface_lib.losses import LSOFTMAX_SCHEDULE, LambdaSchedule, LSoftmax, create_head


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_logits(x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, m: int, lam: float) -> torch.Tensor:
    """L-Softmax Eq. 4-6 one sample and one class at a time, theta by acos."""
    out = torch.empty(x.shape[0], w.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            xi, wj = x[i].tolist(), w[j].tolist()
            dot = sum(a * b for a, b in zip(xi, wj))
            if j != int(labels[i]):
                out[i, j] = dot
                continue
            nx, nw = math.sqrt(sum(a * a for a in xi)), math.sqrt(sum(b * b for b in wj))
            theta = math.acos(max(-1.0, min(1.0, dot / (nx * nw))))
            k = min(int(theta * m / math.pi), m - 1)
            psi = (-1) ** k * math.cos(m * theta) - 2 * k
            out[i, j] = nx * nw * (lam * math.cos(theta) + psi) / (1 + lam)
    return out


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("lam", [0.0, 5.0])
def test_matches_per_sample_reference(m: int, lam: float) -> None:
    torch.manual_seed(m)
    head = LSoftmax(6, 5, m=m, lambda_schedule=LambdaSchedule(fixed=lam)).double()
    x = torch.randn(7, 6, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (7,))
    expected = reference_logits(x, head.weight.detach(), labels, m, lam)
    torch.testing.assert_close(head(x, labels), expected, rtol=1e-10, atol=1e-10)


def test_m1_without_annealing_is_plain_inner_product() -> None:
    torch.manual_seed(0)
    head = LSoftmax(8, 4, m=1, lambda_schedule=LambdaSchedule(fixed=0.0))
    x, labels = torch.randn(5, 8), torch.randint(0, 4, (5,))
    torch.testing.assert_close(head(x, labels), x @ head.weight.detach().T, rtol=1e-5, atol=1e-5)


def test_margin_lowers_the_target_logit_only() -> None:
    torch.manual_seed(1)
    head = LSoftmax(8, 4, m=4, lambda_schedule=LambdaSchedule(fixed=0.0))
    x, labels = torch.randn(16, 8), torch.randint(0, 4, (16,))
    plain = x @ head.weight.detach().T
    logits = head(x, labels)
    target = F.one_hot(labels, 4).bool()
    torch.testing.assert_close(logits[~target], plain[~target], rtol=1e-5, atol=1e-5)
    assert bool((logits[target] <= plain[target] + 1e-5).all())


def test_official_schedule_and_update() -> None:
    head = create_head("lsoftmax", 4, 3, m=2)
    assert head.lambda_schedule == LSOFTMAX_SCHEDULE
    assert head.lambda_ == 1000.0
    head.update(20000)
    expected = 1000.0 * (1 + 0.000025 * 20000) ** -35.0
    assert head.lambda_ == pytest.approx(expected) and head.log_values() == {"lambda": head.lambda_}
    assert head.lambda_ < 1e-3
    restored = create_head("lsoftmax", 4, 3, m=2)
    restored.load_state_dict(head.state_dict())  # the iteration travels with checkpoints
    assert restored.lambda_ == head.lambda_


def test_gradcheck_float64() -> None:
    torch.manual_seed(2)
    head = LSoftmax(5, 4, m=4, lambda_schedule=LambdaSchedule(fixed=0.5)).double()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = head.weight.detach().clone().requires_grad_(True)
    labels = torch.randint(0, 4, (6,))
    assert torch.autograd.gradcheck(lambda x, w: functional_call(head, {"weight": w}, (x, labels)), (x, w))


def test_zero_norm_and_cos_plus_minus_one_are_finite() -> None:
    head = LSoftmax(4, 3, m=4, lambda_schedule=LambdaSchedule(fixed=0.0))
    w = head.weight.detach()
    x = torch.stack([torch.zeros(4), 2 * w[0], -3 * w[1], w[2]]).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2])
    loss, logits = head.compute_loss(x, labels)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    assert logits[0].abs().max() == 0  # zero features give zero logits
    wn = w.norm(dim=1)
    # cos = +1: psi(0) = 1, logit = ||W|| ||x||; cos = -1: psi(pi) = -(2m - 1) = -7.
    torch.testing.assert_close(logits[1, 0], 2 * wn[0] ** 2)
    torch.testing.assert_close(logits[2, 1], -7 * 3 * wn[1] ** 2)


@pytest.mark.parametrize("bad", [0, 5, 2.0, True])
def test_bad_m_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="margin m"):
        LSoftmax(4, 3, m=bad)  # type: ignore[arg-type]
