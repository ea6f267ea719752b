"""Small learnable packed datasets for the training tests, and tests of the data path (loader, flip, augment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sphereface_lib.data.packed import PackedDataset, PackedWriter
from sphereface_lib.training import TrainConfig
from sphereface_lib.training.trainer import BatchLoader, augment, flip_mask


def make_patterns(root: Path, identities: int = 10, per_identity: int = 20, height: int = 28, width: int = 24,
                  channels: int = 1, noise: float = 40.0, seed: int = 0) -> PackedDataset:
    """A packed dataset where each identity is a fixed left-right symmetric pattern plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    half = rng.uniform(30, 225, size=(identities, height, (width + 1) // 2, channels))
    templates = np.concatenate([half, half[:, :, ::-1][:, :, width % 2:]], axis=2)
    labels = np.repeat(np.arange(identities), per_identity)
    images = templates[labels] + rng.normal(0, noise, size=(len(labels), height, width, channels))
    images = np.clip(images, 0, 255).astype(np.uint8)
    keys = [f"id{l:03d}/{i:04d}" for i, l in enumerate(labels)]
    with PackedWriter(root, height=height, width=width, channels=channels, source="test-patterns") as w:
        w.add(images, labels, keys)
    return PackedDataset(root)


def tiny_config(data: Path, out: Path, **over: object) -> TrainConfig:
    """The tiny CPU recipe used across the training tests (SphereFace-4, width 1/8, 28x24)."""
    overrides = [
        f"data.path={data}", f"run.out_dir={out}", "run.device=cpu", "run.progress=false",
        "model.backbone=sphereface4", "model.width=0.125", "model.feat_dim=32",
        "optim.batch_size=16", "optim.iterations=40", "optim.lr=0.05", "optim.lr_steps=[20,30]",
        "run.log_every=5", "run.checkpoint_every=10",
        "head.kwargs={m: 4, lambda_schedule: {base: 1000.0, gamma: 0.5, lambda_min: 5.0}}",
    ] + [f"{k.replace('__', '.')}={v}" for k, v in over.items()]
    return TrainConfig().replace(*overrides)


def finished_run(root: Path) -> dict[str, Path]:
    """A tiny pack under ``root``, its config file and one finished 2-iteration run made through the command line:
    ``{"root", "data", "config", "real"}``."""
    from sphereface_lib.errors import run_command
    from sphereface_lib.train import main

    data = make_patterns(root / "data").root
    config = root / "base.yaml"
    config.write_text(tiny_config(data, root / "unused", optim__iterations=2).to_yaml())
    real = root / "real"
    assert run_command(main, ["--config", str(config), f"run.out_dir={real}"]) == 0
    return {"root": root, "data": data, "config": config, "real": real}


@pytest.fixture
def patterns(tmp_path: Path) -> PackedDataset:
    return make_patterns(tmp_path / "patterns")


def test_flip_mask_is_a_pure_function_of_seed_and_iteration() -> None:
    a, b = flip_mask(0, 7, 64), flip_mask(0, 7, 64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, flip_mask(0, 8, 64))
    assert not np.array_equal(a, flip_mask(1, 7, 64))
    assert 10 < a.sum() < 54


def test_augment_normalizes_and_flips() -> None:
    x = torch.arange(2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 3, 1) * 10
    out = augment(x, torch.tensor([False, True]), channels_last=True)
    assert out.shape == (2, 1, 2, 3)
    expected = (x.permute(0, 3, 1, 2).float() - 127.5) / 128
    assert torch.equal(out[0], expected[0])
    assert torch.equal(out[1], expected[1].flip(2))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_loader_ranks_take_contiguous_slices_of_the_global_batch(patterns: PackedDataset, tmp_path: Path) -> None:
    config = tiny_config(patterns.root, tmp_path / "run")
    full = BatchLoader(patterns, config, 0, 3)
    halves = [BatchLoader(patterns, config, 0, 3, rank=r, world_size=2) for r in range(2)]
    for (it, img, lab, flip), (_, i0, l0, f0), (_, i1, l1, f1) in zip(full, *halves):
        assert torch.equal(img, torch.cat([i0, i1])) and torch.equal(lab, torch.cat([l0, l1]))
        assert torch.equal(flip, torch.cat([f0, f1]))
        rows = full.sampler.indices(it)
        assert torch.equal(lab, torch.from_numpy(patterns.labels[rows]))
    for loader in (full, *halves):
        loader.close()
    with pytest.raises(ValueError, match="divisible"):
        BatchLoader(patterns, config, 0, 3, rank=0, world_size=3)
