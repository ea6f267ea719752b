"""Decision rules of Table 1 and the lower bounds on m of Properties 2 and 3 (SphereFace, Section 3.3).

The paper defines m_min as the smallest m for which the maximal intra-class angular feature distance is
smaller than the minimal inter-class angular feature distance (Section 3.3; proofs in the Appendix of
arXiv 1704.08063). This module computes that quantity two independent ways:

* :func:`closed_form_distances` / :func:`m_min_closed_form` — the Appendix's angles, root found with
  :func:`scipy.optimize.brentq`;
* :func:`decision_rule_distances` / :func:`m_min_from_decision_rule` — classify a fine grid of directions on
  the unit circle with the A-Softmax rule psi(theta_i) > cos(theta_j) and measure the angles directly,
  then bisect on m.

Neither route types in the answers 2 + sqrt(3) (binary, Property 2) or 3 (many classes, Property 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import brentq

from ..losses import psi as _psi_of_cos

Rule = Literal["softmax", "modified_softmax", "a_softmax"]
RULES: tuple[Rule, ...] = ("softmax", "modified_softmax", "a_softmax")
NEITHER = -1  # label of points that no class claims (the angular margin of A-Softmax)


def psi(theta: np.ndarray | float, m: float) -> np.ndarray:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m] (Eq. 7), for real m >= 1.

    The loss module's :func:`sphereface_lib.losses.psi` takes cos(theta) and an integer m; this version
    takes theta and any real m, which the bound search needs (2 + sqrt(3) is not an integer).
    """
    if m < 1:
        raise ValueError(f"psi: m must be >= 1, got m={m}")
    theta = np.asarray(theta, dtype=np.float64)
    k = np.floor(theta * m / math.pi)
    return np.where(k % 2 == 0, 1.0, -1.0) * np.cos(m * theta) - 2.0 * k


def weights_2d(angle_deg: float, norms: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Two class weights W1 (along the x axis) and W2 (``angle_deg`` from W1), shape (2, 2)."""
    if not 0.0 < angle_deg <= 180.0:
        raise ValueError(f"weights_2d: angle_deg must be in (0, 180], got {angle_deg}")
    a = math.radians(angle_deg)
    directions = np.array([[1.0, 0.0], [math.cos(a), math.sin(a)]])
    return directions * np.asarray(norms, dtype=np.float64)[:, None]


def classify(
    points: np.ndarray,
    weights: np.ndarray,
    rule: Rule,
    m: int = 1,
    biases: np.ndarray | None = None,
) -> np.ndarray:
    """Class index per 2-D point by the decision rules of Table 1; :data:`NEITHER` where no class wins.

    * ``softmax``: argmax_i W_i x + b_i (boundary (W1 - W2) x + b1 - b2 = 0);
    * ``modified_softmax``: argmax_i ||x|| cos(theta_i), unit weights, no bias;
    * ``a_softmax``: class i where ||x|| psi(theta_i) > ||x|| cos(theta_j) for every j != i, with
      :func:`sphereface_lib.losses.psi` (Eq. 7); between the regions lies the angular margin.
    """
    points = np.asarray(points, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if points.ndim != 2 or weights.ndim != 2 or points.shape[1] != weights.shape[1]:
        raise ValueError(f"classify: points {points.shape} and weights {weights.shape} must be (N, d), (C, d)")
    if rule == "softmax":
        logits = points @ weights.T + (0.0 if biases is None else np.asarray(biases, dtype=np.float64))
        return logits.argmax(axis=1)
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True)
    norms = np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    cos_theta = np.clip((points / norms) @ unit.T, -1.0, 1.0)
    if rule == "modified_softmax":
        return cos_theta.argmax(axis=1)
    if rule != "a_softmax":
        raise ValueError(f"classify: unknown rule {rule!r}; choose one of {RULES}")
    if int(m) != m or m < 1:
        raise ValueError(f"classify: m must be a positive integer for rule 'a_softmax', got m={m}")
    psi_theta = _psi_of_cos(torch.from_numpy(cos_theta), int(m)).numpy()
    labels = np.full(len(points), NEITHER, dtype=np.int64)
    for i in range(weights.shape[0]):
        others = np.delete(cos_theta, i, axis=1)
        labels[np.all(psi_theta[:, [i]] > others, axis=1)] = i
    return labels


@dataclass(frozen=True)
class AngularDistances:
    """Maximal intra-class and minimal inter-class angular feature distances (radians), Section 3.3."""

    max_intra: float
    min_inter: float

    @property
    def separated(self) -> bool:
        """The paper's criterion: max intra-class distance <= min inter-class distance."""
        return self.max_intra <= self.min_inter


def closed_form_distances(m: float, theta_12: float) -> AngularDistances:
    """Appendix, proof of Property 2: the angles for two classes whose weights are theta_12 apart.

    Class 1's A-Softmax region ends at theta_1 = theta_12/(m+1) towards W2 and, on the far side, at
    theta_12/(m-1) while theta_12 <= (m-1) pi / m, else at (2 pi - theta_12)/(m+1) (the far boundary then
    faces W2 around the circle). The gap to class 2 is (m-1) theta_12/(m+1).
    """
    if m <= 1 or not 0.0 < theta_12 <= math.pi:
        raise ValueError(f"closed_form_distances: need m > 1 and 0 < theta_12 <= pi, got m={m}, theta_12={theta_12}")
    near = theta_12 / (m + 1)
    far = theta_12 / (m - 1) if theta_12 <= (m - 1) * math.pi / m else (2 * math.pi - theta_12) / (m + 1)
    return AngularDistances(max_intra=min(near + far, math.pi), min_inter=(m - 1) * theta_12 / (m + 1))


def closed_form_distances_uniform(m: float, num_classes: int) -> AngularDistances:
    """Appendix, proof of Property 3: C weights spaced 2 pi / C apart; each region spans theta/(m+1) per side."""
    if m <= 1 or num_classes < 3:
        raise ValueError(f"closed_form_distances_uniform: need m > 1 and num_classes >= 3, got {m}, {num_classes}")
    theta = 2 * math.pi / num_classes
    return AngularDistances(max_intra=2 * theta / (m + 1), min_inter=(m - 1) * theta / (m + 1))


def _circular_extent(angles: np.ndarray) -> float:
    """Largest angular distance between two of ``angles`` (radians) lying on one arc: 2 pi minus the widest gap."""
    a = np.sort(np.mod(angles, 2 * math.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    return float(min(2 * math.pi - gaps.max(), math.pi))


def _circular_min_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest angular distance between a point of ``a`` and a point of ``b`` (radians)."""
    b_sorted = np.sort(np.mod(b, 2 * math.pi))
    a = np.mod(a, 2 * math.pi)
    idx = np.searchsorted(b_sorted, a) % len(b_sorted)
    best = math.inf
    for neighbour in (b_sorted[idx], b_sorted[idx - 1]):
        d = np.abs(a - neighbour)
        best = min(best, float(np.minimum(d, 2 * math.pi - d).min()))
    return best


def _regions_on_circle(m: float, weight_angles: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Directions phi on the unit circle and the class each one is claimed by under psi (:data:`NEITHER` if none)."""
    phi = (np.arange(resolution) + 0.5) * (2 * math.pi / resolution)
    d = np.abs(phi[:, None] - weight_angles[None, :])
    theta = np.minimum(d, 2 * math.pi - d)  # angle between the direction and each W_i
    psi_theta, cos_theta = psi(theta, m), np.cos(theta)
    labels = np.full(resolution, NEITHER, dtype=np.int64)
    for i in range(len(weight_angles)):
        others = np.delete(cos_theta, i, axis=1)
        labels[np.all(psi_theta[:, [i]] > others, axis=1)] = i
    return phi, labels


def decision_rule_distances(
    m: float, weight_angles: np.ndarray, resolution: int = 20000
) -> AngularDistances:
    """Both angular distances measured on ``resolution`` directions classified by the A-Softmax rule.

    Max intra: the widest class region (largest angle between two directions of one class); min inter:
    the smallest angle between directions of two different classes. Accurate to 2 pi / ``resolution``.
    """
    weight_angles = np.asarray(weight_angles, dtype=np.float64)
    phi, labels = _regions_on_circle(m, weight_angles, resolution)
    classes = [phi[labels == i] for i in range(len(weight_angles))]
    if any(len(c) == 0 for c in classes):
        raise ValueError(f"decision_rule_distances: a class has no direction at resolution={resolution}; raise it")
    max_intra = max(_circular_extent(c) for c in classes)
    min_inter = min(
        _circular_min_distance(classes[i], classes[j])
        for i in range(len(classes))
        for j in range(i + 1, len(classes))
    )
    return AngularDistances(max_intra=max_intra, min_inter=min_inter)


def worst_binary_gap(m: float, theta_12_grid: np.ndarray, resolution: int | None = None) -> float:
    """max over theta_12 of (max intra - min inter) for two classes; <= 0 means m separates every pair.

    ``resolution=None`` uses :func:`closed_form_distances`, else :func:`decision_rule_distances`.
    """
    gaps = []
    for theta_12 in theta_12_grid:
        if resolution is None:
            dist = closed_form_distances(m, float(theta_12))
        else:
            dist = decision_rule_distances(m, np.array([0.0, theta_12]), resolution)
        gaps.append(dist.max_intra - dist.min_inter)
    return float(max(gaps))


def uniform_gap(m: float, num_classes: int, resolution: int | None = None) -> float:
    """(max intra - min inter) for ``num_classes`` uniformly spaced weights; <= 0 means separated."""
    if resolution is None:
        dist = closed_form_distances_uniform(m, num_classes)
    else:
        angles = np.arange(num_classes) * (2 * math.pi / num_classes)
        dist = decision_rule_distances(m, angles, resolution)
    return dist.max_intra - dist.min_inter


def theta_12_grid(steps: int) -> np.ndarray:
    """``steps`` weight angles theta_12 evenly spread over (0, pi] (the binary case's free variable)."""
    if steps < 2:
        raise ValueError(f"theta_12_grid: steps must be >= 2, got {steps}")
    return np.linspace(math.pi / steps, math.pi, steps)


def m_min_closed_form(num_classes: int = 2, steps: int = 180, bracket: tuple[float, float] = (1.5, 10.0)) -> float:
    """Smallest m with max intra <= min inter from the Appendix's angles (brentq root of the gap).

    ``num_classes=2`` scans theta_12 over :func:`theta_12_grid` (Property 2); ``num_classes >= 3`` uses
    uniformly spaced weights (Property 3).
    """
    if num_classes == 2:
        grid = theta_12_grid(steps)
        return float(brentq(lambda m: worst_binary_gap(m, grid), *bracket, xtol=1e-12))
    return float(brentq(lambda m: uniform_gap(m, num_classes), *bracket, xtol=1e-12))


def m_min_from_decision_rule(
    num_classes: int = 2,
    resolution: int = 20000,
    steps: int = 90,
    bracket: tuple[float, float] = (1.5, 10.0),
    tolerance: float = 1e-3,
) -> float:
    """Smallest m (to ``tolerance``) whose A-Softmax regions on a direction grid satisfy the criterion.

    Bisection on m between ``bracket``; each step classifies ``resolution`` directions per weight
    configuration (theta_12 over :func:`theta_12_grid` for two classes, uniform spacing otherwise).
    """
    grid = theta_12_grid(steps)

    def gap(m: float) -> float:
        if num_classes == 2:
            return worst_binary_gap(m, grid, resolution)
        return uniform_gap(m, num_classes, resolution)

    low, high = bracket
    if gap(low) <= 0 or gap(high) > 0:
        raise ValueError(f"m_min_from_decision_rule: the criterion does not change sign on bracket={bracket}")
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        low, high = (low, mid) if gap(mid) <= 0 else (mid, high)
    return 0.5 * (low + high)


def boundary_angle(m: int, theta_12: float, resolution: int = 20000) -> float:
    """Measured angle from W1 to the A-Softmax class-1 boundary on the side of W2 (Table 1: cos m theta_1 = cos theta_2)."""
    phi, labels = _regions_on_circle(float(m), np.array([0.0, theta_12]), resolution)
    inside = phi[(labels == 0) & (phi < theta_12)]
    step = 2 * math.pi / resolution
    return float(inside.max() + step / 2) if len(inside) else 0.0


def m_min_resolution_error(num_classes: int, resolution: int, steps: int = 90, tolerance: float = 1e-3) -> float:
    """Bound on |m_min_from_decision_rule - m_min| from the direction grid and the bisection tolerance.

    Sampling every 2 pi/resolution shifts each measured angle by at most two steps, so the measured gap
    (max intra - min inter) is off by at most 4 steps; divided by the gap's slope in m at the closed-form
    root (central difference), this bounds the error in m.
    """
    root = m_min_closed_form(num_classes, steps)
    grid = theta_12_grid(steps)

    def gap(m: float) -> float:
        return worst_binary_gap(m, grid) if num_classes == 2 else uniform_gap(m, num_classes)

    h = 1e-4
    slope = abs(gap(root + h) - gap(root - h)) / (2 * h)
    return 4 * (2 * math.pi / resolution) / slope + tolerance
