"""The practitioner's path: train A-Softmax on a packed set, extract features, score LFW 10-fold, export a model.

    python examples/practitioner.py --out runs/practitioner            # 200 iterations: 45 s of CPU (README)
    python -m sphereface_lib.evaluate lfw --images <lfw pack> --model runs/practitioner/model.pt2 \\
        --pairs <pairs.txt> --out runs/practitioner/lfw_result.json    # the command this script prints

The data is the built-in synthetic set at smoke size (28x24 faces, generated into ``--cache`` on first use):
a packed training set (``PackedDataset``: ``images`` uint8 (N, H, W, C) memory map, ``labels`` int (N,),
``keys``, ``identities``, ``manifest``), an LFW-like pack and its View 2 ``pairs.txt``. Any pack that
``data_prep`` writes reads the same way: pass ``--train`` / ``--lfw`` / ``--pairs`` instead.
The loop below is what ``sphereface_lib.train`` runs (with checkpoints, resume, DDP and a divergence guard).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sphereface_lib import ASoftmax, LambdaSchedule, create_backbone
from sphereface_lib.data.packed import PackedDataset
from sphereface_lib.data.protocols import pair_rows, read_lfw_pairs
from sphereface_lib.data.synthetic import synthetic_benchmark
from sphereface_lib.evaluation.features import extract_features, images_to_tensor
from sphereface_lib.evaluation.verification import lfw_10fold


def train_asoftmax(train: PackedDataset, iterations: int, batch_size: int = 64, lr: float = 0.05,
                   seed: int = 0) -> torch.nn.Module:
    """SphereFace-4 (1/8 width, 64-d) + A-Softmax m=4 (Eq. 6-7) by SGD; lr steps at 2/3 and 13/15 of the run
    (``configs/tiny_cpu.yaml``'s recipe). Returns the backbone (the feature extractor) in eval mode."""
    torch.manual_seed(seed)
    h, w, c = train.manifest.image_shape
    backbone = create_backbone("sphereface4", in_channels=c, input_size=(h, w), width=0.125, feat_dim=64)
    head = ASoftmax(64, train.manifest.num_identities, m=4,
                    lambda_schedule=LambdaSchedule(base=1000.0, gamma=0.5, lambda_min=5.0))
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=lr, momentum=0.9,
                                weight_decay=5e-4)
    steps = torch.optim.lr_scheduler.MultiStepLR(optimizer, [iterations * 2 // 3, iterations * 13 // 15], 0.1)
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(train.labels.astype(np.int64))
    backbone.train()
    for iteration in range(iterations):
        rows = np.sort(rng.choice(len(train), size=min(batch_size, len(train)), replace=False))
        x = images_to_tensor(train.images[rows])                      # (x - 127.5) / 128, NCHW
        x = torch.where(torch.from_numpy(rng.random(len(rows)) < 0.5)[:, None, None, None], x.flip(3), x)
        y = labels[rows]
        head.update(iteration)                                          # anneals lambda (Sec. 4.1)
        loss = F.cross_entropy(head(backbone(x), y), y)
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged at iteration {iteration}: lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps.step()
        if iteration % 50 == 0 or iteration == iterations - 1:
            print(f"iteration {iteration}: loss {loss.item():.4f}, lambda {head.log_values().get('lambda', 0):.1f}")
    return backbone.eval()


def lfw_accuracy(backbone: torch.nn.Module, lfw: PackedDataset, pairs_path: Path) -> tuple[float, float]:
    """Mean and std of the 10-fold LFW accuracy (%) on flip-concatenated features (Sec. 4.1, Table 3)."""
    pairs = read_lfw_pairs(pairs_path)
    rows_a, rows_b = pair_rows(lfw, pairs)
    needed = np.unique(np.concatenate([rows_a, rows_b]))
    features = extract_features(backbone, lfw.images, needed, flip="concat", progress=False)
    where = np.searchsorted(needed, [rows_a, rows_b])
    result = lfw_10fold(features[where[0]], features[where[1]], pairs.is_same)
    return 100 * result.mean, 100 * result.std


def export_model(backbone: torch.nn.Module, image_shape: tuple[int, int, int], path: Path) -> Path:
    """Save the backbone as a ``torch.export`` program with a dynamic batch dimension: the ``model.pt2`` that
    ``python -m sphereface_lib.evaluate ... --model`` takes (float (B, C, H, W) in, (B, D) features out)."""
    h, w, c = image_shape
    example = torch.zeros(2, c, h, w)
    program = torch.export.export(backbone.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/practitioner"), help="where model.pt2 goes")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--cache", type=Path, default=Path("cache/synthetic"), help="synthetic data cache")
    parser.add_argument("--train", type=Path, help="a packed training set (default: synthetic smoke)")
    parser.add_argument("--lfw", type=Path, help="a packed LFW-like set (with --pairs)")
    parser.add_argument("--pairs", type=Path, help="its View 2 pairs.txt")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations {args.iterations}: give 1 or more")
    if (args.lfw is None) != (args.pairs is None):
        parser.error("--lfw and --pairs go together")
    bench = None if args.train and args.lfw else synthetic_benchmark(args.cache, "smoke")
    train = PackedDataset(args.train) if args.train else bench.train
    lfw, pairs = (PackedDataset(args.lfw), args.pairs) if args.lfw else (bench.lfw, bench.lfw_pairs)

    print(f"training on {train.root}: {len(train)} images of {train.manifest.num_identities} identities, "
          f"{'x'.join(map(str, train.manifest.image_shape))}")
    backbone = train_asoftmax(train, args.iterations, lr=args.lr)
    mean, std = lfw_accuracy(backbone, lfw, pairs)
    print(f"LFW 10-fold on {lfw.root}: {mean:.2f} +- {std:.2f} %")
    model = export_model(backbone, tuple(train.manifest.image_shape), args.out / "model.pt2")
    print(f"exported {model}; score it with:\n  python -m sphereface_lib.evaluate lfw --images {lfw.root} "
          f"--model {model} --pairs {pairs} --out {args.out / 'lfw_result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
