"""Synthetic face generator throughput at 112x96 against the 2,000 images/s target (issue 5).

Renders the same images (random streams included, as :func:`render_images` does) once in this process
(the reference run) and once on the process pool of ``--workers`` spawned workers, checks that both give the
same bytes, and prints for each: wall-clock images/s and its ratio to the 2,000 images/s target, and CPU
milliseconds per image (this process plus the pool's workers, from the OS's CPU-time counters, so a machine
shared with other jobs inflates wall time but much less CPU time). The last line is the pool's speed-up over
the reference run, measured in this process.

Usage: python benchmarks/bench_synthetic.py [--images 4096] [--workers N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this file is in

from sphereface_lib.data.synthetic import render_images  # noqa: E402

TARGET = 2000.0


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time (user + system) of this process and its live children (the pool's workers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _measure(ids: np.ndarray, idx: np.ndarray, workers: int, repeats: int) -> tuple[float, float, np.ndarray]:
    """Best wall images/s and CPU ms/image over ``repeats`` runs, and the images of the last run."""
    proc = psutil.Process()
    best_rate, best_cpu, img = 0.0, float("inf"), None
    for _ in range(repeats):
        c0, t0 = _cpu_seconds(proc), time.perf_counter()
        img = render_images(0, ids, idx, workers=workers)
        t1, c1 = time.perf_counter(), _cpu_seconds(proc)
        best_rate = max(best_rate, len(ids) / (t1 - t0))
        best_cpu = min(best_cpu, 1e3 * (c1 - c0) / len(ids))
    return best_rate, best_cpu, img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4096, help="images per run (>= 1024 to use the pool)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pool processes (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per path; the best is reported")
    args = ap.parse_args()
    if args.images < 1024:
        ap.error(f"--images={args.images}: use at least 1024 (smaller batches are never sent to the pool)")
    ids = np.arange(args.images) % 500
    idx = np.arange(args.images)
    render_images(0, ids[:1024], idx[:1024], workers=args.workers)  # start the pool, warm both paths
    render_images(0, ids[:64], idx[:64], workers=1)
    load = os.getloadavg()[0]
    ref_rate, ref_cpu, ref = _measure(ids, idx, 1, args.repeats)
    par_rate, par_cpu, par = _measure(ids, idx, args.workers, args.repeats)
    same = np.array_equal(ref, par)
    print(f"{args.images} images at 112x96 (streams + render), best of {args.repeats}, "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"reference, 1 process : {ref_rate:7.0f} images/s  ratio to target {ref_rate / TARGET:.2f}  "
          f"CPU {ref_cpu:.3f} ms/image")
    print(f"pool, {args.workers} workers      : {par_rate:7.0f} images/s  ratio to target {par_rate / TARGET:.2f}  "
          f"CPU {par_cpu:.3f} ms/image (this process + workers)")
    print(f"pool / reference     : {par_rate / ref_rate:.2f}x wall, {ref_cpu / par_cpu:.2f}x CPU per image; "
          f"images identical: {same}")
    if not same:
        raise SystemExit("the pool's images differ from the single-process images")


if __name__ == "__main__":
    main()
