"""Margin bounds of Properties 2-3 and the decision rules of Table 1 (sphereface_lib.companion.theory)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sphereface_lib import losses
from sphereface_lib.companion import theory


def test_psi_matches_the_loss_module_for_integer_m() -> None:
    theta = np.linspace(0.0, math.pi, 721)
    for m in (1, 2, 3, 4):
        expected = losses.psi(torch.from_numpy(np.cos(theta)), m).numpy()
        np.testing.assert_allclose(theory.psi(theta, m), expected, atol=1e-9)


def test_psi_is_continuous_and_decreasing_for_real_m() -> None:
    theta = np.linspace(0.0, math.pi, 20001)
    values = theory.psi(theta, 2 + math.sqrt(3))
    assert np.all(np.diff(values) <= 1e-12)
    assert np.max(np.abs(np.diff(values))) < 1e-2  # no jumps at the k pi / m joints
    with pytest.raises(ValueError, match="m must be >= 1"):
        theory.psi(theta, 0.5)


def test_closed_form_bounds_are_the_papers() -> None:
    assert theory.m_min_closed_form(2) == pytest.approx(2 + math.sqrt(3), abs=1e-9)
    for classes in (3, 5, 8):
        assert theory.m_min_closed_form(classes) == pytest.approx(3.0, abs=1e-9)


def test_decision_rule_bounds_agree_within_their_error_bound() -> None:
    for classes, paper in ((2, 2 + math.sqrt(3)), (4, 3.0)):
        measured = theory.m_min_from_decision_rule(classes, resolution=4000, steps=30, tolerance=0.005)
        assert abs(measured - paper) <= theory.m_min_resolution_error(classes, 4000, 30, 0.005)


def test_decision_rule_distances_match_the_appendix_angles() -> None:
    theta_12 = math.radians(100.0)
    measured = theory.decision_rule_distances(4.0, np.array([0.0, theta_12]), resolution=36000)
    expected = theory.closed_form_distances(4.0, theta_12)
    step = 2 * math.pi / 36000
    assert measured.max_intra == pytest.approx(expected.max_intra, abs=2 * step)
    assert measured.min_inter == pytest.approx(expected.min_inter, abs=2 * step)
    assert measured.separated and not theory.decision_rule_distances(3.0, np.array([0.0, theta_12]), 36000).separated


def test_classify_regions_of_table_1() -> None:
    weights = theory.weights_2d(90.0)
    points = np.array([[1.0, 0.05], [0.05, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    assert theory.classify(points, weights, "modified_softmax").tolist()[:2] == [0, 1]
    labels = theory.classify(points, weights, "a_softmax", m=4)
    assert labels.tolist() == [0, 1, theory.NEITHER, theory.NEITHER]  # the bisector lies in the margin
    shifted = theory.classify(np.array([[1.0, 1.0]]), weights, "softmax", biases=np.array([0.0, 0.5]))
    assert shifted.tolist() == [1]  # the bias moves the softmax boundary off the bisector
    assert theory.boundary_angle(4, math.radians(90.0), 36000) == pytest.approx(math.radians(18.0), abs=1e-3)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        theory.classify(np.zeros((1, 2)), theory.weights_2d(90.0), "cosface")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        theory.classify(np.ones((1, 2)), theory.weights_2d(90.0), "a_softmax", m=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="angle_deg"):
        theory.weights_2d(0.0)
    with pytest.raises(ValueError, match="does not change sign"):
        theory.m_min_from_decision_rule(2, resolution=2000, steps=10, bracket=(4.0, 6.0))
