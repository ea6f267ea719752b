"""Two gloo processes on CPU. Pair and triplet losses across ranks give the loss and, after DDP's gradient
averaging, the gradients of one process on the whole batch (losses.metric.gather_batch). Resume needs no
shared filesystem: rank 0 alone reads its checkpoint and broadcasts it (or its error) to the other ranks."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sphereface_lib.errors import UserError
from sphereface_lib.losses import create_head
from sphereface_lib.training import train, wait_for_all_ranks
from test_training import same_state
from test_training_data import make_patterns, tiny_config

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
        wait_for_all_ranks()  # both ranks done before either tears the group down, as train() does
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


# Resume without a shared filesystem: only rank 0 reads its run.out_dir; rank 1's folder is another one, holding garbage.
RESUME_AT, RESUME_TO = 4, 8
GARBAGE = b"not a checkpoint"


def resume_main(rank: int, init_file: str, data: str, root: str, out: str) -> None:
    """In one process group: train RESUME_AT iterations, resume to RESUME_TO with rank 1 on a fresh folder, an
    uninterrupted reference run, and a resume of rank 0's folder by another configuration (refused)."""
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK="0")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        base = Path(root)

        def run(name0: str, name1: str, **over: object):
            folder = base / (name0 if rank == 0 else name1)  # each rank its own folder, as on two machines
            return train(tiny_config(Path(data), folder, run__checkpoint_every=RESUME_AT, run__log_every=RESUME_AT,
                                     **over))

        run("run", "node1_first", optim__iterations=RESUME_AT)
        if rank == 1:  # rank 1's folder on another machine: a garbage checkpoint, which reading would refuse
            (base / "node1_stale").mkdir()
            (base / "node1_stale" / "checkpoint.pt").write_bytes(GARBAGE)
        resumed = run("run", "node1_stale", optim__iterations=RESUME_TO)
        reference = run("reference", "node1_reference", optim__iterations=RESUME_TO)
        try:
            run("run", "node1_other", optim__iterations=RESUME_TO, optim__lr=0.01)
            error = None
        except UserError as exc:
            error = (type(exc).__name__, str(exc))
        torch.save({"resumed": {**resumed.backbone.state_dict(), **resumed.head.state_dict()},
                    "reference": {**reference.backbone.state_dict(), **reference.head.state_dict()},
                    "metrics": resumed.metrics, "reference_metrics": reference.metrics,
                    "error": error, "stale": (base / "node1_stale" / "checkpoint.pt").read_bytes() if rank == 1 else None},
                   f"{out}.{rank}")
        wait_for_all_ranks()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def resumed_ranks(tmp_path_factory) -> list[dict]:
    """Each rank's results of :func:`resume_main` (one spawn: each child imports torch)."""
    tmp = tmp_path_factory.mktemp("ddp_resume")
    data = make_patterns(tmp / "data").root
    mp.spawn(resume_main, args=(str(tmp / "init"), str(data), str(tmp), str(tmp / "out")), nprocs=WORLD, join=True)
    return [torch.load(f"{tmp / 'out'}.{r}", weights_only=False) for r in range(WORLD)]


def test_rank_1_resumes_in_step_from_rank_0s_checkpoint_alone(resumed_ranks):
    for r in resumed_ranks:
        assert same_state(r["resumed"], r["reference"])
    assert same_state(resumed_ranks[0]["resumed"], resumed_ranks[1]["resumed"])
    rows = [{k: v for k, v in row.items() if k != "img_per_s"} for row in resumed_ranks[0]["metrics"]]
    assert rows == [{k: v for k, v in row.items() if k != "img_per_s"}
                    for row in resumed_ranks[0]["reference_metrics"]]
    assert [row["iteration"] for row in rows] == [RESUME_AT, RESUME_TO]
    assert resumed_ranks[1]["stale"] == GARBAGE  # rank 1 resumed from rank 0's state, never from its own folder


def test_a_foreign_checkpoint_is_the_same_error_on_every_rank(resumed_ranks):
    errors = [r["error"] for r in resumed_ranks]
    assert errors[0] is not None and errors[0] == errors[1]
    name, message = errors[0]
    assert name == "ConfigError" and "run/checkpoint.pt was written by a different configuration" in message
