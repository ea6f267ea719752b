"""CASIA-WebFace (``<src>/<identity id>/<NNN>.jpg``) -> aligned 112x96 pack, identities also in LFW removed.

SphereFace trains on CASIA-WebFace after removing the identities that also appear in the test sets
(Liu et al., CVPR 2017, Sec. 4.1). No official overlap list ships with CASIA-WebFace and none is
available offline here, so the overlap is computed, and you choose how:

* ``--names names.txt --lfw-names lfw-names.txt``: CASIA's ``names.txt`` (``<id> <Name_Surname>`` per line,
  shipped with the dataset) matched by name against LFW's ``lfw-names.txt`` (``<Name_Surname> <count>``);
  names are compared case-insensitively with spaces and underscores equated;
* ``--exclude-ids FILE``: a list of CASIA identity ids to drop (one per line, ``#`` comments), for a
  published overlap list you trust.

Both may be given. The removed identities are written to ``excluded_identities.tsv`` beside the pack.

    python -m data_prep.casia --src CASIA-WebFace --names CASIA-WebFace/names.txt \\
        --lfw-names lfw-names.txt --out data/casia_aligned

Keys are ``identity/filename-stem``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

from sphereface_lib.errors import UserError

from .folders import list_folders
from .pipeline import (cli, PrepResult, add_common_arguments, command_line, config_from_args, prepare, report,
                       require_dir, require_file)


def _norm(name: str) -> str:
    return "_".join(name.replace("_", " ").split()).casefold()


def read_two_columns(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, first field, rest)`` of each non-empty, non-comment line, split at the first whitespace."""
    out = []
    for no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            first, _, rest = line.partition(" ") if "\t" not in line else line.partition("\t")
            out.append((no, first.strip(), rest.strip()))
    return out


def lfw_overlap(names_file: Path, lfw_names_file: Path) -> dict[str, str]:
    """CASIA id -> name for every CASIA identity whose name is also an LFW identity."""
    lfw = {_norm(first) for _, first, _ in read_two_columns(lfw_names_file)}
    overlap = {}
    for no, cid, name in read_two_columns(names_file):
        if not name:
            raise UserError(f"{names_file}:{no}: expected '<id> <Name_Surname>', got {cid!r}")
        if _norm(name) in lfw:
            overlap[cid] = name
    return overlap


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.casia", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="CASIA-WebFace folder (one sub-folder per id)")
    parser.add_argument("--names", type=Path, help="CASIA names.txt: '<id> <Name_Surname>' per line")
    parser.add_argument("--lfw-names", type=Path, help="LFW lfw-names.txt: '<Name_Surname> <count>' per line")
    parser.add_argument("--exclude-ids", type=Path, help="file of CASIA ids to remove, one per line")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    src = require_dir(args.src, "--src")
    if (args.names is None) != (args.lfw_names is None):
        raise UserError("--names and --lfw-names go together (CASIA names matched against LFW names)")
    if args.names is None and args.exclude_ids is None:
        raise UserError("give --names with --lfw-names and/or --exclude-ids: training on CASIA without "
                         "removing the LFW identities inflates LFW accuracy")
    excluded: dict[str, str] = {}
    if args.names is not None:
        for cid, name in lfw_overlap(require_file(args.names, "--names"),
                                     require_file(args.lfw_names, "--lfw-names")).items():
            excluded[cid] = f"{name}\tname in {args.lfw_names.name}"
    if args.exclude_ids is not None:
        for _, cid, _ in read_two_columns(require_file(args.exclude_ids, "--exclude-ids")):
            excluded.setdefault(cid, f"\tlisted in {args.exclude_ids.name}")
    items, problems = list_folders(src, exclude=frozenset(excluded))
    if not items:
        raise UserError(f"--src {src} has no <identity>/<image> files (after exclusions)")
    present = sorted(cid for cid in excluded if (src / cid).is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "excluded_identities.tsv"
        table.write_text("id\tname\treason\n" + "".join(f"{cid}\t{excluded[cid]}\n" for cid in present))
        result = prepare(items, config, source="casia-webface", command=command_line("data_prep.casia", argv),
                         problems=problems, protocol_files={table.name: table},
                         extra={"excluded_identities": len(present),
                                "exclusion_source": [str(p) for p in (args.names, args.lfw_names, args.exclude_ids)
                                                     if p is not None]})
    print(f"removed {len(present)} CASIA identities that are also in LFW (excluded_identities.tsv)")
    report(result)
    return result


if __name__ == "__main__":
    cli(run)
