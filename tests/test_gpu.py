"""GPU checks: every head and backbone under bf16 autocast and channels_last, features and a short training
run on CUDA. Skipped where no GPU is present (CI never has one); run them on a GPU machine with
``python -m pytest tests/test_gpu.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sphereface_lib import create_backbone, create_head, list_backbones, list_heads
from sphereface_lib.evaluation import extract_features
from sphereface_lib.training import load_checkpoint, train
from test_asoftmax_official_gradient import caffe_backward
from test_training_data import make_patterns, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

HEAD_KWARGS = {"triplet": {}, "softmax_center": {}, "softmax_contrastive": {}}


def _batch(n: int = 64, classes: int = 8, dim: int = 32, k: int = 4):
    torch.manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(k)[:n]
    return torch.randn(len(labels), dim) * 10, labels


@pytest.mark.parametrize("name", list_heads())
def test_every_head_matches_cpu_under_bf16_autocast(name: str) -> None:
    x, y = _batch()
    head = create_head(name, 32, 8).eval()  # eval: the center loss leaves its centers alone
    cpu_loss, _ = head.compute_loss(x, y)
    gpu_head = create_head(name, 32, 8)
    gpu_head.load_state_dict(head.state_dict())
    gpu_head = gpu_head.cuda().eval()
    xg = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = gpu_head.compute_loss(xg, y.cuda())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xg.grad).all()
    # the heads compute in float32 whatever the autocast: the loss agrees with the CPU one
    assert loss.item() == pytest.approx(cpu_loss.item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", list_heads())
def test_every_head_is_finite_on_zero_features_on_gpu(name: str) -> None:
    _, y = _batch()
    head = create_head(name, 32, 8).cuda()
    x = torch.zeros(len(y), 32, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        try:
            loss, _ = head.compute_loss(x, y.cuda())
        except ValueError:  # the triplet loss refuses a batch without valid triplets, by contract
            return
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_asoftmax_official_gradient_on_gpu_equals_the_caffe_backward(m: int) -> None:
    """gradient="official" on CUDA, eager and compiled, under bf16 autocast: the float64 port of Caffe's
    Backward_cpu on the same (float32) inputs."""
    x, y = _batch()
    head = create_head("asoftmax", 32, 8, m=m).cuda()
    head.update(50)
    top_diff = torch.randn(len(y), 8)
    want_x, want_w = caffe_backward(top_diff, x, head.weight.detach().cpu(), y, float(head.lambda_value), m)
    for forward in (head, torch.compile(head, fullgraph=True)):
        xg = x.cuda().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(xg, y.cuda())
        got_x, got_w = torch.autograd.grad(logits, (xg, head.weight), top_diff.cuda())
        torch.testing.assert_close(got_x.double().cpu(), want_x, rtol=1e-4, atol=1e-4 * float(want_x.abs().max()))
        torch.testing.assert_close(got_w.double().cpu(), want_w, rtol=1e-4, atol=1e-4 * float(want_w.abs().max()))


@pytest.mark.parametrize("name", list_backbones())
def test_backbones_bf16_channels_last_agree_with_float32(name: str) -> None:
    torch.manual_seed(0)
    model = create_backbone(name).cuda()
    x = torch.randn(8, 3, 112, 96, device="cuda")
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model_cl(x.to(memory_format=torch.channels_last))
    assert out.shape == (8, 512) and torch.isfinite(out.float()).all()
    assert F.cosine_similarity(out.float(), ref, dim=1).min() > 0.99


def test_extract_features_on_gpu_matches_cpu() -> None:
    torch.manual_seed(0)
    model = create_backbone("sphereface10", input_size=(56, 48), width=0.5)
    images = np.random.default_rng(0).integers(0, 256, (20, 56, 48, 3), dtype=np.uint8)
    cpu = extract_features(model, images, progress=False, device="cpu")
    gpu = extract_features(model.cuda(), images, progress=False, device="cuda")
    assert cpu.shape == gpu.shape == (20, 1024)
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99


def test_short_bf16_training_run_learns_and_resumes(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "patterns")
    cfg = tiny_config(data.root, tmp_path / "run", run__device="cuda", run__amp="bf16", optim__iterations=60,
                      optim__lr_steps="[40,50]")
    result = train(cfg)
    assert all(np.isfinite(row["loss"]) for row in result.metrics)
    assert result.metrics[-1]["acc"] > 0.9
    again = train(cfg)  # a finished run resumes at its last checkpoint and does nothing more
    for a, b in zip(result.backbone.state_dict().values(), again.backbone.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    assert load_checkpoint(cfg.run.out_dir).iteration == 60
