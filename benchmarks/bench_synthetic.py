"""Synthetic face generator throughput at 112x96 against the 2,000 images/s target (issue 5).

Prints images per second for the renderer alone and with the per-image random streams, and their ratio to
the target, all measured in this process. Usage: python benchmarks/bench_synthetic.py [--images 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sphereface_lib.data.synthetic import identity_latent, image_nuisance, render

TARGET = 2000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads inside render")
    args = ap.parse_args()
    ids = np.arange(args.images) % 500
    render(np.stack([identity_latent(0, 1)] * 64), np.stack([image_nuisance(0, 1, i) for i in range(64)]))
    best_full = best_render = 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        z = np.stack([identity_latent(0, int(i)) for i in ids])
        v = np.stack([image_nuisance(0, int(i), j) for j, i in enumerate(ids)])
        t1 = time.perf_counter()
        render(z, v, threads_per_render=args.threads)
        t2 = time.perf_counter()
        best_full = max(best_full, args.images / (t2 - t0))
        best_render = max(best_render, args.images / (t2 - t1))
    print(f"render only        : {best_render:8.0f} images/s at 112x96  ratio to target {best_render / TARGET:.2f}")
    print(f"streams + render   : {best_full:8.0f} images/s at 112x96  ratio to target {best_full / TARGET:.2f}")


if __name__ == "__main__":
    main()
