"""CosFace and ArcFace: against per-sample acos references, gradients in float64, hard inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from sphereface_lib.losses.angular import UnitWeights
from sphereface_lib.losses import ArcFace, CosFace, arc_margin, create_head


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_logits(x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, kind: str, s: float, m: float) -> torch.Tensor:
    """s cos theta_j, with the target's margin applied from theta = acos(cos theta), one entry at a time."""
    out = torch.empty(x.shape[0], w.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for j in range(w.shape[0]):
            xi, wj = x[i].tolist(), w[j].tolist()
            nx, nw = math.sqrt(sum(a * a for a in xi)), math.sqrt(sum(b * b for b in wj))
            cos = max(-1.0, min(1.0, sum(a * b for a, b in zip(xi, wj)) / (nx * nw)))
            if j == int(labels[i]):
                theta = math.acos(cos)
                if kind == "cosface":
                    cos = cos - m
                elif theta + m < math.pi:  # ArcFace Eq. 3
                    cos = math.cos(theta + m)
                else:  # insightface easy_margin=False fallback
                    cos = cos - m * math.sin(m)
            out[i, j] = s * cos
    return out


@pytest.mark.parametrize("kind, cls, s, m", [("cosface", CosFace, 30.0, 0.35), ("arcface", ArcFace, 64.0, 0.5),
                                             ("arcface", ArcFace, 16.0, 1.2)])
def test_matches_per_sample_reference(kind: str, cls: type, s: float, m: float) -> None:
    torch.manual_seed(0)
    head = cls(6, 5, s=s, m=m).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    labels = torch.randint(0, 5, (40,))
    expected = reference_logits(x, head.weight.detach(), labels, kind, s, m)
    torch.testing.assert_close(head(x, labels), expected, rtol=1e-9, atol=1e-9)


def test_arc_margin_covers_both_branches_and_is_monotone() -> None:
    m = 1.2
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    target = arc_margin(torch.cos(theta), m)
    assert bool((target.diff() <= 1e-12).all())  # decreasing in theta, the fallback included
    fallback = theta > math.pi - m
    assert fallback.any() and (~fallback).any()
    torch.testing.assert_close(target[~fallback], torch.cos(theta[~fallback] + m))
    torch.testing.assert_close(target[fallback], torch.cos(theta[fallback]) - m * math.sin(m))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_arc_margin_gradient_is_finite_at_cos_plus_minus_one(dtype: torch.dtype) -> None:
    cos = torch.tensor([1.0, -1.0, 0.3], dtype=dtype, requires_grad=True)
    target = arc_margin(cos, 0.5)
    target.sum().backward()
    torch.testing.assert_close(target.detach(), torch.tensor([math.cos(0.5), -1 - 0.5 * math.sin(0.5),
                                                              math.cos(math.acos(0.3) + 0.5)], dtype=dtype))
    assert torch.isfinite(cos.grad).all()


@pytest.mark.parametrize("name", ["cosface", "arcface"])
def test_gradcheck_float64(name: str, monkeypatch) -> None:
    """Exact gradients; the weight's at the weight as it is (the in-place projection is outside autograd)."""
    monkeypatch.setattr(UnitWeights, "unit_weight", lambda self: self.weight)
    torch.manual_seed(1)
    head = create_head(name, 5, 4, s=4.0).double()
    x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    w = head.weight.detach().clone().requires_grad_(True)
    labels = torch.randint(0, 4, (8,))
    assert torch.autograd.gradcheck(lambda x, w: functional_call(head, {"weight": w}, (x, labels)), (x, w))


@pytest.mark.parametrize("name", ["cosface", "arcface"])
def test_zero_norm_and_cos_plus_minus_one_are_finite(name: str) -> None:
    head = create_head(name, 4, 3)
    w = head.weight.detach()
    # cos theta_y = +1 (theta = 0), -1 (theta = pi, the ArcFace fallback), and a zero-norm feature.
    x = torch.stack([3 * w[0], -2 * w[1], torch.zeros(4)]).requires_grad_(True)
    labels = torch.tensor([0, 1, 2])
    loss, logits = head.compute_loss(x, labels)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    s, m = head.s, head.m
    expected = [s * (1 - m), s * (-1 - m)] if name == "cosface" else [s * math.cos(m), s * (-1 - m * math.sin(m))]
    # float32 rounds cos theta near 1 to 1 - 6e-8 at worst, which sin = sqrt(1 - cos^2) turns into 3e-4.
    torch.testing.assert_close(logits[[0, 1], [0, 1]], torch.tensor(expected), atol=0.05, rtol=0)
    assert logits[2, 0] == 0 and logits[2, 1] == 0  # zero features: cos = 0 for the other classes


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="scale s"):
        CosFace(4, 3, s=0.0)
    with pytest.raises(ValueError, match="CosFace margin m"):
        CosFace(4, 3, m=-0.1)
    with pytest.raises(ValueError, match="ArcFace margin m"):
        ArcFace(4, 3, m=2.0)
