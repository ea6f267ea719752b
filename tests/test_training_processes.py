"""The trainer across processes: a run SIGKILLed after its first checkpoint resumes to the same weights
bit for bit, and a two-process DDP run (gloo, CPU) gives the model one process gives with the same
global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sphereface_lib.training import TrainConfig, load_checkpoint, train
from sphereface_lib.training.trainer import build_model
from test_training import same_state
from test_training_data import make_patterns, tiny_config

PROJECT = Path(__file__).resolve().parents[1]


def _write(config: TrainConfig, path: Path) -> Path:
    path.write_text(config.to_yaml())
    return path


def _cli(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "sphereface_lib.train", "--config", str(config_path)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "data").root
    iterations = 150

    def config(name: str) -> TrainConfig:
        return tiny_config(data, tmp_path / name, optim__iterations=iterations, optim__lr_steps="[60, 120]",
                           run__checkpoint_every=10, run__log_every=10)

    subprocess.run(_cli(_write(config("reference"), tmp_path / "reference.yaml")), env=_env(), check=True,
                   capture_output=True, timeout=300)

    killed_yaml = _write(config("killed"), tmp_path / "killed.yaml")
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    proc = subprocess.Popen(_cli(killed_yaml), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted_at = _checkpoint(tmp_path / "killed")["iteration"]
    assert 0 < interrupted_at < iterations

    subprocess.run(_cli(killed_yaml), env=_env(), check=True, capture_output=True, timeout=300)
    ref, resumed = _checkpoint(tmp_path / "reference"), _checkpoint(tmp_path / "killed")
    assert resumed["iteration"] == ref["iteration"] == iterations
    for part in ("backbone", "head"):
        assert same_state(ref[part], resumed[part]), f"{part} differs after resume"
    for key, state in ref["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][key]["momentum_buffer"])

    def rows(name: str) -> list[dict]:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "img_per_s"} for line in lines]

    assert rows("killed") == rows("reference")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "data").root
    ddp = tiny_config(data, tmp_path / "ddp", optim__iterations=12, run__checkpoint_every=12, run__log_every=4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sphereface_lib.train", "--config", str(_write(ddp, tmp_path / "ddp.yaml"))]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    single = train(ddp.replace(f"run.out_dir={tmp_path / 'single'}"))
    two = load_checkpoint(tmp_path / "ddp")
    assert two.iteration == 12
    for a, b in ((single.backbone, two.backbone), (single.head, two.head)):
        torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-4, atol=1e-5)
    init_backbone, _ = build_model(ddp, (28, 24, 1), 10)  # training moved the weights: not a vacuous check
    assert not torch.allclose(init_backbone.fc.weight, two.backbone.fc.weight, atol=1e-3)
    assert [r["loss"] for r in two.metrics] == pytest.approx([r["loss"] for r in single.metrics], rel=1e-4)
