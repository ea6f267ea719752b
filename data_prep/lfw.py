"""LFW (``<src>/<name>/<name>_0001.jpg`` plus ``pairs.txt``) -> aligned 112x96 pack with ``pairs.txt`` beside it.

    python -m data_prep.lfw --src lfw --pairs pairs.txt --out data/lfw_aligned

Keys are ``name/0001`` (1-based, as pairs.txt counts images). The pairs file is copied unchanged beside the
pack; each of its lines is checked against the pack, and entries whose image is missing or was not
aligned are listed in ``failures.tsv`` (kind ``pairs_missing``) and counted in the manifest.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

from sphereface_lib.data.protocols import lfw_key

from .pipeline import (Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args,
                       image_files, prepare, report, require_dir, require_file)

_NUMBERED = re.compile(r"^(?P<name>.+)_(?P<num>\d+)$")


def list_lfw(src: Path) -> tuple[list[Item], list[Problem]]:
    """Items ``name/NNNN`` of every ``<src>/<name>/<name>_NNNN.<ext>``, and problems (bad names, empty folders)."""
    items, problems = [], []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files, bad = image_files(folder)
        problems += bad
        if not files:
            problems.append(Problem(str(folder), "empty_identity", "identity folder holds no image; skipped"))
        for f in files:
            m = _NUMBERED.match(f.stem)
            if m is None or m["name"] != folder.name:
                problems.append(Problem(str(f), "bad_name", f"expected {folder.name}_NNNN{f.suffix}; skipped"))
                continue
            items.append(Item(lfw_key(folder.name, int(m['num'])), folder.name, str(f)))
    return items, problems


def read_pairs(path: Path) -> tuple[list[tuple[int, str, str]], list[Problem]]:
    """``(line number, key_a, key_b)`` of every pair in an LFW pairs file, and a problem per malformed line.

    Accepts View 2's ``pairs.txt`` (header ``folds pairs``) and View 1's ``pairsDevTrain/Test.txt``
    (header ``pairs``); a line is ``name i j`` (same person) or ``name_a i name_b j`` (different).
    """
    pairs, problems = [], []
    lines = path.read_text().splitlines()
    for no, line in enumerate(lines[1:], start=2):
        f = line.split()
        try:
            if len(f) == 3:
                pairs.append((no, lfw_key(f[0], int(f[1])), lfw_key(f[0], int(f[2]))))
            elif len(f) == 4:
                pairs.append((no, lfw_key(f[0], int(f[1])), lfw_key(f[2], int(f[3]))))
            elif f:
                raise ValueError(f"{len(f)} fields")
        except ValueError as exc:
            problems.append(Problem(f"{path}:{no}", "bad_pairs_line",
                                    f"{path}:{no}: expected 'name i j' or 'name_a i name_b j' ({exc}): {line!r}"))
    return pairs, problems


def check_pairs(pairs_file: Path, keys: set[str]) -> list[Problem]:
    """A problem for every malformed line of ``pairs_file`` and every pair with an image not in ``keys``."""
    pairs, problems = read_pairs(pairs_file)
    for no, a, b in pairs:
        for key in (a, b):
            if key not in keys:
                problems.append(Problem(f"{pairs_file}:{no}", "pairs_missing",
                                        f"{pairs_file}:{no}: image {key} is not in the pack"))
    return problems


def main(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.lfw", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="the lfw/ folder (one sub-folder per name)")
    parser.add_argument("--pairs", required=True, type=Path, nargs="+",
                        help="pairs.txt (and optionally pairsDevTrain.txt, pairsDevTest.txt)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    src = require_dir(args.src, "--src")
    for p in args.pairs:
        require_file(p, "--pairs")
    items, problems = list_lfw(src)
    if not items:
        raise SystemExit(f"error: --src {src} has no <name>/<name>_NNNN.jpg files")
    result = prepare(items, config, source="lfw", command=command_line("data_prep.lfw", argv), problems=problems,
                     protocol_files={p.name: p for p in args.pairs},
                     protocol_check=lambda keys: [q for p in args.pairs for q in check_pairs(p, keys)])
    report(result)
    return result


if __name__ == "__main__":
    main()
