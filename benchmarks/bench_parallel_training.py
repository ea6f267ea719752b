"""Two independent models of the default recipe, one after the other vs side by side, in one process.

* sequential: ``train()`` of each model in this process with 2 intra-op threads (how the cache trained before);
* pool: :func:`~sphereface_lib.training.parallel.train_missing` with 2 spawned workers of 1 thread each (how the
  cache trains a table's rows x seeds now), worker start-up included.

The models are the default recipe's rows (``experiments.Recipe``: SphereFace-4, width 0.25, 64-d; softmax and
A-Softmax m=4, seed 0) on the default synthetic benchmark, cut to ``--iterations``. Every model trains into a
temporary folder (the model cache is not touched). The load average is printed before and after: on a shared
machine the ratio is only as good as the quiet it ran in. The last line printed is one JSON object. Example::

    python benchmarks/bench_parallel_training.py --iterations 1000 --width 0.25
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sphereface_lib.companion import experiments as E  # noqa: E402
from sphereface_lib.training import train, train_missing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--rows", nargs="+", default=["softmax", "asoftmax_m4"])
    parser.add_argument("--cache-dir", default="cache", help="where the synthetic benchmark is (generated once)")
    args = parser.parse_args()

    bench = E.open_benchmark(None, args.cache_dir, ("train",), "default")
    recipe = E.Recipe(width=args.width, iterations=args.iterations)
    configs = [E.train_config(bench, row, recipe, 0) for row in args.rows]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(2)
        t = time.perf_counter()
        for i, config in enumerate(configs):
            train(dataclasses.replace(config, run=dataclasses.replace(config.run, out_dir=f"{tmp}/seq{i}")))
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        trained = train_missing(configs, Path(tmp) / "pool", workers=2)
        pooled = time.perf_counter() - t
    assert trained == len(configs), trained
    result = {"models": len(configs), "iterations": args.iterations, "width": args.width,
              "sequential_2_threads_s": round(sequential, 2), "pool_2x1_thread_s": round(pooled, 2),
              "speedup": round(sequential / pooled, 3), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    print(f"{len(configs)} models x {args.iterations} iterations, width {args.width}: one after the other with 2 "
          f"threads {sequential:.1f} s, side by side with 1 thread each {pooled:.1f} s (worker start included): "
          f"{sequential / pooled:.2f}x; load average before {load_before[0]:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
