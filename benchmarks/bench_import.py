"""What ``import sphereface_lib`` costs, against ``import torch`` measured the same way in the same run.

Each statement runs in a fresh interpreter (``python -X importtime`` would measure one process only), the
statements interleaved over ``--rounds`` rounds so that a load change on the machine hits all of them; the
best wall time of the rounds and the peak RSS (the child's own ``ru_maxrss``) are printed, then the ratio
to ``import torch``. ``--root`` measures another checkout (for example an older commit's ``git archive``).

    python benchmarks/bench_import.py               # 5 rounds
    python benchmarks/bench_import.py --root /tmp/old_checkout
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

STATEMENTS = {
    "import torch": "import torch",
    "import sphereface_lib": "import sphereface_lib",
    "+ a loss and a backbone": "import sphereface_lib as s; s.create_head; s.create_backbone",
    "+ LFW protocol": "import sphereface_lib as s; s.k_fold_accuracy; s.read_lfw_pairs",
}


def run_once(code: str, root: Path) -> float:
    """Wall seconds of ``python -c code`` with ``root`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("EAGER_IMPORT", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    best = {name: float("inf") for name in STATEMENTS}
    rss: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, code in STATEMENTS.items():
            best[name] = min(best[name], run_once(code, args.root))
    for name, code in STATEMENTS.items():  # the child's own peak RSS
        rss[name] = float(subprocess.run(
            [sys.executable, "-c", f"{code}; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(args.root)},
            cwd=args.root).stdout) / 1024
    ref = best["import torch"]
    print(f"{args.root} (best of {args.rounds} rounds)")
    for name in STATEMENTS:
        print(f"{name:<26} {best[name]:6.2f} s  x{best[name] / ref:4.2f} of import torch   RSS {rss[name]:6.0f} MiB")


if __name__ == "__main__":
    main()
