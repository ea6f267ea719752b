"""Pair and triplet losses across ranks: 2 gloo processes on CPU give the loss and, after DDP's gradient
averaging, the gradients of one process on the whole batch (losses.metric.gather_batch)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sphereface_lib.losses import create_head

WORLD = 2
DIM, CLASSES, P, K = 6, 4, 4, 3  # a global batch of P x K = 12 images, 6 per rank


class Net(nn.Module):
    """A linear 'backbone' and the head, as the trainer's _Net: DDP averages the gradients of both."""

    def __init__(self, head: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(DIM, DIM).double()
        self.head = create_head(head, DIM, CLASSES).double()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head.compute_loss(self.backbone(x), labels)[0]


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """P identities x K images, the identities interleaved so that each rank's slice misses some pairs."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(P).repeat(K)
    return torch.randn(P, DIM, generator=g, dtype=torch.float64)[labels] + 0.7 * torch.randn(
        P * K, DIM, generator=g, dtype=torch.float64), labels


def step(net: nn.Module, module: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict:
    loss = module(x, labels)
    loss.backward()
    return {"loss": loss.detach(), "values": net.head.log_values(),
            "grads": {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}}


HEADS = ["triplet", "softmax_contrastive"]


def rank_main(rank: int, init_file: str, out: str) -> None:
    """One training step of each head on this rank's slice, under DDP; the results saved for the test."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, labels = global_batch()
        b = len(labels) // WORLD
        local = slice(rank * b, (rank + 1) * b)
        results = {}
        for head in HEADS:
            net = Net(head)
            results[head] = step(net, nn.parallel.DistributedDataParallel(net), x[local], labels[local])
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Each rank's steps of the 2-process run (one spawn for all heads: each child imports torch)."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(rank_main, args=(str(tmp / "init"), str(tmp / "out")), nprocs=WORLD, join=True)
    return [torch.load(f"{tmp / 'out'}.{r}") for r in range(WORLD)]


@pytest.fixture(params=HEADS)
def runs(request, two_ranks) -> tuple[str, dict, list[dict]]:
    """(head, the one-process full-batch step, each rank's step of the 2-process run)."""
    head = request.param
    net = Net(head)
    x, labels = global_batch()
    return head, step(net, net, x, labels), [r[head] for r in two_ranks]


def test_the_pair_term_is_the_full_batch_one(runs):
    head, full, ranks = runs
    if head == "triplet":
        for r in ranks:
            torch.testing.assert_close(r["loss"], full["loss"])
            assert r["values"]["triplets"] == full["values"]["triplets"]
    else:
        for r in ranks:
            assert r["values"]["contrastive"] == pytest.approx(full["values"]["contrastive"], rel=1e-12)
        # the cross-entropy is each rank's slice mean: the mean over ranks is the full batch's loss
        torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, full["loss"])


def test_the_averaged_gradients_are_the_full_batch_ones(runs):
    _, full, ranks = runs
    assert set(full["grads"]) == set(ranks[0]["grads"]) and full["grads"]
    for name, grad in full["grads"].items():
        for r in ranks:  # DDP all-reduced them: every rank holds the average
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-10, atol=1e-12)


def test_one_process_is_unchanged():
    from sphereface_lib.losses import gather_batch

    x, labels = global_batch()
    gx, gl = gather_batch(x, labels)
    assert gx is x and gl is labels


def test_without_gathering_the_loss_would_differ():
    """The test can fail: the local slice's triplet loss is not the full batch's."""
    net = Net("triplet")
    x, labels = global_batch()
    b = len(labels) // WORLD
    assert not torch.allclose(net(x[:b], labels[:b]), net(x, labels))
