"""What pinning the CPU dispatch costs: the runner's pins (``provenance.DISPATCH_PINS``) against none, and the
pins with oneDNN's convolutions turned off.

Each setting runs in its own subprocess (the variables are read when torch, MKL and oneDNN load), the
settings interleaved over ``--rounds`` rounds so that a load change on the machine hits all of them. On a
shared machine wall time says more about the neighbours than about the kernels, so each child runs on
``--threads`` threads (default 1) and measures CPU time (``time.process_time``), the minimum over 5 timed
blocks; the median over rounds is printed per setting, then the ratio to unpinned (> 1: slower). Workloads:

* ``train``: training steps of SphereFace-20, width 0.125, 56x48 inputs, A-Softmax (m=4) on 100 classes,
  batch 64, SGD (forward, backward, update; the oneDNN convolutions and MKL GEMMs of a smoke notebook);
* ``gemm``: a 1024 x 1024 float32 matrix product (MKL's sgemm).

    python benchmarks/bench_dispatch.py            # 3 rounds
    python benchmarks/bench_dispatch.py --rounds 1 # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sphereface_lib.companion.provenance import DISPATCH_PINS  # noqa: E402

#: each setting: the environment variables set (on top of a copy of ours with every pin removed)
SETTINGS: dict[str, dict[str, str]] = {
    "unpinned": {},
    "aten only": {"ATEN_CPU_CAPABILITY": DISPATCH_PINS["ATEN_CPU_CAPABILITY"]},
    "onednn only": {"ONEDNN_MAX_CPU_ISA": DISPATCH_PINS["ONEDNN_MAX_CPU_ISA"]},
    "mkl only": {"MKL_CBWR": DISPATCH_PINS["MKL_CBWR"]},
    "pinned": dict(DISPATCH_PINS),
    # oneDNN's convolutions pick their blocking from cache sizes and core counts, so trained models differ across
    # CPU vendors even with every pin (README): what turning them off would cost (torch.backends.mkldnn)
    "pinned, oneDNN off": {**DISPATCH_PINS, "BENCH_ONEDNN_OFF": "1"},
}


def _best_of(fn, count: int, blocks: int = 5) -> float:
    """The smallest CPU time per call of ``fn`` over ``blocks`` blocks of ``count`` calls."""
    best = float("inf")
    for _ in range(blocks):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, (time.process_time() - start) / count)
    return best


def child(steps: int, gemms: int, threads: int) -> dict[str, float]:
    """CPU seconds per training step and per GEMM in this process (its environment as given)."""
    import torch
    import torch.nn.functional as F

    from sphereface_lib import create_backbone, create_head

    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = os.environ.get("BENCH_ONEDNN_OFF") != "1"
    torch.manual_seed(0)
    model = create_backbone("sphereface20", input_size=(56, 48), width=0.125)
    head = create_head("asoftmax", 512, 100, m=4)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 56, 48), torch.randint(0, 100, (64,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(model(x), y), y)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    train_s = _best_of(step, steps)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    gemm_s = _best_of(lambda: a @ b, gemms)
    return {"train": train_s, "gemm": gemm_s, "capability": torch.backends.cpu.get_cpu_capability()}


def run_setting(extra: dict[str, str], steps: int, gemms: int, threads: int) -> dict[str, float]:
    """:func:`child` in a fresh interpreter whose environment has exactly ``extra`` among the pins."""
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH_PINS and k != "BENCH_ONEDNN_OFF"}
    env.update(extra)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--steps", str(steps), "--gemms", str(gemms),
         "--threads", str(threads)],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    parser.add_argument("--gemms", type=int, default=10, help="1024-d GEMMs per timed block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.steps, args.gemms, args.threads)))
        return
    times: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, extra in SETTINGS.items():
            times[name].append(run_setting(extra, args.steps, args.gemms, args.threads))
    ref = {w: statistics.median(t[w] for t in times["unpinned"]) for w in ("train", "gemm")}
    print(f"pins: {' '.join(f'{k}={v}' for k, v in DISPATCH_PINS.items())}; {args.threads} thread(s), "
          f"CPU time, median of {args.rounds} rounds")
    print(f"{'setting':<18} {'ATen':<8} {'train step':>11} {'ratio':>6} {'1024 GEMM':>10} {'ratio':>6}")
    for name, runs in times.items():
        med = {w: statistics.median(t[w] for t in runs) for w in ("train", "gemm")}
        print(f"{name:<18} {runs[0]['capability']:<8} {med['train'] * 1e3:8.1f} ms {med['train'] / ref['train']:6.2f} "
              f"{med['gemm'] * 1e3:7.2f} ms {med['gemm'] / ref['gemm']:6.2f}")


if __name__ == "__main__":
    main()
