"""SphereFace-4/10/20/36/64 (the paper's Table 2), built from one layer table.

Four stages of 64/128/256/512 channels. Each stage opens with a 3x3 stride-2 convolution + PReLU and
continues with residual units x + PReLU(conv3x3(PReLU(conv3x3(x)))); no batch norm. A fully connected
layer maps the last feature map (7x6x512 for a 112x96 input) to the 512-d feature.

Initialization as in the official prototxt: Xavier (Caffe's, uniform with fan-in) for the stride-2
convolutions and the feature layer, biases 0; Gaussian std 0.01 for residual convolutions, whose biases
are fixed at 0 (lr_mult 0 in the prototxt: kept as frozen parameters so counts match the official
model); PReLU slopes 0.25.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

STAGE_CHANNELS = (64, 128, 256, 512)
#: residual units per stage for each depth (Table 2 of the paper)
UNITS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    4: (0, 0, 0, 0),
    10: (0, 1, 2, 0),
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}
#: layouts that differ from Table 2: the released sphereface_64_model.prototxt has 7 units in stage 2, not 8
#: (47,905,088 parameters at 3x112x96 instead of 48,200,512); Table 2's stays the default SphereFace-64
RELEASED_LAYOUTS: dict[str, tuple[int, tuple[int, int, int, int]]] = {"sphereface64_released": (64, (3, 7, 16, 3))}


def _caffe_xavier_(weight: Tensor) -> None:
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(weight, -bound, bound)


class ResidualUnit(nn.Module):
    """x + PReLU(conv3x3(PReLU(conv3x3(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu1 = nn.PReLU(channels, init=0.25)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu2 = nn.PReLU(channels, init=0.25)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
            conv.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


def _stage(in_channels: int, channels: int, units: int) -> nn.Sequential:
    down = nn.Conv2d(in_channels, channels, 3, 2, 1)
    _caffe_xavier_(down.weight)
    nn.init.zeros_(down.bias)
    return nn.Sequential(down, nn.PReLU(channels, init=0.25), *(ResidualUnit(channels) for _ in range(units)))


def _out_size(size: int) -> int:
    for _ in STAGE_CHANNELS:
        size = (size - 1) // 2 + 1
    return size


class SphereFaceNet(nn.Module):
    """A SphereFace backbone: images (B, C, H, W) normalized as (x - 127.5) / 128 -> features (B, feat_dim)."""

    def __init__(
        self,
        depth: int = 20,
        *,
        in_channels: int = 3,
        input_size: tuple[int, int] = (112, 96),
        width: float = 1.0,
        feat_dim: int = 512,
        units: tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if depth not in UNITS_PER_STAGE:
            raise ValueError(f"depth must be one of {sorted(UNITS_PER_STAGE)}, got {depth!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        if isinstance(width, bool) or not isinstance(width, numbers.Real) or not (0 < width < math.inf):
            raise ValueError(f"width must be a positive finite number, got {width!r}")
        if isinstance(feat_dim, bool) or not isinstance(feat_dim, numbers.Integral) or feat_dim < 1:
            raise ValueError(f"feat_dim must be a positive integer, got {feat_dim!r}")
        if len(input_size) != 2 or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in input_size):
            raise ValueError(f"input_size must be two integers (height, width), got {input_size!r}")
        h, w = input_size
        if h < 16 or w < 16:
            raise ValueError(f"input_size must be at least 16x16 (four stride-2 stages), got {input_size}")
        self.depth, self.in_channels, self.input_size, self.feat_dim = depth, in_channels, (int(h), int(w)), int(feat_dim)
        channels = [max(1, round(c * width)) for c in STAGE_CHANNELS]
        stages, cin = [], in_channels
        for c, n in zip(channels, units or UNITS_PER_STAGE[depth]):
            stages.append(_stage(cin, c, n))
            cin = c
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin * _out_size(h) * _out_size(w), self.feat_dim)
        _caffe_xavier_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"sphereface{self.depth} expects input (batch, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}), got {tuple(x.shape)}"
            )
        return self.fc(torch.flatten(self.stages(x), 1))


def sphereface(
    depth: int = 20,
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] = (112, 96),
    width: float = 1.0,
    feat_dim: int = 512,
) -> SphereFaceNet:
    """SphereFace-``depth`` for depth in {4, 10, 20, 36, 64}; defaults reproduce the paper's networks."""
    return SphereFaceNet(depth, in_channels=in_channels, input_size=tuple(input_size), width=width, feat_dim=feat_dim)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return [f"sphereface{d}" for d in sorted(UNITS_PER_STAGE)] + sorted(RELEASED_LAYOUTS)


def create_backbone(name: str, **kwargs) -> SphereFaceNet:
    """Build a backbone by name, e.g. ``create_backbone("sphereface20", input_size=(56, 48), width=0.5)``;
    ``"sphereface64_released"`` is the released prototxt's layout (units 3, 7, 16, 3)."""
    if name not in list_backbones():
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    if name in RELEASED_LAYOUTS:
        depth, units = RELEASED_LAYOUTS[name]
        return SphereFaceNet(depth, units=units, **{**kwargs, "input_size": tuple(kwargs.get("input_size", (112, 96)))})
    return sphereface(int(name.removeprefix("sphereface")), **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included, as the official model counts them)."""
    return sum(p.numel() for p in model.parameters())
