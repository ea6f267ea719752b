"""extract_features: normalization, flip (concat / sum / none), order of indices, model mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sphereface_lib.data import PackedDataset, PackedWriter
from sphereface_lib.evaluation import extract_features


class Corners(nn.Module):
    """Returns the top-left and top-right pixel values of channel 0: a flip swaps them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0, 0, 0], x[:, 0, 0, -1]], dim=1)


def _images(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 4, 3, 3), dtype=np.uint8)


@pytest.mark.parametrize("flip", ["concat", "sum", "none"])
def test_normalization_and_flip(flip: str) -> None:
    images = _images()
    feats = extract_features(Corners(), images, flip=flip, batch_size=2, progress=False)
    left = (images[:, 0, 0, 0].astype(np.float32) - 127.5) / 128
    right = (images[:, 0, -1, 0].astype(np.float32) - 127.5) / 128
    plain = np.stack([left, right], axis=1)
    flipped = np.stack([right, left], axis=1)
    want = {"concat": np.concatenate([plain, flipped], axis=1), "sum": plain + flipped, "none": plain}[flip]
    assert feats.dtype == np.float32 and np.allclose(feats, want)


def test_indices_on_packed_memmap(tmp_path: Path) -> None:
    images = _images(7)
    with PackedWriter(tmp_path / "p", height=4, width=3, channels=3, source="test") as w:
        w.add(images, np.zeros(7, np.int64))
    ds = PackedDataset(tmp_path / "p")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 5))
    idx = np.array([6, 0, 3, 3, 1])
    got = extract_features(model, ds.images, idx, flip="none", batch_size=3, progress=False)
    with torch.no_grad():
        x = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() - 127.5) / 128
        want = model(x).numpy()
    assert got.shape == (5, 5) and np.allclose(got, want, atol=1e-6)
    again = extract_features(model, ds.images, idx, flip="none", batch_size=2, progress=False)
    assert np.array_equal(got[2], got[3]) and np.allclose(again, got, atol=1e-6)


def test_eval_mode_used_and_restored() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Flatten())
    model.train()
    before = model[1].running_mean.clone()
    extract_features(model, _images(), progress=False)
    assert model.training and torch.equal(model[1].running_mean, before)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="flip must be"):
        extract_features(Corners(), _images(), flip="mirror", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        extract_features(Corners(), _images().astype(np.float32), progress=False)
    with pytest.raises(IndexError, match=r"indices must lie in 0 \.\. 4"):
        extract_features(Corners(), _images(), [0, 9], progress=False)


def test_read_only_images_convert_without_a_warning():
    """A packed dataset's images are a read-only memmap: converting them must not warn (torch does on such
    buffers) and must give the same normalized values as a writable copy."""
    import warnings

    from sphereface_lib.evaluation.features import images_to_tensor
    images = _images()
    frozen = images.copy()
    frozen.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = images_to_tensor(frozen)
    torch.testing.assert_close(x, (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 128.0)


def test_non_finite_features_name_the_images() -> None:
    from sphereface_lib.evaluation.checks import NonFiniteFeaturesError

    class NanOnBright(nn.Module):
        """NaN for images whose first pixel is above 200, else that pixel."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, :1, 0, 0]
            return torch.where(v > (200 - 127.5) / 128, torch.nan, v)

    images = _images(6)
    images[:, 0, 0, 0] = [10, 250, 20, 30, 240, 5]
    with pytest.raises(NonFiniteFeaturesError, match=r"2 of 2 feature rows .*\(images 4, 1\)"):
        extract_features(NanOnBright(), images, [4, 1, 0], flip="none", batch_size=2, progress=False)


def test_model_left_trainable_in_its_memory_format() -> None:
    """extract_features runs channels_last but hands the model back as it came, weights usable by autograd."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten())
    extract_features(model, _images(), progress=False)
    assert model[0].weight.is_contiguous() and not model[0].weight.is_inference()
    model(torch.zeros(1, 3, 4, 3)).sum().backward()
    assert model[0].weight.grad is not None
    model.to(memory_format=torch.channels_last)
    extract_features(model, _images(), progress=False)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_all_zero_features_name_the_images() -> None:
    """A model that outputs zeros (broken or untrained) gives features without a direction: an error naming the
    images, never features that later score as cosine 0."""
    from sphereface_lib.evaluation.checks import ZeroFeaturesError

    class ZeroOnDark(nn.Module):
        """Zero for images whose first pixel is below 50, else that pixel."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, :1, 0, 0]
            return torch.where(v < (50 - 127.5) / 128, 0.0, v)

    images = _images(6)
    images[:, 0, 0, 0] = [100, 10, 200, 30, 240, 60]
    assert extract_features(ZeroOnDark(), images, [0, 2, 5], flip="none", progress=False).shape == (3, 1)
    with pytest.raises(ZeroFeaturesError, match=r"the model's features: 2 of 3 feature rows are all zero "
                                                r"\(images 3, 1\)"):
        extract_features(ZeroOnDark(), images, [3, 1, 0], flip="none", batch_size=3, progress=False)
