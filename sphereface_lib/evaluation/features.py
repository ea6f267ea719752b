"""Deep features of face images, as the paper tests them (Sec. 4.1: original + horizontally flipped)."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .checks import require_usable

FlipMode = Literal["concat", "sum", "none"]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW, normalized as in training: x -> (x - 127.5) / 128."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # a read-only memmap: torch warns on such buffers, so copy the uint8s
        images = images.copy()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's 4-d weights (convolutions) are stored channels_last (True when it has none)."""
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in model.parameters() if w.ndim == 4)


def extract_features(
    model: nn.Module,
    images: np.ndarray,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    flip: FlipMode = "concat",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "features",
) -> np.ndarray:
    """Features of ``images[indices]`` (all images when ``indices`` is None) as float32 (N, 2D) or (N, D).

    ``images`` is uint8 NHWC, for example a :class:`~sphereface_lib.data.PackedDataset`'s ``images`` memmap.
    ``model`` maps (B, C, H, W) -> (B, D). ``flip``: ``"concat"`` returns [f(x), f(flip(x))] (the paper's
    test feature, Sec. 4.1), ``"sum"`` returns f(x) + f(flip(x)), ``"none"`` returns f(x). Batches run
    channels_last (float16 autocast on a GPU). The model's train/eval mode and memory format are restored after.
    Features holding NaN or infinity, or all zero, raise
    :class:`~sphereface_lib.evaluation.checks.NonFiniteFeaturesError` or
    :class:`~sphereface_lib.evaluation.checks.ZeroFeaturesError` naming the images (indices into ``images``).
    """
    if flip not in ("concat", "sum", "none"):
        raise ValueError(f"flip must be 'concat', 'sum' or 'none', got {flip!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    rows = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {rows.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise IndexError(f"indices must lie in 0 .. {len(images) - 1}, got {rows.min()} .. {rows.max()}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    was_training = model.training
    was_channels_last = _is_channels_last(model)
    model.eval()
    model.to(memory_format=torch.channels_last)  # NHWC convolutions, faster on CPU too (bench_inference.py)
    try:
        with torch.inference_mode():  # not around .to(): weights made there could not train again
            chunks = _features(model, images, rows, flip, batch_size, device, progress, desc)
    finally:
        model.train(was_training)
        if not was_channels_last:
            model.to(memory_format=torch.contiguous_format)
    if not chunks:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(chunks)


def _features(model: nn.Module, images: np.ndarray, rows: np.ndarray, flip: FlipMode, batch_size: int,
              device: torch.device, progress: bool, desc: str) -> list[np.ndarray]:
    """The batches' features of :func:`extract_features`, in the order of ``rows``."""
    on_gpu = device.type == "cuda"
    chunks: list[np.ndarray] = []
    for start in tqdm(range(0, len(rows), batch_size), disable=not progress, desc=desc, unit="batch"):
        batch_rows = rows[start:start + batch_size]
        x = images_to_tensor(images[np.sort(batch_rows)]).to(device, non_blocking=True)
        order = np.argsort(np.argsort(batch_rows, kind="stable"), kind="stable")
        x = x[torch.from_numpy(order).to(device)].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=on_gpu):
            f = model(x).float()
            if flip != "none":
                g = model(torch.flip(x, dims=[3])).float()
                f = torch.cat([f, g], dim=1) if flip == "concat" else f + g
        if f.ndim != 2 or f.shape[0] != x.shape[0]:
            raise ValueError(f"model must map (B, C, H, W) to (B, D), it returned shape {tuple(f.shape)}")
        feats = f.cpu().numpy().astype(np.float32, copy=False)
        require_usable(feats, "extract_features: the model's features", batch_rows, what="images")
        chunks.append(feats)
    return chunks
