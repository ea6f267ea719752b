"""Any folder-per-identity dataset (``<src>/<identity>/<image>``) -> aligned 112x96 pack.

Example (the AT&T/ORL faces: MTCNN finds all 400 without padding)::

    python -m data_prep.folders --src ../shared/data/att_faces --out data/att_aligned

Keys are ``identity/NNNN`` (:func:`sphereface_lib.data.protocols.lfw_key`, as LFW's ``pairs.txt`` counts images)
for an image named by a number (``7.pgm`` -> ``s1/0007``), else ``identity/filename-stem``. Folder and file
names that are not UTF-8 are listed in ``failures.tsv`` (kind ``bad_name``) and skipped. To turn such a set
into an open-set benchmark (train identities, held-out pairs), use :mod:`data_prep.openset`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from sphereface_lib.data.protocols import lfw_key
from sphereface_lib.errors import UserError

from .pipeline import (cli, Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args,
                       image_files, prepare, report, require_dir, utf8_name_problem)


def image_key(identity: str, stem: str) -> str:
    """``identity/NNNN`` (:func:`lfw_key`) for a file named by a positive number, else ``identity/stem``."""
    return lfw_key(identity, int(stem)) if stem.isascii() and stem.isdigit() and int(stem) > 0 else f"{identity}/{stem}"


def list_folders(src: Path, exclude: frozenset[str] = frozenset()) -> tuple[list[Item], list[Problem]]:
    """Items of every ``<src>/<identity>/<image>`` (identities sorted), and problems (empty folders, ...).

    Identities named in ``exclude`` are left out; files directly in ``src`` (a README) are ignored.
    """
    items, problems = [], []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in exclude:
            continue
        bad_name = utf8_name_problem(folder)
        if bad_name is not None:
            problems.append(bad_name)
            continue
        files, bad = image_files(folder)
        problems += bad
        if not files:
            problems.append(Problem(str(folder), "empty_identity", "identity folder holds no image; skipped"))
        items += [Item(image_key(folder.name, f.stem), folder.name, str(f)) for f in files]
    return items, problems


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
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
        raise UserError(f"--src {src} has no <identity>/<image> files")
    result = prepare(items, config, source=args.source_name or src.name,
                     command=command_line("data_prep.folders", argv), problems=problems)
    report(result)
    return result


if __name__ == "__main__":
    cli(run)
