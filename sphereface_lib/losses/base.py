"""The shared base of every head (classifier + loss) and the factory by name."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_HEADS: dict[str, type["Head"]] = {}
H = TypeVar("H", bound=type["Head"])


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator: make a head available to :func:`create_head` under ``name``."""

    def deco(cls: H) -> H:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        _HEADS[name] = cls
        cls.name = name
        return cls

    return deco


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`."""
    return sorted(_HEADS)


def create_head(name: str, feat_dim: int, num_classes: int, **kwargs) -> "Head":
    """Build a head by name, e.g. ``create_head("asoftmax", 512, 10572, m=4)``."""
    try:
        cls = _HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(list_heads())}") from None
    return cls(feat_dim, num_classes, **kwargs)


class Head(nn.Module):
    """A classifier on features that defines the training loss.

    ``forward(features, labels)`` returns logits with the margin (if any) applied to the target class, so
    the loss is ``F.cross_entropy(logits, labels)`` and accuracy comes from the same logits.
    :meth:`compute_loss` is what the trainer calls; heads whose loss is not a cross-entropy over logits
    (metric losses, center loss) override it. :meth:`update` is called once per training iteration.
    """

    name: str = "head"

    def __init__(self, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        if feat_dim < 1 or num_classes < 1:
            raise ValueError(f"feat_dim and num_classes must be positive, got {feat_dim}, {num_classes}")
        self.feat_dim, self.num_classes = feat_dim, num_classes

    def compute_loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        """(loss, logits); logits may be None for heads that have none."""
        logits = self(features, labels)
        return F.cross_entropy(logits.float(), labels), logits

    def update(self, iteration: int) -> None:
        """Advance per-iteration state (e.g. A-Softmax's lambda); a no-op by default."""

    def log_values(self) -> dict[str, float]:
        """Scalars worth logging with the loss (e.g. ``{"lambda": 5.0}``)."""
        return {}

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, num_classes={self.num_classes}"


def check_inputs(head: Head, features: Tensor, labels: Tensor | None) -> None:
    """Raise a clear error for shapes or labels a head cannot take."""
    if features.ndim != 2 or features.shape[1] != head.feat_dim:
        raise ValueError(
            f"{type(head).__name__} expects features of shape (batch, {head.feat_dim}), got {tuple(features.shape)}"
        )
    if labels is not None:
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
        # The value check needs the labels on the host: done on CPU only, never as a GPU sync in the loop,
        # and not while torch.compile traces (int() of a tensor would break the graph at the head).
        host = labels.device.type == "cpu" and not torch.compiler.is_compiling()
        if host and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= head.num_classes):
            raise ValueError(
                f"labels must lie in [0, {head.num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
            )


def float32_autocast_off(features: Tensor) -> torch.autocast:
    """A context that runs a head in float32 whatever autocast the backbone used."""
    return torch.autocast(device_type=features.device.type, enabled=False)


def compute_dtype(features: Tensor) -> torch.dtype:
    """float64 for float64 inputs (gradient checks), float32 for everything else (fp16 / bf16 included)."""
    return torch.promote_types(features.dtype, torch.float32)
