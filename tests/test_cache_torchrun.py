"""The model cache trains through torchrun when several processes are asked for ($SPHEREFACE_TRAIN_PROCESSES; on a
machine with several GPUs, one per GPU): 2 gloo processes on CPU here. The model gets its own cache entry, is
loaded back from the run folder, and a second call loads it instead of training again; a killed entry's torn
checkpoint is set aside before the processes start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sphereface_lib.data.sources import open_packed
from sphereface_lib.training import TrainingDiverged
from sphereface_lib.training.cache import PROCESSES_ENV, TORCHRUN_LOG, cache_key, train_cached, training_processes
from sphereface_lib.training.config import ConfigError
from test_training import same_state
from test_training_data import make_patterns, tiny_config


@pytest.mark.slow
def test_the_cache_trains_through_torchrun_in_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_patterns(tmp_path / "patterns", identities=4, per_identity=8)
    config = tiny_config(tmp_path / "patterns", tmp_path / "unused", optim__iterations=6, optim__lr_steps="[4]",
                         run__log_every=2, run__checkpoint_every=6)
    monkeypatch.setenv(PROCESSES_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = train_cached(config, tmp_path / "cache")
    entry = result.checkpoint.parent
    assert "(2 processes)" in (entry / TORCHRUN_LOG).read_text()
    assert result.iteration == 6 and [r["iteration"] for r in result.metrics] == [2, 4, 6]
    manifest = open_packed(str(data.root)).manifest
    assert entry.name == cache_key(config, manifest, 2) != cache_key(config, manifest, 1)
    again = train_cached(config, tmp_path / "cache")  # loaded from the entry, not trained again
    assert same_state(result.backbone.state_dict(), again.backbone.state_dict())

    (entry / "done.json").unlink()  # a killed entry with an unreadable checkpoint: set aside and trained again
    (entry / "checkpoint.pt").write_bytes(b"torn")
    retrained = train_cached(config, tmp_path / "cache")
    assert (tmp_path / "cache" / f"{entry.name}.corrupt-1" / "checkpoint.pt").read_bytes() == b"torn"
    assert retrained.iteration == 6 and (entry / "done.json").is_file()

    diverging = tiny_config(tmp_path / "patterns", tmp_path / "unused", optim__iterations=6, optim__lr=1e6)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train_cached(diverging, tmp_path / "cache")


def test_the_process_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(tmp_path / "data", tmp_path / "run")  # batch 16
    cpu = torch.device("cpu")
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    assert training_processes(config, cpu) == 1
    monkeypatch.setenv(PROCESSES_ENV, "4")
    assert training_processes(config, cpu) == 4
    monkeypatch.setenv(PROCESSES_ENV, "3")
    with pytest.raises(ConfigError, match=f"batch_size 16 does not split between 3 .*{PROCESSES_ENV}"):
        training_processes(config, cpu)
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv(PROCESSES_ENV, bad)
        with pytest.raises(ConfigError, match=f"{PROCESSES_ENV}='{bad}'"):
            training_processes(config, cpu)
