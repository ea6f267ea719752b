"""The A-Softmax family: psi, the heads against naive per-sample loops, limits, gradients, edge inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sphereface_lib.losses.angular import UnitWeights
from sphereface_lib import (
    ASoftmax, LambdaSchedule, ModifiedSoftmax, Softmax, create_head, list_heads, psi,
)


def psi_reference(theta: float, m: int) -> float:
    """psi(theta) = (-1)^k cos(m theta) - 2k, theta in [k pi/m, (k+1) pi/m] (Eq. 7), with acos-free theta."""
    k = min(int(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_matches_angle_based_reference(m: int) -> None:
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    ours = psi(torch.cos(theta), m)
    ref = torch.tensor([psi_reference(float(t), m) for t in theta], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)
    assert ours[0].item() == pytest.approx(1.0)
    assert ours[-1].item() == pytest.approx(-(2 * m - 1))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_is_monotonically_decreasing(m: int) -> None:
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    values = psi(torch.cos(theta), m)
    assert torch.all(values[1:] <= values[:-1] + 1e-12)
    assert values[0] > values[-1]


def test_lambda_schedule_follows_the_official_formula() -> None:
    s = LambdaSchedule()
    assert s(0) == 1000.0
    assert s(10) == pytest.approx(1000.0 / 2.2)
    assert s(10**6) == 5.0  # floored at lambda_min
    assert LambdaSchedule(fixed=3.0)(12345) == 3.0
    with pytest.raises(ValueError):
        LambdaSchedule(fixed=-1.0)


def _naive_logits(head, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-class Python loop with angles from acos: the reference for every head."""
    rows = []
    for i in range(x.shape[0]):
        xi = x[i].double()
        row = []
        for j in range(head.num_classes):
            if isinstance(head, Softmax):
                row.append(float(head.fc.weight[j].double() @ xi + head.fc.bias[j].double()))
                continue
            w = head.weight[j].double()
            w = w / w.norm()
            norm = float(xi.norm())
            cos = float((w @ xi) / xi.norm())
            if isinstance(head, ASoftmax) and j == int(y[i]):
                lam = head.lambda_
                p = psi_reference(math.acos(max(-1.0, min(1.0, cos))), head.m)
                row.append(norm * (lam * cos + p) / (1 + lam))
            else:
                row.append(norm * cos)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Softmax(5, 7),
        lambda: ModifiedSoftmax(5, 7),
        *[lambda m=m: ASoftmax(5, 7, m=m, lambda_schedule=LambdaSchedule(fixed=2.5)) for m in (1, 2, 3, 4)],
        lambda: ASoftmax(5, 7, m=4),
    ],
)
def test_heads_equal_a_naive_per_sample_loop(make) -> None:
    torch.manual_seed(0)
    head = make()
    head.update(7)
    x = torch.randn(11, 5) * 3
    y = torch.randint(0, 7, (11,))
    with torch.no_grad():
        torch.testing.assert_close(head(x, y).double(), _naive_logits(head, x, y), atol=1e-4, rtol=1e-5)


def test_asoftmax_m1_lambda0_equals_modified_softmax() -> None:
    torch.manual_seed(1)
    a = ASoftmax(6, 4, m=1, lambda_schedule=LambdaSchedule(fixed=0.0))
    ms = ModifiedSoftmax(6, 4)
    ms.weight.data.copy_(a.weight.data)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))
    torch.testing.assert_close(a(x, y), ms(x, y))


def test_asoftmax_lambda_to_infinity_reduces_to_modified_softmax() -> None:
    torch.manual_seed(2)
    a = ASoftmax(6, 4, m=4, lambda_schedule=LambdaSchedule(fixed=1e9))
    ms = ModifiedSoftmax(6, 4)
    ms.weight.data.copy_(a.weight.data)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))
    torch.testing.assert_close(a(x, y), ms(x, y), atol=1e-5, rtol=1e-5)


def test_asoftmax_target_logit_never_exceeds_modified_softmax() -> None:
    """psi(theta) <= cos(theta): the margin only ever makes the target harder."""
    torch.manual_seed(3)
    a = ASoftmax(4, 3, m=4, lambda_schedule=LambdaSchedule(fixed=0.0))
    x, y = torch.randn(200, 4), torch.randint(0, 3, (200,))
    ms = ModifiedSoftmax(4, 3)
    ms.weight.data.copy_(a.weight.data)
    gap = ms(x, y).gather(1, y[:, None]) - a(x, y).gather(1, y[:, None])
    assert torch.all(gap >= -1e-5) and gap.max() > 0.1


def test_weights_are_renormalized_every_forward() -> None:
    torch.manual_seed(4)
    a = ASoftmax(4, 3, m=2)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    before = a(x, y)
    a.weight.data.mul_(17.0)
    torch.testing.assert_close(a(x, y), before)


@pytest.mark.parametrize("name", ["softmax", "modified_softmax", "asoftmax"])
def test_gradcheck_float64(name: str, monkeypatch) -> None:
    """Exact gradients (A-Softmax with gradient="exact"; the official one is tested in
    test_asoftmax_official_gradient.py). The weight gradient of a unit-weight head is the derivative of the
    logits at the weight as it is: the in-place projection is a separate step outside autograd (Caffe's),
    switched off here so that gradcheck's perturbed weights are used unprojected."""
    monkeypatch.setattr(UnitWeights, "unit_weight", lambda self: self.weight)
    torch.manual_seed(5)
    kwargs = {"m": 3, "lambda_schedule": LambdaSchedule(fixed=1.5), "gradient": "exact"} if name == "asoftmax" else {}
    head = create_head(name, 4, 3, **kwargs).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (6,))
    assert torch.autograd.gradcheck(lambda inp: head(inp, y), (x,), eps=1e-6, atol=1e-5)
    key = "fc.weight" if name == "softmax" else "weight"
    weight = head.get_parameter(key).detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(head, {key: w}, (x, y)), (weight,), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("name", ["modified_softmax", "asoftmax", "cosface", "arcface"])
def test_weight_rows_stay_unit_through_sgd_with_weight_decay(name: str) -> None:
    """Initialized on the sphere; each step is Caffe's: W <- W - lr (momentum buffer of g + wd W), with the
    gradient g at unit rows, then the next forward projects every row back to unit length."""
    torch.manual_seed(8)
    head = create_head(name, 6, 5)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-6)
    lr, wd, mu = 0.5, 0.05, 0.9
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    w, buf = head.weight.detach().clone(), torch.zeros(5, 6)
    for step in range(4):
        x, y = torch.randn(16, 6) * 3, torch.randint(0, 5, (16,))
        opt.zero_grad()
        loss, _ = head.compute_loss(x, y)
        loss.backward()
        torch.testing.assert_close(head.weight.detach(), w, atol=1e-6, rtol=1e-6)  # the forward saw unit rows
        buf = mu * buf + head.weight.grad + wd * w if step else head.weight.grad + wd * w
        opt.step()
        raw = w - lr * buf
        assert not torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-3)  # the step left the sphere
        w = raw / raw.norm(dim=1, keepdim=True)
        head.unit_weight()
        torch.testing.assert_close(head.weight.detach(), w, atol=1e-6, rtol=1e-6)
        assert torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-6)


def test_unit_weight_heads_keep_no_normalized_weight_copy_for_backward() -> None:
    """The forward uses the parameter itself: no (C, D) tensor other than the weight is saved for backward."""
    head = ASoftmax(8, 50, m=4)
    x, y = torch.randn(4, 8), torch.randint(0, 50, (4,))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        head(x, y)
    assert saved
    assert all(s.numel() < 50 * 8 or s.untyped_storage().data_ptr() == head.weight.untyped_storage().data_ptr()
               for s in saved)


@pytest.mark.parametrize("gradient", ["official", "exact"])
def test_float32_head_gradient_matches_float64_formula(gradient: str) -> None:
    torch.manual_seed(6)
    head = ASoftmax(4, 3, m=4, lambda_schedule=LambdaSchedule(fixed=2.0), gradient=gradient)
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 3, (6,))
    F.cross_entropy(head(x, y), y).backward()
    x64 = x.detach().double().requires_grad_()
    h64 = ASoftmax(4, 3, m=4, lambda_schedule=LambdaSchedule(fixed=2.0), gradient=gradient).double()
    h64.weight.data.copy_(head.weight.data.double())
    F.cross_entropy(h64(x64, y), y).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-5, rtol=1e-4)


EDGE_FEATURES = {
    "zero norm": torch.zeros(4, 5),
    "huge norm": torch.randn(4, 5) * 1e20,
    "tiny norm": torch.randn(4, 5) * 1e-30,
}


@pytest.mark.parametrize("name, kwargs", [("softmax", {}), ("modified_softmax", {}), ("asoftmax", {}),
                                          ("asoftmax", {"gradient": "exact"})])
@pytest.mark.parametrize("case", list(EDGE_FEATURES))
def test_no_nan_on_edge_inputs(name: str, kwargs: dict, case: str) -> None:
    torch.manual_seed(7)
    head = create_head(name, 5, 3, **kwargs)
    x = EDGE_FEATURES[case].clone().requires_grad_()
    y = torch.tensor([0, 1, 2, 0])
    loss, logits = head.compute_loss(x, y)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("gradient", ["official", "exact"])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_no_nan_when_cos_theta_is_exactly_plus_or_minus_one(m: int, gradient: str) -> None:
    head = ASoftmax(3, 2, m=m, lambda_schedule=LambdaSchedule(fixed=0.0), gradient=gradient)
    head.weight.data = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = torch.tensor([[2.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 5.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss, logits = head.compute_loss(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # theta = 0 -> psi = 1 ; theta = pi -> psi = -(2m - 1)
    assert logits[0, 0].item() == pytest.approx(2.0)
    assert logits[1, 0].item() == pytest.approx(3.0 * (1 - 2 * m), rel=1e-5)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list_heads())
def test_heads_run_in_float32_under_autocast(dtype: torch.dtype, name: str) -> None:
    """Every head computes in float32 under CPU autocast, whatever the features' low precision, and gives
    what its float32 forward outside autocast gives on the same (rounded) features."""
    # A P x K batch (5 identities x 3 images, spread out enough that the triplet head has active triplets);
    # the odd identities at norm ~600: their squared norms overflow float16 unless the head upcasts.
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(5).repeat_interleave(3)
    centers = torch.randn(5, 8, generator=g) * 2
    x = centers[labels] + 2.0 * torch.randn(15, 8, generator=g)
    x[labels % 2 == 1] *= 100
    assert (x * x).sum(dim=1).max() > torch.finfo(torch.float16).max
    torch.manual_seed(8)
    head = create_head(name, 8, 5).eval()  # eval: the center loss's centers stay put between the forwards
    x = x.to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        loss, logits = head.compute_loss(x, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert (logits is None) == (name == "triplet")
    with torch.no_grad():
        ref_loss, ref_logits = head.compute_loss(x.detach().float(), labels)
    # Both forwards run float32 on the same values: only summation-order noise is allowed.
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-6, atol=1e-9)
    if logits is not None:
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        torch.testing.assert_close(logits.detach(), ref_logits, rtol=1e-6, atol=1e-9)


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="m must be an integer"):
        ASoftmax(4, 3, m=5)
    with pytest.raises(ValueError, match="m must be an integer"):
        ASoftmax(4, 3, m=2.0)  # type: ignore[arg-type]
    head = ASoftmax(4, 3)
    with pytest.raises(ValueError, match=r"features of shape \(batch, 4\)"):
        head(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        head(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unknown head 'nope'"):
        create_head("nope", 4, 3)


def test_registry_lists_the_family() -> None:
    assert {"softmax", "modified_softmax", "asoftmax"} <= set(list_heads())


def test_lambda_follows_update_and_travels_in_state_dict() -> None:
    a = ASoftmax(4, 3)
    a.update(100)
    assert a.lambda_ == pytest.approx(1000 / 13)
    assert a.log_values() == {"lambda": pytest.approx(1000 / 13)}
    # the forward reads lambda from a tensor (no recompiles under torch.compile), filled by update()
    assert a.lambda_value.item() == pytest.approx(1000 / 13)
    b = ASoftmax(4, 3)
    b.load_state_dict(a.state_dict())
    assert b.lambda_ == a.lambda_ and b.lambda_value.item() == a.lambda_value.item()
