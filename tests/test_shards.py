"""Per-rank data shards: a pack split by identity (write_shards), each of 2 gloo ranks opening only its own
shard and drawing its local batch from it with the seed (run.seed, rank)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sphereface_lib.data import packed, sources
from sphereface_lib.data.packed import PackedDataset, write_shards
from sphereface_lib.errors import UserError
from sphereface_lib.training import train, wait_for_all_ranks
from sphereface_lib.training.trainer import BatchLoader, build_model
from test_training import same_state
from test_training_data import make_patterns, tiny_config

WORLD = 2


@pytest.fixture
def shards(tmp_path: Path) -> tuple[PackedDataset, Path]:
    whole = make_patterns(tmp_path / "whole")
    return whole, write_shards(whole, tmp_path / "shards", WORLD)


def test_shards_split_the_pack_by_identity(shards) -> None:
    whole, root = shards
    parts = [sources.open_packed(root, rank, WORLD) for rank in range(WORLD)]
    assert [p.root.name for p in parts] == ["shard-0-of-2", "shard-1-of-2"]
    assert sorted(k for p in parts for k in p.keys) == sorted(whole.keys)
    assert not set(parts[0].labels) & set(parts[1].labels)
    for p in parts:
        assert p.num_identities == whole.num_identities and p.identities == whole.identities
        for i, key in enumerate(p.keys):
            row = whole.index_of(key)
            assert p.labels[i] == whole.labels[row] and np.array_equal(p.images[i], whole.images[row])


def test_a_rank_draws_its_local_batch_from_its_shard_with_its_own_seed(shards, tmp_path: Path) -> None:
    _, root = shards
    config = tiny_config(root, tmp_path / "run")
    batches = []
    for rank in range(WORLD):
        shard = sources.open_packed(root, rank, WORLD)
        loader = BatchLoader(shard, config, 0, 1, rank, WORLD, sharded=True)
        (_, images, labels, _), = list(loader)
        loader.close()
        assert len(labels) == config.optim.batch_size // WORLD
        assert all(label % WORLD == rank for label in labels.tolist())  # identity i lives in shard i % WORLD
        batches.append(loader.sampler.indices(0))
    assert not np.array_equal(batches[0], batches[1])  # (seed, 0) and (seed, 1) draw different rows


def test_a_shard_set_needs_one_process_per_shard(shards, tmp_path: Path) -> None:
    _, root = shards
    with pytest.raises(UserError, match="holds 2 shards, one per process, but the run has 1 process;"):
        train(tiny_config(root, tmp_path / "run"))


def shard_main(rank: int, init_file: str, data: str, out: str) -> None:
    """Train a few iterations on this rank's shard, recording every pack the process opens."""
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK="0")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    opened: list[str] = []
    real_init = packed.PackedDataset.__init__

    def recording_init(self, root) -> None:
        opened.append(Path(root).name)
        real_init(self, root)

    packed.PackedDataset.__init__ = recording_init
    try:
        result = train(tiny_config(Path(data), Path(out) / f"run{rank}", optim__iterations=6,
                                   run__checkpoint_every=6, run__log_every=3))
        torch.save({"opened": opened, "state": {**result.backbone.state_dict(), **result.head.state_dict()},
                    "metrics": result.metrics}, f"{out}/rank{rank}.pt")
        wait_for_all_ranks()
    finally:
        packed.PackedDataset.__init__ = real_init
        dist.destroy_process_group()


def test_each_of_two_ranks_opens_only_its_shard_and_trains(shards, tmp_path: Path) -> None:
    _, root = shards
    mp.spawn(shard_main, args=(str(tmp_path / "init"), str(root), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["opened"] for r in ranks] == [["shard-0-of-2"], ["shard-1-of-2"]]
    assert same_state(ranks[0]["state"], ranks[1]["state"])  # DDP kept the replicas equal
    initial, _ = build_model(tiny_config(root, tmp_path / "x"), (28, 24, 1), 10)
    assert not torch.allclose(initial.fc.weight, ranks[0]["state"]["fc.weight"], atol=1e-4)  # it trained
    assert all(np.isfinite(r["loss"]) for r in ranks[0]["metrics"])
    assert [r["iteration"] for r in ranks[0]["metrics"]] == [3, 6]


def mismatch_main(rank: int, init_file: str, packs: list[str], out: str) -> None:
    """Start training with this rank's own data.path; record the error the rank raised."""
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK="0")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        train(tiny_config(Path(packs[rank]), Path(out) / f"run{rank}", optim__iterations=2))
        message = None
    except UserError as exc:
        message = str(exc)
    finally:
        dist.destroy_process_group()
    torch.save({"error": message}, f"{out}/rank{rank}.pt")


def test_ranks_reading_unlike_packs_all_stop_with_one_error_naming_both(tmp_path: Path) -> None:
    """Rank 1 given another pack (12 identities, not 10): every rank raises the same UserError before the model
    is built, where DistributedDataParallel used to fail on the head's shape."""
    packs = [str(make_patterns(tmp_path / "whole").root), str(make_patterns(tmp_path / "other", identities=12).root)]
    mp.spawn(mismatch_main, args=(str(tmp_path / "init"), packs, str(tmp_path)), nprocs=WORLD, join=True)
    errors = [torch.load(tmp_path / f"rank{r}.pt")["error"] for r in range(WORLD)]
    assert errors[0] == errors[1] and errors[0] is not None
    assert (f"rank 1 reads {packs[1]} (28x24x1 images of 12 identities) but rank 0 reads {packs[0]} (28x24x1, 10 "
            "identities)") in errors[0] and "every process needs the same pack" in errors[0]
    assert not (tmp_path / "run0" / "metrics.csv").exists()
