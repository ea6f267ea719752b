"""Every comparison head learns: a linear embedding of separable clusters, batches from the "pk" sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sphereface_lib.data.samplers import create_sampler
from sphereface_lib.losses import create_head

HEADS = {
    "lsoftmax": {"m": 2},
    "cosface": {"s": 8.0, "m": 0.2},
    "arcface": {"s": 8.0, "m": 0.3},
    "softmax_contrastive": {"m": 2.0},
    "triplet": {"alpha": 0.2},
    "softmax_center": {"lambda_": 0.01},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(name: str, iterations: int = 40) -> tuple[list[float], float, float]:
    """(losses, accuracy before, accuracy after): accuracy of the logits or, without logits, of the
    nearest class mean of the embeddings."""
    g = torch.Generator().manual_seed(0)
    identities, per_identity, dim = 8, 12, 10
    labels = torch.arange(identities).repeat_interleave(per_identity)
    data = torch.randn(identities, dim, generator=g)[labels] + 1.0 * torch.randn(len(labels), dim, generator=g)
    torch.manual_seed(1)
    embed = nn.Linear(dim, 16)
    head = create_head(name, 16, identities, **HEADS[name])
    head.update(10_000)  # L-Softmax: past the annealing, the full margin
    optimizer = torch.optim.SGD([*embed.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    sampler = create_sampler("pk", labels.numpy(), batch_size=32, seed=0, k=4)

    def accuracy() -> float:
        with torch.no_grad():
            features = embed(data)
            _, logits = head.compute_loss(features, labels) if name != "triplet" else (None, None)
            if logits is None:
                e = F.normalize(features, dim=1)
                means = F.normalize(torch.stack([e[labels == c].mean(0) for c in range(identities)]), dim=1)
                logits = e @ means.T
            return float((logits.argmax(1) == labels).float().mean())

    head.eval()
    before = accuracy()
    head.train()
    losses = []
    for it in range(iterations):
        rows = torch.from_numpy(sampler.indices(it))
        loss, _ = head.compute_loss(embed(data[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.eval()
    return losses, before, accuracy()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_learns_separable_clusters(name: str) -> None:
    losses, before, after = _train(name)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    assert after > before and after >= 0.6, (before, after)  # 8 identities: chance is 0.125
