"""The runnable examples under examples/ work as documented (README, "The library in a few lines")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "SPHEREFACE_PROJECT": str(PROJECT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_practitioner_trains_scores_and_exports_a_model_evaluate_accepts(tmp_path: Path) -> None:
    """Train, LFW 10-fold, export; the exported model.pt2 scores the same accuracy through `evaluate --model`."""
    out = tmp_path / "run"
    done = _run([str(PROJECT / "examples" / "practitioner.py"), "--out", str(out), "--iterations", "20",
                 "--cache", str(PROJECT / "cache" / "synthetic")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = re.search(r"LFW 10-fold on \S+: (\d+\.\d\d) \+- (\d+\.\d\d) %", done.stdout)
    assert printed, done.stdout
    assert (out / "model.pt2").is_file()
    command = re.search(r"python (-m sphereface_lib\.evaluate lfw .*)$", done.stdout, re.M)
    assert command, done.stdout
    scored = _run(command.group(1).split(), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads((out / "lfw_result.json").read_text())
    assert f"{100 * result['accuracy']:.2f}" == printed.group(1)
    assert f"{100 * result['std']:.2f}" == printed.group(2)
