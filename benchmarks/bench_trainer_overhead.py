"""Where a training run of the default recipe spends its time: start-up, the trainer's loop, the bare step.

For one model of the default recipe (``experiments.Recipe``: SphereFace-10, 64-d, A-Softmax m=4 on the default
synthetic benchmark) at each ``--widths``, in one process with ``--threads`` intra-op threads:

* ``train()`` of ``--iterations`` into a temporary folder: wall time, and the loop's own time per iteration from
  the metrics log's ``img_per_s`` (its first window, which holds the first iteration's warm-up, left out);
* the bare step: the trainer's ``TrainStep`` on one fixed batch, ``--iterations`` times after 3 warm-up steps
  (no loader, no loss bookkeeping, no metrics rows, no checkpoint).

overhead = loop time per iteration / bare step time (1.0: the loop adds nothing); start-up = wall time - the time
of all the loop's windows (imports, model and optimizer creation, the loader, the checkpoint).
The last line printed is one JSON object.
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
from sphereface_lib.training import train  # noqa: E402
from sphereface_lib.training.trainer import BatchLoader, TrainStep, build_model, make_optimizer  # noqa: E402


def bare_step_s(config, bench, iterations: int) -> float:
    """Seconds per bare ``TrainStep`` call on one fixed batch (3 warm-up steps first)."""
    backbone, head = build_model(config, bench.train.manifest.image_shape, bench.train.manifest.num_identities)
    step = TrainStep(backbone, head, make_optimizer(backbone, head, config), config, torch.device("cpu"))
    loader = BatchLoader(bench.train, config, 0, 1)
    images, labels, flip = loader.batch(0)
    loader.close()
    step.net.train()
    for i in range(3):
        step(i, images, labels, flip)
    t = time.perf_counter()
    for i in range(iterations):
        step(3 + i, images, labels, flip)
    return (time.perf_counter() - t) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 0.25])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default="cache", help="where the synthetic benchmark is (generated once)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = E.open_benchmark(None, args.cache_dir, ("train",), "default")
    load_before = os.getloadavg()
    out = []
    for width in args.widths:
        recipe = E.Recipe(width=width, iterations=args.iterations)
        config = E.train_config(bench, "asoftmax_m4", recipe, 0)
        with tempfile.TemporaryDirectory() as tmp:
            run = dataclasses.replace(config, run=dataclasses.replace(config.run, out_dir=tmp))
            t = time.perf_counter()
            result = train(run)
            wall = time.perf_counter() - t
        rows = result.metrics
        windows = list(zip([0] + [r["iteration"] for r in rows], rows))[1:]  # first window left out
        loop_s = sum((r["iteration"] - lo) * config.optim.batch_size / r["img_per_s"] for lo, r in windows)
        loop_iterations = sum(r["iteration"] - lo for lo, r in windows)
        first = rows[0]["iteration"] * config.optim.batch_size / rows[0]["img_per_s"]
        per_iteration = loop_s / loop_iterations
        bare = bare_step_s(config, bench, args.iterations)
        line = {"width": width, "wall_s": round(wall, 2), "startup_s": round(wall - loop_s - first, 2),
                "loop_ms_per_it": round(1e3 * per_iteration, 1), "bare_step_ms": round(1e3 * bare, 1),
                "overhead": round(per_iteration / bare, 3)}
        print(f"width {width}: train() {wall:.1f} s for {args.iterations} iterations; loop {1e3 * per_iteration:.1f} "
              f"ms/it, bare step {1e3 * bare:.1f} ms: overhead {per_iteration / bare:.2f}x; start-up "
              f"{line['startup_s']:.1f} s")
        out.append(line)
    print(json.dumps({"threads": args.threads, "iterations": args.iterations, "results": out,
                      "load_average_before": [round(x, 2) for x in load_before],
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
