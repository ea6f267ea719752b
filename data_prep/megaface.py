"""MegaFace distractors and the FaceScrub probe set (images plus the devkit's list files) -> aligned packs.

One pack per set:

    python -m data_prep.megaface --set distractors --root MegaFace/FlickrFinal2 \\
        --list devkit/templatelists/megaface_features_list.json_1000000_1 --out data/megaface_distractors
    python -m data_prep.megaface --set probe --root FaceScrub/images \\
        --list devkit/templatelists/facescrub_features_list.json --out data/facescrub_probe

A list file is the devkit's JSON (``{"path": [...]}``, FaceScrub's also ``{"id": [...]}``) or plain text
with one relative image path per line. Keys are the listed paths without their extension; the identity is
the ``id`` entry when given, else the image's folder. The list file is copied beside the pack; listed
images that are absent, unreadable or faceless are named in ``failures.tsv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath
from typing import Sequence

from sphereface_lib.errors import UserError

from .pipeline import (cli, Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args, prepare,
                       report, require_dir, require_file, read_utf8)

SETS = ("distractors", "probe")


def read_list(list_file: Path) -> tuple[list[str], list[str] | None]:
    """Relative image paths of a MegaFace/FaceScrub list file, and identity ids when it has them.

    Raises :class:`UserError` naming the file for a list that is not UTF-8, not the devkit's JSON object, or
    whose ``id`` and ``path`` lengths differ.
    """
    text = read_utf8(list_file, "--list")
    if text.lstrip().startswith("["):
        raise UserError(f'--list {list_file}: a JSON list; expected the devkit\'s JSON object {{"path": [...]}} '
                        '(plus "id" for FaceScrub) or a text file with one relative image path per line')
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{list_file}: invalid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("path"), list):
            raise UserError(f'{list_file}: expected a JSON object with a "path" list')
        ids = data.get("id")
        if ids is not None and not isinstance(ids, list):
            raise UserError(f'--list {list_file}: "id" must be a list (one identity per "path" entry), got {ids!r}')
        if ids is not None and len(ids) != len(data["path"]):
            raise UserError(f'{list_file}: "id" has {len(ids)} entries, "path" {len(data["path"])}')
        return [str(p) for p in data["path"]], None if ids is None else [str(i) for i in ids]
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")], None


def list_megaface(root: Path, list_file: Path) -> tuple[list[Item], list[Problem]]:
    """Items of every listed image, and a problem for each listed file that does not exist."""
    paths, ids = read_list(list_file)
    items, problems = [], []
    for i, rel in enumerate(paths):
        p = PurePosixPath(rel)
        full = root / p
        if not full.is_file():
            problems.append(Problem(str(full), "missing_file", f"{full}: listed in {list_file.name} but absent"))
            continue
        identity = ids[i] if ids is not None else (p.parent.name or p.stem)
        items.append(Item(str(p.with_suffix("")), identity, str(full)))
    return items, problems


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.megaface", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", required=True, choices=SETS, help="MegaFace distractors or FaceScrub probe")
    parser.add_argument("--root", required=True, type=Path, help="folder the list's paths are relative to")
    parser.add_argument("--list", required=True, type=Path, help="devkit list file (JSON) or text list")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    root = require_dir(args.root, "--root")
    list_file = require_file(args.list, "--list")
    items, problems = list_megaface(root, list_file)
    if not items:
        raise UserError(f"none of the images listed in {list_file} exists under --root {root}")

    result = prepare(items, config, source=f"megaface-{args.set}", command=command_line("data_prep.megaface", argv),
                     problems=problems, protocol_files={list_file.name: list_file},
                     extra={"set": args.set})
    report(result)
    return result


if __name__ == "__main__":
    cli(run)
