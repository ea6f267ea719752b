"""A-Softmax's gradient="official": the backward of the official Caffe layer, against a float64 port of it.

The reference below is a direct, per-sample port of ``MarginInnerProductLayer::Backward_cpu`` (official
SphereFace Caffe, ``margin_inner_product_layer.cpp``), written from the C++ with its own sign variables, so it
shares no code with the head.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sphereface_lib.losses import ASoftmax, LambdaSchedule, LSoftmax, create_head
from sphereface_lib.losses.angular import cosine, psi_and_slope
from sphereface_lib.training import ConfigError, TrainConfig
from sphereface_lib.training.trainer import build_head


def _sign(v: float) -> float:
    """caffe_cpu_sign: -1, 0 or +1."""
    return float((v > 0) - (v < 0))


def caffe_backward(top_diff: torch.Tensor, x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor,
                   lam: float, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bottom_diff, weight_diff) of Backward_cpu in float64, one sample and one class at a time."""
    top_diff, x, w = top_diff.double(), x.double(), w.double()
    weight_diff = top_diff.T @ x  # the plain inner product's gradient, margin ignored
    bottom_diff = torch.zeros_like(x)
    for i in range(x.shape[0]):
        x_norm = math.sqrt(float(x[i] @ x[i]))
        for j in range(w.shape[0]):
            g = float(top_diff[i, j])
            if m == 1:  # SINGLE: a plain inner product
                bottom_diff[i] += g * w[j]
                continue
            # every class gets lambda / (1 + lambda) of the plain gradient (the final gemm) ...
            bottom_diff[i] += lam / (1 + lam) * g * w[j]
            if j != int(labels[i]):  # ... and the other classes 1 / (1 + lambda) of it in the loop
                bottom_diff[i] += 1 / (1 + lam) * g * w[j]
                continue
            c = float(x[i] @ w[j]) / x_norm  # cos_theta, not clamped (Caffe does not clamp)
            s0 = _sign(c)
            if m == 2:
                coeff_w = 4 * s0 * c
                coeff_x = -1 / x_norm * (2 * s0 * c**2 + 1)
            elif m == 3:
                s1 = _sign(abs(c) - 0.5)
                s2 = s0 * (1 + s1) - 2
                coeff_w = s1 * (12 * c**2 - 3)
                coeff_x = -1 / x_norm * (8 * s1 * c**3 - s2)
            else:
                s3 = s0 * _sign(2 * c**2 - 1)
                s4 = 2 * s0 + s3 - 3
                coeff_w = s3 * (32 * c**3 - 16 * c)
                coeff_x = -1 / x_norm * (s3 * (24 * c**4 - 8 * c**2 - 1) - s4)
            coeff_norm = math.sqrt(coeff_w**2 + coeff_x**2)
            bottom_diff[i] += 1 / (1 + lam) * g * (coeff_w / coeff_norm) * w[j]
            bottom_diff[i] += 1 / (1 + lam) * g * (coeff_x / coeff_norm) * x[i]
    return bottom_diff, weight_diff


def _unit_rows(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def _case(name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, unit weight rows, labels) in ``dtype``. The adversarial cases put the targets' cos theta at
    0, +-0.5, +-1 (m = 2's and 3's branch points and the ends, all exact) and +-cos(pi / 4) (m = 4's outer
    branch points, rounded; a root of psi - cos psi' for m = 2), except in float32 at tiny or huge norms: there
    Caffe's unit-length pair (psi' ||x||, psi - cos psi') is ill-conditioned at such a rounded point (an ulp
    of cos theta moves the near-zero entry, relative to the other, by O(1)) in any float32 implementation."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    if name == "random":
        x = torch.randn(16, 6, generator=g, dtype=torch.float64) * 3
        w = _unit_rows(torch.randn(5, 6, generator=g, dtype=torch.float64))
        y = torch.randint(0, 5, (16,), generator=g)
        return x.to(dtype), w.to(dtype), y
    # class 0 is e1; the other rows are random
    w = torch.cat([torch.eye(1, 6, dtype=torch.float64), _unit_rows(torch.randn(3, 6, generator=g, dtype=torch.float64))])
    rows = [[1, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0],  # cos = +-1
            [0, 1, 0, 0, 0, 0],  # cos = 0: m = 2's branch point, m = 4's middle one
            [1, 1, 1, 1, 0, 0], [-1, 1, 1, 1, 0, 0]]  # cos = +-0.5: m = 3's branch points
    scale = {"branch_points": 1.0, "tiny_norm": 1e-6, "huge_norm": 1e6}[name]
    if dtype == torch.float64 or scale == 1.0:
        rows += [[1, 1, 0, 0, 0, 0], [-1, 1, 0, 0, 0, 0]]  # cos = +-cos(pi / 4) (rounded): m = 4's outer ones
    x = torch.tensor(rows, dtype=torch.float64)
    x = torch.cat([x, torch.randn(4, 6, generator=g, dtype=torch.float64)])  # and a few ordinary angles
    return (x * scale).to(dtype), w.to(dtype), torch.zeros(len(x), dtype=torch.long)


CASES = ("random", "branch_points", "tiny_norm", "huge_norm")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lam", [0.0, 5.0, 1000.0])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("case", CASES)
def test_official_gradient_equals_the_caffe_backward(case: str, m: int, lam: float, dtype: torch.dtype) -> None:
    """Both gradients, x and W, through the head itself (unit rows, casts, the custom Function)."""
    x, w, y = _case(case, dtype)
    head = ASoftmax(6, w.shape[0], m=m, lambda_schedule=LambdaSchedule(fixed=lam)).to(dtype)
    assert head.gradient == "official"
    head.weight.data.copy_(w)
    x.requires_grad_()
    top_diff = torch.randn(x.shape[0], w.shape[0], generator=torch.Generator().manual_seed(3), dtype=dtype)
    grad_x, grad_w = torch.autograd.grad(head(x, y), (x, head.weight), top_diff)
    ref_x, ref_w = caffe_backward(top_diff, x.detach(), w, y, float(head.lambda_value), m)
    assert grad_x.dtype == grad_w.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for ours, ref in ((grad_x, ref_x), (grad_w, ref_w)):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_forward_equals_the_exact_heads_bit_for_bit(m: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    official = ASoftmax(6, 9, m=m).to(dtype)
    exact = ASoftmax(6, 9, m=m, gradient="exact").to(dtype)
    exact.weight.data.copy_(official.weight.data)
    for head in (official, exact):
        head.update(30)
    x, y = torch.randn(20, 6, dtype=dtype) * 4, torch.randint(0, 9, (20,))
    assert torch.equal(official(x, y), exact(x, y))
    assert torch.equal(official(x.requires_grad_(), y), exact(x, y))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_official_differs_from_exact_for_a_margin_and_equals_it_for_m1(m: int) -> None:
    """The option is not a no-op: for m >= 2 both gradients differ from the exact one (which gradcheck accepts);
    for m = 1 the logits are W^T x and Caffe's gradient is their exact gradient."""
    torch.manual_seed(1)
    official = ASoftmax(5, 4, m=m, lambda_schedule=LambdaSchedule(fixed=1.0)).double()
    exact = ASoftmax(5, 4, m=m, lambda_schedule=LambdaSchedule(fixed=1.0), gradient="exact").double()
    exact.weight.data.copy_(official.weight.data)
    x, y = torch.randn(12, 5, dtype=torch.float64, requires_grad=True), torch.randint(0, 4, (12,))
    top_diff = torch.randn(12, 4, dtype=torch.float64)
    got = torch.autograd.grad(official(x, y), (x, official.weight), top_diff)
    want = torch.autograd.grad(exact(x, y), (x, exact.weight), top_diff)
    for ours, theirs in zip(got, want):
        if m == 1:
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        else:
            assert (ours - theirs).abs().max() > 0.05
    if m > 1:
        assert not torch.autograd.gradcheck(lambda inp: official(inp, y), (x,), raise_exception=False)
    assert torch.autograd.gradcheck(lambda inp: exact(inp, y), (x,))


def test_compiled_forward_and_backward_equal_eager() -> None:
    torch.manual_seed(2)
    head = ASoftmax(8, 11, m=4)
    head.update(40)
    x, y = torch.randn(16, 8) * 5, torch.randint(0, 11, (16,))

    def step(features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = features.clone().requires_grad_()
        loss, logits = head.compute_loss(features, y)
        return (logits.detach(), *torch.autograd.grad(loss, (features, head.weight)))

    eager = step(x)
    compiled_loss = torch.compile(lambda f: head.compute_loss(f, y), fullgraph=True)
    features = x.clone().requires_grad_()
    loss, logits = compiled_loss(features)
    compiled = (logits.detach(), *torch.autograd.grad(loss, (features, head.weight)))
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    ref_x, ref_w = caffe_backward(F.softmax(eager[0], 1).sub(F.one_hot(y, 11)) / 16, x, head.weight.detach(), y,
                                  float(head.lambda_value), 4)
    torch.testing.assert_close(compiled[1].double(), ref_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[2].double(), ref_w, rtol=1e-5, atol=1e-6)


def test_compiled_under_autocast_keeps_the_backward_in_float32() -> None:
    """torch.compile traces a backward inside the caller's autocast region (torch 2.13's default
    backward_pass_autocast="same_as_forward"): the official backward must still run in float32, as eagerly."""
    torch.manual_seed(6)
    head = ASoftmax(32, 8, m=4)
    x, y = torch.randn(32, 32) * 10, torch.arange(8).repeat_interleave(4)
    top_diff = torch.randn(32, 8)
    features = x.clone().requires_grad_()
    eager = torch.autograd.grad(head(features, y), (features, head.weight), top_diff)
    compiled_head = torch.compile(head, fullgraph=True)
    features = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = compiled_head(features, y)
    compiled = torch.autograd.grad(logits, (features, head.weight), top_diff)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_bf16_autocast_gives_finite_float32_computed_gradients() -> None:
    torch.manual_seed(3)
    head = ASoftmax(8, 6, m=4)
    head.update(100)
    x = (torch.randn(10, 8) * 20).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, 6, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits = head.compute_loss(x, y)
    loss.backward()
    assert logits.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all() and x.grad.abs().sum() > 0
    # the head ran in float32 on the rounded features: the same gradient as without autocast, up to bf16 rounding
    x32 = x.detach().float().requires_grad_()
    grad_w = head.weight.grad.clone()
    head.weight.grad = None
    head.compute_loss(x32, y)[0].backward()
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(grad_w, head.weight.grad)


def test_gradient_choice_is_validated_and_shown() -> None:
    assert ASoftmax(4, 3).gradient == "official"
    assert "gradient='exact'" in repr(ASoftmax(4, 3, gradient="exact"))
    with pytest.raises(ValueError, match="'official' or 'exact', got 'caffe'"):
        ASoftmax(4, 3, gradient="caffe")


def test_gradient_travels_through_the_config() -> None:
    """head.kwargs.gradient reaches the head; a bad value is a ConfigError naming both choices."""
    config = TrainConfig().replace("head.kwargs.gradient=exact")
    assert build_head(config, 10).gradient == "exact"
    assert build_head(TrainConfig(), 10).gradient == "official"
    with pytest.raises(ConfigError, match="head.kwargs.*'official' or 'exact', got 'fast'"):
        build_head(TrainConfig().replace("head.kwargs.gradient=fast"), 10)


def test_lsoftmax_keeps_its_exact_gradient() -> None:
    """The official L-Softmax layer back-propagates its exact gradient: no gradient option, autograd's value."""
    with pytest.raises(TypeError):
        create_head("lsoftmax", 4, 3, gradient="official")
    head = LSoftmax(4, 3, m=2, lambda_schedule=LambdaSchedule(fixed=0.5)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 3, (6,))
    assert torch.autograd.gradcheck(lambda inp: head(inp, y), (x,))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_slope_is_the_derivative_of_psi(m: int) -> None:
    # away from the thresholds cos(j pi / m), where psi has a corner-free but piecewise definition
    c = torch.linspace(-0.999, 0.999, 4001, dtype=torch.float64)
    thresholds = torch.tensor([math.cos(j * math.pi / m) for j in range(1, m)], dtype=torch.float64)
    if m > 1:
        c = c[(c[:, None] - thresholds).abs().min(dim=1).values > 1e-4]
    value, slope = psi_and_slope(c, m)
    h = 1e-6
    numeric = (psi_and_slope(c + h, m)[0] - psi_and_slope(c - h, m)[0]) / (2 * h)
    torch.testing.assert_close(slope, numeric, rtol=1e-6, atol=1e-6)
    # psi is monotonically decreasing in theta, so increasing in cos theta
    assert (slope >= 0).all()


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_cosine_is_right_for_float32_features_of_extreme_norm(scale: float) -> None:
    torch.manual_seed(4)
    w = _unit_rows(torch.randn(7, 16))
    x = torch.randn(5, 16)
    want = F.linear(F.normalize(x.double(), dim=1), w.double())
    got = cosine(x * scale, w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_cosine_of_ordinary_features_is_bit_for_bit_unchanged_by_the_scaling() -> None:
    torch.manual_seed(5)
    w = _unit_rows(torch.randn(7, 16))
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(64, 16, dtype=dtype) * torch.logspace(-8, 8, 64, dtype=dtype)[:, None]
        plain = F.linear(F.normalize(x, dim=1), w.to(dtype)).clamp(-1.0, 1.0)
        assert torch.equal(cosine(x, w.to(dtype)), plain)
