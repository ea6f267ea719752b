"""Two x86 machines simulated on one: the runner's dispatch pins give the same training numbers on both.

A machine is simulated by the dispatch its libraries would pick: "AVX-512" (what torch, MKL and oneDNN choose
on an AVX-512 CPU, unless told otherwise) and "AVX2-only" (the three controls set to AVX2, as they would
behave on an AVX2 CPU). The same tiny smoke notebook trains 20 iterations of a SphereFace-4 + A-Softmax and
records a digest of the weights as its claim. Without the pins the two machines disagree in the last bits
(the control); with the runner's pins they must agree exactly. Not covered, and not identical in general: a
GPU, another architecture (ARM), a CPU without AVX2, another thread count or other library versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sphereface_lib.companion import reproduce
from sphereface_lib.companion.provenance import DISPATCH_PINS

STEM = "01_train"
TRAIN = """\
import hashlib
import torch
import torch.nn.functional as F
from sphereface_lib import create_backbone, create_head
torch.manual_seed(seed)
model = create_backbone("sphereface4", input_size=(28, 24), width=0.125, feat_dim=16, in_channels=1)
head = create_head("asoftmax", 16, 10, m=4)
opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
x, y = torch.randn(32, 1, 28, 24), torch.randint(0, 10, (32,))
for it in range(iterations):
    head.update(it)
    opt.zero_grad()
    loss = F.cross_entropy(head(model(x), y), y)
    loss.backward()
    opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
"""
RECORD = """\
from sphereface_lib.companion.claims import Claim, record_claims
record_claims([Claim("weights after training", "-", "", digest, "reproduced", f"loss {loss.item():.10f}", "sha256")])
"""
#: what each simulated machine's libraries would pick by themselves
MACHINES: dict[str, dict[str, str]] = {
    "AVX-512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "AVX2-only": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def _unpinned_digest(machine: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH_PINS} | machine
    code = "seed, iterations = 0, 20\n" + TRAIN + "print(digest)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_pinned_runs_agree_across_simulated_machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs an AVX-512 CPU to simulate the AVX-512 machine")
    unpinned = {name: _unpinned_digest(env) for name, env in MACHINES.items()}
    assert len(set(unpinned.values())) == 2, f"the dispatch no longer changes the numbers: {unpinned}"

    layout = reproduce.Layout(tmp_path / "notebooks", tmp_path / "profiles", tmp_path / "reports", tmp_path / "README.md")
    nb = new_notebook(cells=[new_code_cell("seed: int = 0\niterations: int = 20", metadata={"tags": ["parameters"]}),
                             new_code_cell(TRAIN), new_code_cell(RECORD)])
    nb.metadata["kernelspec"] = {"name": reproduce.KERNEL_NAME, "display_name": "Python (sphereface)", "language": "python"}
    layout.notebooks_dir.mkdir(parents=True)
    nbformat.write(nb, str(layout.notebook(STEM)))
    layout.profile_file("smoke", STEM).parent.mkdir(parents=True)
    layout.profile_file("smoke", STEM).write_text("")
    pinned = {}
    for name, env in MACHINES.items():
        for key in DISPATCH_PINS:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        run = reproduce.reproduce("smoke", layout=layout, stems=[STEM], force=True, readme=False, log=lambda _: None)[0]
        assert run.status == "executed", run.error
        assert run.provenance["dispatch_pins"] == DISPATCH_PINS and run.provenance["torch_cpu_capability"] == "AVX2"
        pinned[name] = run.claims
    assert pinned["AVX-512"] == pinned["AVX2-only"], pinned
    assert pinned["AVX2-only"][0].ours == unpinned["AVX2-only"]  # the pins are what an AVX2 machine does anyway
