"""Any folder-per-identity dataset (``<src>/<identity>/<image>``) -> aligned 112x96 pack.

Example (the AT&T/ORL faces: already cropped, so a border helps MTCNN and misses get a centre crop)::

    python -m data_prep.folders --src ../shared/data/att_faces --out data/att_aligned --pad 0.25 --on-miss centre

Keys are ``identity/filename-stem``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .pipeline import (Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args,
                       image_files, prepare, report, require_dir)


def list_folders(src: Path, exclude: frozenset[str] = frozenset()) -> tuple[list[Item], list[Problem]]:
    """Items of every ``<src>/<identity>/<image>`` (identities sorted), and problems (empty folders, ...).

    Identities named in ``exclude`` are left out; files directly in ``src`` (a README) are ignored.
    """
    items, problems = [], []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in exclude:
            continue
        files, bad = image_files(folder)
        problems += bad
        if not files:
            problems.append(Problem(str(folder), "empty_identity", "identity folder holds no image; skipped"))
        items += [Item(f"{folder.name}/{f.stem}", folder.name, str(f)) for f in files]
    return items, problems


def main(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.folders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="folder with one sub-folder per identity")
    parser.add_argument("--source-name", default=None, help="name stored in the manifest (default: src folder name)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    src = require_dir(args.src, "--src")
    items, problems = list_folders(src)
    if not items:
        raise SystemExit(f"error: --src {src} has no <identity>/<image> files")
    result = prepare(items, config, source=args.source_name or src.name,
                     command=command_line("data_prep.folders", argv), problems=problems)
    report(result)
    return result


if __name__ == "__main__":
    main()
