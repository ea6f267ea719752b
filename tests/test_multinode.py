"""Two machines simulated on one: two ``torchrun --nnodes 2`` launches (one process each, gloo on CPU), each
"node" with its own run folder and no shared filesystem. A run stopped after a checkpoint resumes with node 1's
folder holding a garbage checkpoint (never read) and ends with the weights, optimizer state and metrics of an
uninterrupted 2-node run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_training import same_state
from test_training_data import make_patterns, tiny_config

PROJECT = Path(__file__).resolve().parents[1]
STOP_AT, ITERATIONS = 6, 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(config: Path, out0: Path, out1: Path, iterations: int) -> None:
    """Train ``config`` for ``iterations`` on 2 "nodes" (node 0 into ``out0``, node 1 into ``out1``)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
         "-m", "sphereface_lib.train", "--config", str(config), f"run.out_dir={out}",
         f"optim.iterations={iterations}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node, out in enumerate((out0, out1))]
    deadline = time.monotonic() + 120
    logs = []
    for p in procs:  # on a timeout both nodes are killed and both logs kept: one node's failure hangs the other
        try:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs.append(p.communicate()[0] + "\n[killed after 120 s]")
    report = "\n".join(f"--- node {node} exited {p.returncode}:\n{log[-3000:]}"
                       for node, (p, log) in enumerate(zip(procs, logs)))
    assert all(p.returncode == 0 for p in procs), report


def _rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "img_per_s"} for line in lines]


@pytest.mark.slow
def test_a_two_node_run_resumes_whatever_node_1s_folder_holds(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "data").root
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(data, tmp_path / "unused", run__checkpoint_every=3, run__log_every=3).to_yaml())

    two_nodes(config, tmp_path / "reference0", tmp_path / "reference1", ITERATIONS)
    two_nodes(config, tmp_path / "run0", tmp_path / "run1_first", STOP_AT)  # stopped after the checkpoint of 6
    stopped = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=True)
    assert stopped["iteration"] == STOP_AT
    stale = tmp_path / "run1_stale"  # node 1's folder on a machine that never saw this run: a garbage checkpoint
    stale.mkdir()
    (stale / "checkpoint.pt").write_bytes(b"not a checkpoint")  # reading it would be a RunFileError
    two_nodes(config, tmp_path / "run0", stale, ITERATIONS)

    assert (stale / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    ref = torch.load(tmp_path / "reference0" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "run0" / "checkpoint.pt", weights_only=True)
    assert resumed["iteration"] == ref["iteration"] == ITERATIONS
    for part in ("backbone", "head"):
        assert same_state(ref[part], resumed[part]), f"{part} differs after resume"
        assert not same_state(stopped[part], resumed[part])  # the resumed run trained on
    for key, state in ref["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][key]["momentum_buffer"])
    assert _rows(tmp_path / "run0") == _rows(tmp_path / "reference0")
    assert [r["iteration"] for r in _rows(tmp_path / "run0")] == [3, 6, 9, 12]
