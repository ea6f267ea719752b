"""Our SphereFace-20 against an independent reference of the same network, side by side in one process.

The reference is written here from the paper's layer table (Table 2: four stride-2 3x3 convolutions of
64/128/256/512 channels with PReLU, 1/2/4/1 residual units x + PReLU(conv(PReLU(conv(x)))), a fully connected
512-d feature layer) as a plain ``nn.Sequential``, sharing no code with ``sphereface_lib.backbones``; both nets
feed the same head class (A-Softmax, m=4). Contenders alternate, every timing is the median of ``--iters``.

* ``train``: one SGD step (forward, A-Softmax loss, backward, update) at each batch size, precision
  (bf16 autocast or fp32) and mode (eager / ``torch.compile``); prints ours, reference, the ratio ours/reference
  (below 1: ours is faster) and the MFU of ours (FLOPs counted by ``FlopCounterMode``; peak from the GPU table
  or, on CPU, the fastest GEMM path measured in this process).
* ``inference``: the forward pass under ``inference_mode`` at batch 64, channels_last against NCHW, for
  width 1 and 0.125 (what ``extract_features`` runs), and ours against the reference.

    python benchmarks/bench_reference.py train --device cuda --batch 256 512 --amp bf16 fp32 --modes eager compiled
    python benchmarks/bench_reference.py train --device cpu --batch 32 --amp fp32 --modes eager
    python benchmarks/bench_reference.py inference --device cpu
    python benchmarks/bench_reference.py train --device cpu --smoke     # tiny, seconds: exercises the code
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this file is in
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import PEAK_BF16, measured_cpu_gemm_flops  # noqa: E402
from sphereface_lib.backbones import create_backbone  # noqa: E402
from sphereface_lib.losses import create_head  # noqa: E402

#: (channels, residual units) per stage of SphereFace-20, Table 2 of the paper
TABLE_SF20 = ((64, 1), (128, 2), (256, 4), (512, 1))


class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def reference_net(width: float, size: tuple[int, int], feat_dim: int = 512) -> nn.Sequential:
    """SphereFace-20 from the layer table, as one plain nn.Sequential (PyTorch default initialization)."""
    layers: list[nn.Module] = []
    cin, (h, w) = 3, size
    for channels, units in TABLE_SF20:
        c = max(1, round(channels * width))
        layers += [nn.Conv2d(cin, c, 3, 2, 1), nn.PReLU(c, init=0.25)]
        for _ in range(units):
            layers.append(Residual(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.PReLU(c, init=0.25),
                                                 nn.Conv2d(c, c, 3, 1, 1), nn.PReLU(c, init=0.25))))
        cin, h, w = c, (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * h * w, feat_dim))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def peak(device: torch.device, amp: str) -> tuple[float | None, str]:
    if device.type == "cpu":
        flops, path = measured_cpu_gemm_flops()
        return flops, f"fastest 2048^3 float32 GEMM path on this CPU: {path}"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            # dense fp32 is not tensor-core bf16: the table's bf16 peak is the bound stated for both
            return value, f"table: {key} dense bf16 (also the bound quoted for fp32 runs)"
    return None, f"unknown peak for {name!r}"


def make_step(net: nn.Module, head: nn.Module, amp: str, device: torch.device, compiled: bool):
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD([p for p in params if p.requires_grad], lr=1e-3, momentum=0.9)

    def forward_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            return head.compute_loss(net(x), y)[0]

    fwd = torch.compile(forward_loss) if compiled else forward_loss

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = fwd(x, y)
        loss.backward()
        opt.step()
        return loss

    return step, forward_loss


def bench_train(args: argparse.Namespace, device: torch.device) -> list[dict]:
    size = (56, 48) if args.smoke else (112, 96)
    width = 0.125 if args.smoke else 1.0
    rows = []
    for amp in args.amp:
        pk, pk_source = peak(device, amp)
        for batch in args.batch:
            for mode in args.modes:
                g = torch.Generator().manual_seed(0)
                x = torch.randn(batch, 3, *size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
                y = torch.randint(0, args.classes, (batch,), generator=g).to(device)
                steps, flops = {}, {}
                for name in ("ours", "reference"):
                    torch.manual_seed(0)
                    net = (create_backbone("sphereface20", width=width, input_size=size) if name == "ours"
                           else reference_net(width, size))
                    net = net.to(device).to(memory_format=torch.channels_last).train()
                    head = create_head("asoftmax", 512, args.classes, m=4).to(device)
                    head.update(20000)  # lambda at its floor, as in most of a run
                    step, forward_loss = make_step(net, head, amp, device, mode == "compiled")
                    with FlopCounterMode(display=False) as counter:
                        forward_loss(x, y).backward()
                    flops[name] = counter.get_total_flops()
                    for _ in range(args.warmup):
                        step(x, y)
                    steps[name] = step
                times: dict[str, list[float]] = {"ours": [], "reference": []}
                for _ in range(args.rounds):  # alternate the contenders
                    for name, step in steps.items():
                        times[name] += median_seconds(lambda: step(x, y), device, args.iters)
                t_ours, t_ref = (statistics.median(times[n]) for n in ("ours", "reference"))
                mfu = flops["ours"] / t_ours / pk if pk else None
                row = {"what": "train step", "device": str(device), "batch": batch, "amp": amp, "mode": mode,
                       "size": list(size), "width": width, "ours_s": round(t_ours, 5), "reference_s": round(t_ref, 5),
                       "ratio": round(t_ours / t_ref, 3), "ours_img_s": round(batch / t_ours, 1),
                       "reference_img_s": round(batch / t_ref, 1), "mfu_ours": round(mfu, 4) if mfu else None,
                       "peak_source": pk_source, "flops_equal": flops["ours"] == flops["reference"]}
                print(f"train {device} batch {batch} {amp} {mode}: ours {1000 * t_ours:.1f} ms "
                      f"({row['ours_img_s']} img/s) | reference {1000 * t_ref:.1f} ms ({row['reference_img_s']} "
                      f"img/s) | ratio ours/reference {row['ratio']} | MFU ours {row['mfu_ours']} ({pk_source})",
                      flush=True)
                rows.append(row)
    return rows


def bench_inference(args: argparse.Namespace, device: torch.device) -> list[dict]:
    size = (56, 48) if args.smoke else (112, 96)
    batch = 4 if args.smoke else 64
    rows = []
    for width in ((0.125,) if args.smoke else (1.0, 0.125)):
        x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
        nets = {"ours": create_backbone("sphereface20", width=width, input_size=size).to(device).eval(),
                "reference": reference_net(width, size).to(device).eval()}
        timings: dict[str, list[float]] = {f"{n} {f}": [] for n in nets for f in ("NCHW", "channels_last")}
        xcl = x.contiguous(memory_format=torch.channels_last)
        for _ in range(args.rounds):  # alternate the contenders and the formats
            for name, net in nets.items():
                for fmt, inp, memory_format in (("NCHW", x, torch.contiguous_format),
                                                ("channels_last", xcl, torch.channels_last)):
                    net.to(memory_format=memory_format)  # outside inference_mode: weights stay trainable
                    with torch.inference_mode():
                        net(inp)
                        timings[f"{name} {fmt}"] += median_seconds(lambda: net(inp), device, args.iters)
        med = {k: statistics.median(v) for k, v in timings.items()}
        row = {"what": "inference", "device": str(device), "batch": batch, "width": width,
               **{f"{k} img/s": round(batch / v, 1) for k, v in med.items()},
               "channels_last/NCHW ours (time)": round(med["ours channels_last"] / med["ours NCHW"], 3),
               "ours/reference channels_last (time)": round(med["ours channels_last"] / med["reference channels_last"], 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("train", "inference"))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="train batch sizes (default 256 512 cuda, 32 cpu)")
    p.add_argument("--amp", choices=("bf16", "fp32"), nargs="+", default=None, help="default: bf16 fp32 cuda, fp32 cpu")
    p.add_argument("--modes", choices=("eager", "compiled"), nargs="+", default=None,
                   help="default: eager compiled (eager only with --smoke: a CPU compile takes minutes)")
    p.add_argument("--classes", type=int, default=10572, help="head classes (CASIA-WebFace: 10572)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per round (default 20 cuda, 3 cpu)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the contenders (default 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10 cuda, 1 cpu)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (width 0.125, 56x48, batch 4, 100 classes)")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.smoke:
        args.batch, args.classes, args.iters, args.rounds, args.warmup = [4], 100, 1, 1, 1
        args.amp = args.amp or ["fp32"]
        args.modes = args.modes or ["eager"]
    args.modes = args.modes or ["eager", "compiled"]
    args.batch = args.batch or ([256, 512] if cuda else [32])
    args.amp = args.amp or (["bf16", "fp32"] if cuda else ["fp32"])
    args.iters = args.iters or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    rows = bench_train(args, device) if args.what == "train" else bench_inference(args, device)
    print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
