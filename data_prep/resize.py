"""A 112x96 pack, or a real-data folder of them, at a smaller crop size (the CPU profiles train at 56x48).

    python -m data_prep.resize --src /work/data-real --out /work/data-real-56x48 --size 56x48

``--src`` is one pack data_prep wrote (a folder with ``manifest.json``) or a real-data folder (``train/``,
``lfw/``, ... beside files such as ``megaface_split.tsv``). Every pack is written at ``--size`` by the exact
integer block mean the synthetic faces and ``data_prep.openset --size`` use (for an integer factor this is
OpenCV's INTER_AREA, rounded half up), with the same keys, labels, identities and manifest fields; the manifest's
``extra`` records the source pack and size. The other files are copied as they are: the protocol files
(``pairs.txt``), ``outside.npy``, ``landmarks.npy``, ``failures.tsv``, the reports; sub-folders that are not
packs (logs) are left out. The output appears only when complete (written to ``<out>.partial`` and renamed),
and one command writes an ``--out`` at a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from sphereface_lib.data.packed import PackedDataset, PackedWriter, removed_on_failure
from sphereface_lib.data.synthetic.faces import OUTPUT_SIZES
from sphereface_lib.data.synthetic.faces import _resize as block_mean
from sphereface_lib.errors import UserError
from sphereface_lib.locking import output_lock

from .pipeline import cli, command_line, require_dir

SIZES = {f"{h}x{w}": (h, w) for h, w in OUTPUT_SIZES}
PACK_FILES = frozenset({"images.u8", "labels.npy", "keys.txt", "identities.txt", "manifest.json"})
_CHUNK = 1024  #: images resized at a time (bounded memory)


def _size(text: str) -> tuple[int, int]:
    if text not in SIZES:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(SIZES)}")
    return SIZES[text]


def is_pack(folder: Path) -> bool:
    """Whether ``folder`` is a packed dataset (holds a manifest)."""
    return (folder / "manifest.json").is_file()


def resize_pack(src: Path, out: Path, size: tuple[int, int], command: str) -> PackedDataset:
    """Write the pack ``src`` (112x96) at ``size`` to ``out``, with the files beside its pack files copied."""
    pack = PackedDataset(src)
    if (pack.manifest.height, pack.manifest.width) != OUTPUT_SIZES[0]:
        raise UserError(f"--src {src}: a {pack.manifest.height}x{pack.manifest.width} pack; data_prep.resize "
                        f"reads 112x96 packs (data_prep writes them): resize from the 112x96 pack")
    m = pack.manifest
    extra = {**m.extra, "resized_from": str(src), "resized_to": f"{size[0]}x{size[1]}", "resize_command": command}
    writer = PackedWriter(out, height=size[0], width=size[1], channels=m.channels, source=m.source,
                          version=m.version, identities=pack.identities, extra=extra, overwrite=True)
    with writer.failing_aborts():
        for start in range(0, len(pack), _CHUNK):
            stop = min(start + _CHUNK, len(pack))
            writer.add(block_mean(np.asarray(pack.images[start:stop]), size), pack.labels[start:stop],
                       pack.keys[start:stop])
        for path in sorted(src.iterdir()):
            if path.is_file() and path.name not in PACK_FILES and not path.name.startswith("."):
                shutil.copy2(path, writer.partial / path.name)
    return writer.close()


def resize_folder(src: Path, out: Path, size: tuple[int, int], command: str) -> list[str]:
    """Write ``src`` (a pack or a folder of packs) at ``size`` to ``out`` (which must not exist); the parts."""
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    with removed_on_failure(partial):
        if is_pack(src):
            resize_pack(src, partial, size, command)
            parts = ["."]
        else:
            parts = sorted(p.name for p in src.iterdir() if p.is_dir() and is_pack(p))
            if not parts:
                raise UserError(f"--src {src}: neither a pack (no manifest.json) nor a folder of packs; give the "
                                "folder data_prep wrote")
            partial.mkdir(parents=True)
            for name in parts:
                resize_pack(src / name, partial / name, size, command)
            for path in sorted(src.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    shutil.copy2(path, partial / path.name)
        os.replace(partial, out)
    return parts


def run(argv: Sequence[str] | None = None) -> list[str]:
    """Command line: see the module docstring; returns the packs written (``.`` for a single pack)."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.resize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="a 112x96 pack, or a folder of them")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write (must not exist)")
    parser.add_argument("--size", required=True, type=_size, metavar="HxW", help=f"one of {', '.join(SIZES)}")
    args = parser.parse_args(argv)
    src = require_dir(args.src, "--src")
    if args.out.resolve() == src.resolve():
        raise UserError(f"--out {args.out} is --src; choose another --out")
    with output_lock(args.out):
        if args.out.exists():
            raise UserError(f"--out {args.out} already exists; remove it or choose another --out")
        parts = resize_folder(src, args.out, args.size, command_line("data_prep.resize", argv))
    print(f"{args.out}: {', '.join(parts)} at {args.size[0]}x{args.size[1]}")
    return parts


if __name__ == "__main__":
    cli(run)
