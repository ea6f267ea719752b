"""SphereFace-4/10/20/36/64: parameter counts from the layer table, shapes, knobs, autocast, channels_last."""

from __future__ import annotations

import pytest
import torch

from sphereface_lib import count_parameters, create_backbone, list_backbones, sphereface
from sphereface_lib.backbones import STAGE_CHANNELS, UNITS_PER_STAGE


def expected_parameters(depth: int, in_channels: int = 3, feat_map: tuple[int, int] = (7, 6)) -> int:
    """Count from the paper's layer table: conv weights + biases + PReLU slopes, then the 512-d fc."""
    total, cin = 0, in_channels
    for c, units in zip(STAGE_CHANNELS, UNITS_PER_STAGE[depth]):
        total += 9 * cin * c + c + c  # stride-2 conv (weights, bias) + PReLU
        total += units * 2 * (9 * c * c + c + c)  # two convs (weights, bias) + two PReLUs per unit
        cin = c
    return total + 512 * feat_map[0] * feat_map[1] * 512 + 512


# Stated once, derived by hand from the table above (classifier excluded), 3x112x96 input.
PAPER_COUNTS = {4: 12_562_496, 10: 15_219_264, 20: 22_670_656, 36: 32_778_816, 64: 48_200_512}


@pytest.mark.parametrize("depth", sorted(UNITS_PER_STAGE))
def test_parameter_counts_follow_the_layer_table(depth: int) -> None:
    model = create_backbone(f"sphereface{depth}")
    assert count_parameters(model) == expected_parameters(depth) == PAPER_COUNTS[depth]


def test_conv_layer_counts_match_the_depth_name() -> None:
    """Depth = convolutional layers: 4 stride-2 convs + 2 per residual unit."""
    for depth in UNITS_PER_STAGE:
        model = sphereface(depth, input_size=(28, 24), width=0.125)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        assert convs == depth


@pytest.mark.parametrize("depth", sorted(UNITS_PER_STAGE))
def test_output_shape_at_small_size(depth: int) -> None:
    model = sphereface(depth, input_size=(28, 24), width=0.125, in_channels=1, feat_dim=32)
    assert model(torch.zeros(3, 1, 28, 24)).shape == (3, 32)


def test_full_size_forward_shape() -> None:
    model = create_backbone("sphereface4")
    assert model(torch.zeros(2, 3, 112, 96)).shape == (2, 512)


def test_width_scales_channels_and_fc_follows_input_size() -> None:
    model = sphereface(20, input_size=(56, 48), width=0.5, feat_dim=128)
    assert model.stages[0][0].out_channels == 32 and model.stages[-1][0].out_channels == 256
    assert model.fc.in_features == 256 * 4 * 3 and model.fc.out_features == 128


def test_official_initialization() -> None:
    torch.manual_seed(0)
    model = sphereface(20)
    down = model.stages[1][0]
    bound = (3.0 / down.weight[0].numel()) ** 0.5
    assert down.weight.abs().max() <= bound and down.weight.abs().max() > 0.9 * bound
    unit = model.stages[2][2]
    assert 0.008 < unit.conv1.weight.std().item() < 0.012
    assert torch.count_nonzero(unit.conv1.bias) == 0 and not unit.conv1.bias.requires_grad
    prelus = [m for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    assert all(torch.all(p.weight == 0.25) for p in prelus)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_autocast_and_channels_last(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = sphereface(10, input_size=(28, 24), width=0.125).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 28, 24).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert out.shape == (2, 512) and torch.isfinite(out.float()).all()


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        sphereface(18)
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        create_backbone("resnet50")
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        sphereface(4, in_channels=2)
    model = sphereface(4, input_size=(28, 24), width=0.125)
    with pytest.raises(ValueError, match=r"expects input \(batch, 3, 28, 24\)"):
        model(torch.zeros(1, 3, 112, 96))


def test_factory_lists_all_depths() -> None:
    assert list_backbones() == ["sphereface4", "sphereface10", "sphereface20", "sphereface36", "sphereface64",
                                "sphereface64_released"]


def test_released_64_layer_prototxt_is_offered_by_name() -> None:
    """Table 2 gives (3, 8, 16, 3) for SphereFace-64 (48,200,512 parameters); the released prototxt has 7 units in
    stage 2 (47,905,088): the paper's stays the default, the released one is a name."""
    released = create_backbone("sphereface64_released")
    assert count_parameters(released) == 47_905_088
    assert count_parameters(create_backbone("sphereface64")) == 48_200_512
