"""LFW (``<src>/<name>/<name>_0001.jpg`` plus ``pairs.txt``) -> aligned 112x96 pack with ``pairs.txt`` beside it.

    python -m data_prep.lfw --src lfw --pairs pairs.txt --out data/lfw_aligned

Keys are ``name/0001`` (1-based, as pairs.txt counts images). The pairs file is copied unchanged beside the
pack and read with :func:`sphereface_lib.data.protocols.read_lfw_pairs` (View 2 ``pairs.txt`` or View 1
``pairsDevTrain.txt``/``pairsDevTest.txt``); entries whose image is missing or was not aligned are listed in
``failures.tsv`` (kind ``pairs_missing``, at ``file:line``) and counted in the manifest. An image in which MTCNN
finds no face (on the deep-funneled LFW: ``Marilyn_Monroe/0001`` only) is listed (kind ``no_face``), never fatal;
the pairs that use it are listed as ``pairs_missing``. The counts, the misses and the MTCNN throughput are
printed and written to ``<out>/prep_report.json``; :mod:`data_prep.lfw_megaface` then makes a MegaFace-like
probe/distractor split from the pack. A pairs file that is not UTF-8 stops the command before any image is
aligned; a malformed one is listed once (kind ``bad_pairs_file``, with the reader's message naming file and line)
and not checked further.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

from sphereface_lib.data.protocols import ProtocolFormatError, lfw_key, read_lfw_pairs
from sphereface_lib.errors import UserError

from .folders import list_folders
from .pipeline import (cli, Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args,
                       report, require_dir, require_file, read_utf8)
from .prep_report import timed_prepare, write_report

_NUMBERED = re.compile(r"^(?P<name>.+)_(?P<num>\d+)$")


def list_lfw(src: Path) -> tuple[list[Item], list[Problem]]:
    """Items ``name/NNNN`` of every ``<src>/<name>/<name>_NNNN.<ext>``, and problems (bad names, empty folders)."""
    listed, problems = list_folders(src)
    items = []
    for it in listed:
        f = Path(it.path)
        m = _NUMBERED.match(f.stem)
        if m is None or m["name"] != it.identity:
            problems.append(Problem(it.path, "bad_name", f"expected {it.identity}_NNNN{f.suffix}; skipped"))
            continue
        items.append(Item(lfw_key(it.identity, int(m["num"])), it.identity, it.path))
    return items, problems


def check_pairs(pairs_file: Path, keys: set[str]) -> list[Problem]:
    """One ``bad_pairs_file`` problem if ``pairs_file`` is malformed, else a ``pairs_missing`` problem
    (at ``file:line``) for every image of a pair that is not among ``keys``."""
    try:
        pairs = read_lfw_pairs(pairs_file)
    except ProtocolFormatError as exc:
        return [Problem(str(pairs_file), "bad_pairs_file", str(exc))]
    problems = []
    for no, a, b in zip(pairs.lines.tolist(), pairs.keys_a, pairs.keys_b):
        for key in (a, b):
            if key not in keys:
                problems.append(Problem(f"{pairs_file}:{no}", "pairs_missing",
                                        f"{pairs_file}:{no}: image {key} is not in the pack"))
    return problems


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
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
        read_utf8(require_file(p, "--pairs"), "--pairs")  # before any image is aligned
    items, problems = list_lfw(src)
    if not items:
        raise UserError(f"--src {src} has no <name>/<name>_NNNN.jpg files")
    result, speed = timed_prepare(items, config, source="lfw", command=command_line("data_prep.lfw", argv),
                                  problems=problems, protocol_files={p.name: p for p in args.pairs},
                                  protocol_check=lambda keys: [q for p in args.pairs for q in check_pairs(p, keys)])
    report(result)
    write_report(result, speed)
    return result


if __name__ == "__main__":
    cli(run)
