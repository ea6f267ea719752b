"""Calibrate the synthetic dataset's difficulty on its LFW-like protocol (issue 5, docs/synthetic.md).

Two measurements only, A-Softmax is never looked at: (1) raw-pixel cosine verification accuracy (target at
most 75%), (2) the original softmax (Eq. 1) with SphereFace-20 trained at the CPU-sized default (target 80-97%).
Both use the LFW 10-fold protocol of ``sphereface_lib.evaluation`` (best threshold on 9 folds, tested on 1).
Prints one line per measurement; ``--json`` also writes them atomically.

Usage: python scripts/calibrate_synthetic.py --cache cache/synthetic --difficulty 1.0 [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sphereface_lib.backbones import sphereface
from sphereface_lib.data.packed import atomic_write_text
from sphereface_lib.data.protocols import pair_rows, read_lfw_pairs
from sphereface_lib.data.synthetic import synthetic_benchmark
from sphereface_lib.evaluation.features import extract_features, images_to_tensor
from sphereface_lib.evaluation.verification import k_fold_accuracy
from sphereface_lib.losses import Softmax


def raw_pixel_accuracy(lfw, pairs) -> float:
    """LFW 10-fold accuracy of the cosine between raw pixel vectors (flip-concatenated like deep features)."""
    a, b = pair_rows(lfw, pairs)
    x = np.asarray(lfw.images, np.float32)
    feats = np.concatenate([x, x[:, :, ::-1]], axis=2).reshape(len(x), -1) - 127.5
    return k_fold_accuracy(feats[a], feats[b], pairs.is_same, pairs.folds).mean


def softmax_accuracy(train, lfw, pairs, epochs: int, width: float, device: str, seed: int) -> tuple[float, float]:
    """Train SphereFace-20 + softmax (SGD 0.9, wd 5e-4, lr 0.1 stepped at 50%/75%), flip-concat LFW 10-fold."""
    torch.manual_seed(seed)
    h, w, c = train.manifest.image_shape
    net = sphereface(20, in_channels=c, input_size=(h, w), width=width, feat_dim=128).to(device)
    head = Softmax(128, train.num_identities).to(device)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x_all = images_to_tensor(np.asarray(train.images)).to(device)
    y_all = torch.from_numpy(train.labels).to(device)
    steps_per_epoch = (len(x_all) + 127) // 128
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(total * 0.5), int(total * 0.75)], 0.1)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=g).split(128):
            idx = idx.to(device)
            x, y = x_all[idx], y_all[idx]
            flip = (torch.rand(len(x), generator=g) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = torch.nn.functional.cross_entropy(head(net(x), y), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    net.eval()
    a, b = pair_rows(lfw, pairs)
    feats = extract_features(net, lfw.images, flip="concat", device=device, progress=False)
    return k_fold_accuracy(feats[a], feats[b], pairs.is_same, pairs.folds).mean, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="cache/synthetic")
    ap.add_argument("--size", default="default")
    ap.add_argument("--difficulty", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    over = {} if args.difficulty is None else {"difficulty": args.difficulty}
    t = time.perf_counter()
    bench = synthetic_benchmark(args.cache, args.size, **over)
    print(f"dataset {bench.root} ready in {time.perf_counter() - t:.1f}s: {bench.train}")
    pairs = read_lfw_pairs(bench.lfw_pairs)
    out = {"difficulty": bench.config.difficulty, "size": args.size,
           "raw_pixel_cosine_lfw": raw_pixel_accuracy(bench.lfw, pairs)}
    print(f"difficulty {bench.config.difficulty}: raw-pixel cosine LFW 10-fold accuracy "
          f"{out['raw_pixel_cosine_lfw']:.4f} (target <= 0.75)")
    if not args.skip_train:
        acc, sec = softmax_accuracy(bench.train, bench.lfw, pairs, args.epochs, args.width, args.device, args.seed)
        out.update(softmax_sphereface20_lfw=acc, train_seconds=sec, epochs=args.epochs, width=args.width,
                   device=args.device)
        print(f"difficulty {bench.config.difficulty}: softmax SphereFace-20 (width {args.width}, {args.epochs} "
              f"epochs, {sec:.0f}s on {args.device}) LFW 10-fold accuracy {acc:.4f} (target 0.80-0.97)")
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
