"""Normalized heads' time and memory: our A-Softmax and CosFace against a plain "normalize both, then linear"
reference written here (issue 18.2), forward + backward at batch 256, 512-d features, 1k / 10k / 85,742 classes;
and A-Softmax's official (Caffe) gradient against its exact autograd gradient (issue 24.1).

Each measurement runs in a fresh subprocess (contenders alternate, ``--rounds`` times): after the head, the
features and the labels exist, the peak resident memory is reset (``/proc/self/clear_refs`` 5) and the
forward + backward pass runs; peak extra memory = VmHWM - VmRSS before (torch's CPU allocations are invisible
to tracemalloc; the kernel's high-water mark sees every page). Time = median of ``--iters`` passes after one
warm-up. Ratios are ours / reference (below 1: ours is faster or smaller); the last line per class count is
A-Softmax gradient="official" / gradient="exact". Linux only (procfs).

    python benchmarks/bench_heads.py                    # 1k 10k 85742 classes, 2 rounds
    python benchmarks/bench_heads.py --classes 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout this file is in

CONTENDERS = ("asoftmax", "asoftmax_exact", "cosface", "reference")
HEAD_ARGS = {"asoftmax": ("asoftmax", {"m": 4}), "asoftmax_exact": ("asoftmax", {"m": 4, "gradient": "exact"}),
             "cosface": ("cosface", {})}
BATCH, FEAT = 256, 512


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(name: str, classes: int, iters: int) -> dict:
    """One contender in this (fresh) process: median seconds and peak extra MiB of forward + backward."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    features = torch.randn(BATCH, FEAT, requires_grad=True)
    labels = torch.randint(0, classes, (BATCH,))
    if name == "reference":
        weight = torch.nn.Parameter(torch.randn(classes, FEAT) * 0.01)
        s, m = 30.0, 0.35

        def loss_fn() -> torch.Tensor:
            cos = F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1))
            logits = s * (cos - m * F.one_hot(labels, classes))
            return F.cross_entropy(logits, labels)
        params = [weight]
    else:
        from sphereface_lib.losses import create_head

        head_name, kwargs = HEAD_ARGS[name]
        head = create_head(head_name, FEAT, classes, **kwargs)
        head.update(20000)

        def loss_fn() -> torch.Tensor:
            return head.compute_loss(features, labels)[0]
        params = list(head.parameters())

    def run() -> None:
        for p in (*params, features):
            p.grad = None
        loss_fn().backward()

    run()  # warm-up
    for p in (*params, features):
        p.grad = None
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        for p in (*params, features):
            p.grad = None
    return {"name": name, "classes": classes, "seconds": statistics.median(times),
            "extra_mib": (_status_kib("VmHWM") - before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[1000, 10000, 85742])
    p.add_argument("--rounds", type=int, default=2, help="alternations of the contenders (default 2)")
    p.add_argument("--iters", type=int, default=3, help="timed passes per subprocess (default 3)")
    p.add_argument("--child", nargs=2, metavar=("NAME", "CLASSES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.iters)))
        return
    for classes in args.classes:
        got: dict[str, list[dict]] = {n: [] for n in CONTENDERS}
        for _ in range(args.rounds):
            for name in CONTENDERS:
                out = subprocess.run([sys.executable, __file__, "--child", name, str(classes), "--iters",
                                      str(args.iters)], capture_output=True, text=True, check=True, cwd=ROOT)
                got[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        ref = got["reference"]
        for name in ("asoftmax", "asoftmax_exact", "cosface"):
            t = [r["seconds"] / q["seconds"] for r, q in zip(got[name], ref)]
            mem = [r["extra_mib"] / q["extra_mib"] for r, q in zip(got[name], ref)]
            print(f"{classes:>6} classes, batch {BATCH}: {name:14s} {statistics.median(r['seconds'] for r in got[name]):.3f} s, "
                  f"{statistics.median(r['extra_mib'] for r in got[name]):6.0f} MiB extra | reference "
                  f"{statistics.median(q['seconds'] for q in ref):.3f} s, {statistics.median(q['extra_mib'] for q in ref):6.0f} "
                  f"MiB | time ratio {min(t):.2f}-{max(t):.2f}, memory ratio {min(mem):.2f}-{max(mem):.2f}", flush=True)
        t = [o["seconds"] / e["seconds"] for o, e in zip(got["asoftmax"], got["asoftmax_exact"])]
        mem = [o["extra_mib"] / e["extra_mib"] for o, e in zip(got["asoftmax"], got["asoftmax_exact"])]
        print(f"{classes:>6} classes, batch {BATCH}: asoftmax gradient official / exact: time ratio "
              f"{min(t):.2f}-{max(t):.2f}, memory ratio {min(mem):.2f}-{max(mem):.2f}", flush=True)


if __name__ == "__main__":
    main()
