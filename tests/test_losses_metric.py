"""Contrastive, triplet and center losses: per-sample references, float64 gradients, batch contracts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sphereface_lib.losses import SoftmaxCenter, SoftmaxContrastive, Triplet, create_head


pytestmark = pytest.mark.usefixtures("one_thread")


def _dist2(a: list[float], b: list[float]) -> float:
    return sum((u - v) ** 2 for u, v in zip(a, b))


def reference_contrastive(x: torch.Tensor, labels: torch.Tensor, m: float) -> float:
    """DeepID2 Eq. 2 averaged over the pairs i < j, one pair at a time."""
    rows, ys = x.tolist(), labels.tolist()
    terms = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            d2 = _dist2(rows[i], rows[j])
            terms.append(0.5 * d2 if ys[i] == ys[j] else 0.5 * max(0.0, m - math.sqrt(d2)) ** 2)
    return sum(terms) / len(terms)


def reference_triplet(x: torch.Tensor, labels: torch.Tensor, alpha: float) -> float:
    """Semi-hard triplet loss (FaceNet Eq. 1, TF triplet_semihard_loss's fallback), one triplet at a time."""
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x.tolist()]
    ys = labels.tolist()
    terms = []
    for a in range(len(rows)):
        for p in range(len(rows)):
            negatives = [_dist2(rows[a], rows[n]) for n in range(len(rows)) if ys[n] != ys[a]]
            if p == a or ys[p] != ys[a] or not negatives:
                continue
            d_ap = _dist2(rows[a], rows[p])
            farther = [d for d in negatives if d > d_ap]
            d_an = min(farther) if farther else max(negatives)
            terms.append(max(0.0, d_ap - d_an + alpha))
    return sum(terms) / len(terms)


def _pk_batch(p: int, k: int, dim: int, seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    centers = torch.randn(p, dim, generator=g, dtype=torch.float64) * 2
    return centers[labels] + spread * torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


class LossOf(nn.Module):
    """forward = the head's training loss, so that functional_call can swap the head's parameters."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head.compute_loss(x, labels)[0]


def gradcheck_loss(head: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> bool:
    """torch.autograd.gradcheck of the training loss w.r.t. the features and every parameter."""
    loss = LossOf(head)
    names = [n for n, _ in loss.named_parameters()]
    values = [p.detach().clone().requires_grad_(True) for _, p in loss.named_parameters()]
    return torch.autograd.gradcheck(
        lambda x, *ps: functional_call(loss, dict(zip(names, ps)), (x, labels)), (x.requires_grad_(True), *values))


# ---------------------------------------------------------------- softmax + contrastive (DeepID2)

def test_contrastive_matches_reference() -> None:
    torch.manual_seed(0)
    x, labels = _pk_batch(4, 3, 5, seed=0)
    head = SoftmaxContrastive(5, 4, lambda_=0.3, m=4.0).double()
    loss, logits = head.compute_loss(x, labels)
    expected_pairs = reference_contrastive(x, labels, 4.0)
    assert head.contrastive(x, labels).item() == pytest.approx(expected_pairs, rel=1e-10)
    ce = F.cross_entropy(x @ head.fc.weight.detach().T + head.fc.bias.detach(), labels)
    assert loss.item() == pytest.approx(ce.item() + 0.3 * expected_pairs, rel=1e-10)
    assert set(head.log_values()) == {"softmax", "contrastive"}


def test_contrastive_batch_contracts() -> None:
    head = SoftmaxContrastive(3, 5, m=2.0).double()
    one = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    assert head.contrastive(one, torch.tensor([0])).item() == 0.0  # no pair: the term is exactly 0
    loss, _ = head.compute_loss(one, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(one.grad).all()
    x = torch.randn(5, 3, dtype=torch.float64)
    distinct = torch.arange(5)  # no positive pair: only the negative term
    assert head.contrastive(x, distinct).item() == pytest.approx(reference_contrastive(x, distinct, 2.0), rel=1e-10)


def test_contrastive_gradcheck_float64() -> None:
    torch.manual_seed(1)
    x, labels = _pk_batch(3, 2, 4, seed=1)
    assert gradcheck_loss(SoftmaxContrastive(4, 3, lambda_=0.5, m=6.0).double(), x, labels)


# ---------------------------------------------------------------- triplet (FaceNet)

@pytest.mark.parametrize("p, k, spread", [(4, 3, 1.0), (3, 4, 3.0), (5, 2, 0.3)])
def test_triplet_matches_reference(p: int, k: int, spread: float) -> None:
    x, labels = _pk_batch(p, k, 6, seed=p * k, spread=spread)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # order must not matter
    x, labels = x[perm], labels[perm]
    head = Triplet(6, p, alpha=0.3)
    assert head(x, labels).item() == pytest.approx(reference_triplet(x, labels, 0.3), rel=1e-10, abs=1e-12)
    assert head.log_values()["triplets"] == p * k * (k - 1)


def test_triplet_uses_fallback_when_every_negative_is_closer() -> None:
    # Anchor 0 and its positive 1 are opposite; the negative 2 is next to the anchor: no semi-hard negative.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    assert Triplet(2, 2, alpha=0.2)(x, labels).item() == pytest.approx(reference_triplet(x, labels, 0.2), rel=1e-12)


def test_triplet_satisfied_batch_gives_exact_zero() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]])
    loss = Triplet(2, 2, alpha=0.2)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == 0.0 and Triplet(2, 2).log_values() == {}


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [2, 2, 2, 2]])
def test_triplet_batch_without_triplets_is_an_error(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="sampler 'pk'"):
        Triplet(3, 4)(torch.randn(4, 3), torch.tensor(labels))


def test_triplet_gradcheck_float64() -> None:
    x, labels = _pk_batch(3, 3, 4, seed=3, spread=2.0)
    assert gradcheck_loss(Triplet(4, 3, alpha=0.5), x, labels)


# ---------------------------------------------------------------- softmax + center (Wen et al.)

def test_center_loss_and_update_match_reference() -> None:
    torch.manual_seed(4)
    x, labels = _pk_batch(3, 2, 5, seed=4)
    labels = torch.tensor([0, 0, 2, 3, 3, 3])  # class 1 absent, class 3 three times
    head = SoftmaxCenter(5, 4, lambda_=0.1, alpha=0.5).double()
    before = head.centers.clone()
    expected_center = sum(_dist2(x[i].tolist(), before[y].tolist()) for i, y in enumerate(labels.tolist())) / (2 * 6)
    loss, logits = head.compute_loss(x, labels)
    ce = F.cross_entropy(logits, labels).item()
    assert loss.item() == pytest.approx(ce + 0.1 * expected_center, rel=1e-10)
    for j in range(4):  # Eq. 4, class by class
        rows = [i for i, y in enumerate(labels.tolist()) if y == j]
        delta = sum((before[j] - x[i] for i in rows), torch.zeros(5, dtype=torch.float64)) / (1 + len(rows))
        torch.testing.assert_close(head.centers[j], before[j] - 0.5 * delta, rtol=1e-12, atol=1e-12)
    assert torch.equal(head.centers[1], before[1])
    head.eval()
    frozen = head.centers.clone()
    head.compute_loss(x, labels)
    assert torch.equal(head.centers, frozen)  # evaluation never moves the centers


def test_center_gradcheck_float64() -> None:
    x, labels = _pk_batch(3, 2, 4, seed=5)
    head = SoftmaxCenter(4, 3, lambda_=0.7).double().eval()  # eval: no center update between evaluations
    assert gradcheck_loss(head, x, labels)


def test_center_update_is_bit_for_bit_repeatable() -> None:
    x, labels = _pk_batch(8, 4, 16, seed=6)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        head = SoftmaxCenter(16, 8)
        for _ in range(3):
            head.compute_loss(x.float(), labels)
        runs.append(head.centers.clone())
    assert torch.equal(runs[0], runs[1])


def test_center_update_under_data_parallel_equals_global_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks with contiguous slices, all_reduce(SUM) simulated: record each rank's collective inputs,
    then replay every rank with the sums. Each rank must end with the centers of the global-batch update."""
    x, labels = _pk_batch(4, 3, 5, seed=10)
    world, n = 2, len(labels)
    slices = [slice(r * n // world, (r + 1) * n // world) for r in range(world)]

    def fresh() -> SoftmaxCenter:
        torch.manual_seed(11)
        return SoftmaxCenter(5, 4, alpha=0.5).double()

    recorded: list[list[torch.Tensor]] = [[] for _ in range(world)]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for r in range(world):
        monkeypatch.setattr(dist, "all_reduce", lambda t, r=r: recorded[r].append(t.clone()))
        fresh().compute_loss(x[slices[r]], labels[slices[r]])
    assert len(recorded[0]) == len(recorded[1]) > 0
    for r in range(world):
        calls = iter(range(len(recorded[r])))

        def all_reduce_sum(t: torch.Tensor) -> None:
            call = next(calls)
            t.copy_(sum(rec[call] for rec in recorded))

        monkeypatch.setattr(dist, "all_reduce", all_reduce_sum)
        head = fresh()
        head.compute_loss(x[slices[r]], labels[slices[r]])
        single = fresh()
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        single.compute_loss(x, labels)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        torch.testing.assert_close(head.centers, single.centers, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- all three: bad inputs, zero features, bf16

NAMES = ["softmax_contrastive", "triplet", "softmax_center"]


@pytest.mark.parametrize("name", NAMES)
def test_zero_norm_features_are_finite(name: str) -> None:
    torch.manual_seed(8)
    head = create_head(name, 4, 3)
    x = torch.zeros(6, 4, requires_grad=True)
    loss, _ = head.compute_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
    assert all(math.isfinite(v) for v in head.log_values().values())


@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_and_labels_are_rejected(name: str) -> None:
    head = create_head(name, 4, 3)
    with pytest.raises(ValueError, match="features of shape"):
        head.compute_loss(torch.randn(4, 5), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="labels must lie"):
        head.compute_loss(torch.randn(4, 4), torch.tensor([0, 0, 1, 3]))


@pytest.mark.parametrize("name, kwargs", [("softmax_contrastive", {"m": 0.0}), ("triplet", {"alpha": -1.0}),
                                          ("softmax_center", {"alpha": 1.5})])
def test_bad_hyperparameters_are_rejected(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_head(name, 4, 3, **kwargs)
