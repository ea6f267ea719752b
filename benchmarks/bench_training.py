"""Training throughput of SphereFace-20 + A-Softmax (m=4) at 112x96 and its model FLOPs utilization.

Runs the trainer's own step (``TrainStep``: lambda update, learning rate, host-to-device copy, flip and
normalization on the device, autocast forward, backward, SGD) on uint8 batches, and the trainer's loader
(``BatchLoader`` on a packed dataset in a temporary folder) on the same batch size, in one process:

* images/s of the training step and of the loader, and their ratio (> 1: loading does not limit training);
* MFU = achieved FLOP/s / peak FLOP/s, with the FLOPs of one training step counted by
  ``torch.utils.flop_counter.FlopCounterMode`` and the peak from a table of known GPUs (dense bf16) or,
  on CPU, a large float32 GEMM measured in this process (stated as such in the output).

The last line printed is one JSON object. Examples::

    python benchmarks/bench_training.py --device cuda --compile      # one H100: goal >= 10,000 img/s
    python benchmarks/bench_training.py --device cpu                 # short: batch 32, 3 iterations
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sphereface_lib.data.packed import PackedDataset, PackedWriter  # noqa: E402
from sphereface_lib.training import TrainConfig  # noqa: E402
from sphereface_lib.training.trainer import (  # noqa: E402
    BatchLoader, TrainStep, augment, build_model, make_optimizer,
)

CASIA_IDENTITIES = 10572
#: dense bf16 peak FLOP/s by a substring of the device name (vendor data sheets, SXM parts)
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
#: iteration the step is measured at: lambda sits at its floor (5) from iteration ~1.7k of the 28k run
LAMBDA_FLOOR_ITERATION = 20000


def measured_cpu_gemm_flops(n: int = 2048, reps: int = 3) -> tuple[float, str]:
    """(FLOP/s, path) of the fastest n x n float32 matrix product on this CPU, best of ``reps`` per path:
    ``torch.mm`` (MKL) and ``torch._C._nn.mkldnn_linear`` (oneDNN), which differ by up to 2x on AMD CPUs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a_dnn = a.to_mkldnn()
    paths = {"torch.mm (MKL)": lambda: torch.mm(a, b),
             "mkldnn_linear (oneDNN)": lambda: torch._C._nn.mkldnn_linear(a_dnn, b).to_dense()}
    best: dict[str, float] = {}
    for name, fn in paths.items():
        fn()
        best[name] = float("inf")
    for _ in range(reps):  # paths alternate, so a busy moment of the machine hits both
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    name = min(best, key=best.get)
    return 2 * n**3 / best[name], name


def peak_flops(device: torch.device, amp: str) -> tuple[float | None, str]:
    """(peak FLOP/s, where the number comes from)."""
    if device.type == "cpu":
        flops, path = measured_cpu_gemm_flops()
        return flops, f"measured: 2048x2048 float32 GEMM on this CPU, this process, fastest path {path}"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name and amp == "bf16":
            return value, f"table: {key} dense bf16"
    return None, f"unknown peak for {name!r} with amp={amp}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--amp", choices=("bf16", "none"), default=None, help="default: bf16 on cuda, none on cpu")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default: 50 cuda, 3 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: 15 cuda, 1 cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 cuda, 32 cpu (scaled down)")
    p.add_argument("--classes", type=int, default=CASIA_IDENTITIES, help="identities (CASIA-WebFace: 10572)")
    args = p.parse_args()
    cuda = args.device == "cuda"
    amp = args.amp or ("bf16" if cuda else "none")
    iters = args.iters or (50 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (15 if cuda else 1)
    batch = args.batch_size or (256 if cuda else 32)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    config = TrainConfig().replace(
        f"optim.batch_size={batch}", f"run.amp={amp}", f"run.compile={str(args.compile).lower()}",
        f"run.device={args.device}", "run.channels_last=true")
    backbone, head = build_model(config, (112, 96, 3), args.classes)
    optimizer = make_optimizer(backbone, head, config)
    step = TrainStep(backbone, head, optimizer, config, device)
    step.net.train()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 112, 96, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, args.classes, (batch,), generator=g)
    flip = torch.rand(batch, generator=g) < 0.5
    if cuda:
        images, labels, flip = images.pin_memory(), labels.pin_memory(), flip.pin_memory()

    # FLOPs of one training step (forward + backward), counted on the eager model
    x = augment(images.to(device), None, channels_last=True)
    head.update(LAMBDA_FLOOR_ITERATION)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss, _ = step.net(x, labels.to(device))
        loss.backward()
    flops_per_step = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)

    t_compile = time.perf_counter()
    for i in range(warmup):
        loss, _, _ = step(LAMBDA_FLOOR_ITERATION + i, images, labels, flip)
    sync(device)
    warmup_s = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for i in range(iters):
        loss, _, _ = step(LAMBDA_FLOOR_ITERATION + warmup + i, images, labels, flip)
    sync(device)
    train_s = time.perf_counter() - t0
    train_ips = iters * batch / train_s
    final_loss = float(loss)

    # the loader on a packed dataset of random images, same batch size, same process
    with tempfile.TemporaryDirectory() as tmp:
        n = 4 * batch
        rng = np.random.default_rng(0)
        with PackedWriter(Path(tmp) / "bench", height=112, width=96, channels=3, source="bench") as w:
            w.add(rng.integers(0, 256, (n, 112, 96, 3), dtype=np.uint8), rng.integers(0, 100, n))
        dataset = PackedDataset(Path(tmp) / "bench")
        load_iters = max(iters, 8)
        loader = BatchLoader(dataset, config.replace("data.prefetch=2"), 0, load_iters, pin=cuda)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        loader_ips = load_iters * batch / (time.perf_counter() - t0)
        loader.close()

    peak, peak_source = peak_flops(device, amp)
    achieved = flops_per_step * iters / train_s
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "batch_size": batch, "amp": amp, "compile": args.compile, "iters": iters, "warmup_s": round(warmup_s, 2),
        "img_per_s": round(train_ips, 1), "step_ms": round(1000 * train_s / iters, 3),
        "gflops_per_image": round(flops_per_step / batch / 1e9, 3),
        "achieved_tflops": round(achieved / 1e12, 3),
        "peak_tflops": round(peak / 1e12, 3) if peak else None, "peak_source": peak_source,
        "mfu": round(achieved / peak, 4) if peak else None,
        "loader_img_per_s": round(loader_ips, 1), "loader_to_train_ratio": round(loader_ips / train_ips, 2),
        "final_loss": round(final_loss, 4),
    }
    print(f"SphereFace-20 + A-Softmax(m=4), {args.classes} identities, 112x96, batch {batch}, amp {amp}, "
          f"compile {args.compile}, device {result['device']}")
    print(f"train: {train_ips:.1f} img/s ({result['step_ms']} ms/step); "
          f"{result['gflops_per_image']} GFLOP/image/step; {result['achieved_tflops']} TFLOP/s achieved")
    print(f"MFU: {result['mfu']} of {result['peak_tflops']} TFLOP/s ({peak_source})")
    print(f"loader: {loader_ips:.1f} img/s = {result['loader_to_train_ratio']}x the training step")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
