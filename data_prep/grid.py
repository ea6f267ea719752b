"""A sample grid of aligned crops from a pack, for a person to check the alignment by eye.

    python -m data_prep.grid --pack data/att_aligned --out data/att_aligned_grid.png

Each row is one identity; red dots mark the SphereFace template landmarks (eyes, nose tip, mouth corners)
where the aligned faces' landmarks should sit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from sphereface_lib.data.packed import PackedDataset, atomic_write
from sphereface_lib.errors import UserError

from .align import TEMPLATE
from .pipeline import cli, require_dir


def sample_grid(dataset: PackedDataset, rows: int = 8, per_row: int = 10) -> np.ndarray:
    """RGB uint8 grid: up to ``per_row`` crops of each of the first ``rows`` identities with images, the
    template landmarks marked in red on each."""
    h, w = dataset.manifest.height, dataset.manifest.width
    labels = [lab for lab in np.unique(dataset.labels)][:rows]
    if not labels:
        raise UserError(f"--pack {dataset.root} holds no images; give a pack with images")
    grid = np.full((len(labels) * (h + 2), per_row * (w + 2), 3), 255, np.uint8)
    for r, lab in enumerate(labels):
        for c, i in enumerate(np.flatnonzero(dataset.labels == lab)[:per_row]):
            tile = np.array(dataset.images[i])
            tile = np.repeat(tile, 3, axis=2) if tile.shape[2] == 1 else tile
            for x, y in TEMPLATE:
                cv2.circle(tile, (int(round(x)), int(round(y))), 1, (255, 0, 0), -1)
            grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = tile
    return grid


def save_grid(dataset: PackedDataset, out: Path, rows: int = 8, per_row: int = 10) -> Path:
    """Write :func:`sample_grid` as a PNG atomically (a full disk is one error naming ``out``); returns ``out``."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the PNG file to write, e.g. {out / 'grid.png'}")
    grid = Image.fromarray(sample_grid(dataset, rows, per_row))
    atomic_write(out, lambda f: grid.save(f, format="PNG"))
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.grid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", required=True, type=Path, help="packed dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--rows", type=int, default=8, help="identities shown")
    parser.add_argument("--per-row", type=int, default=10, help="images per identity")
    args = parser.parse_args(argv)
    for flag, value in (("--rows", args.rows), ("--per-row", args.per_row)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    path = save_grid(PackedDataset(require_dir(args.pack, "--pack")), args.out, args.rows, args.per_row)
    print(path)
    return path


if __name__ == "__main__":
    cli(main)
