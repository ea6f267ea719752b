"""In-the-wild photos, one folder per identity (CelebA by identity, or any web collection) -> aligned training pack.

    python -m data_prep.celeba --src ../shared/data/celeba-id7201-7499 --out data/celeba_train --workers 2

Unlike :mod:`data_prep.folders` (pre-cropped faces), the photos are whole scenes, often full-body, with small
faces and bystanders, and web collections hold the same file under two identities (label noise). So, by default:

* MTCNN searches faces down to 12 px (``--min-face-size 12``, its P-Net window: faces in full-body photos are
  small) and keeps the **largest** face (``--face largest``): the photo's subject; the face nearest the centre is
  often a bystander or a false detection;
* before detection, every file is hashed (SHA-256 of its bytes); a byte-identical image under two or more
  identities is dropped in every copy (which label is right cannot be known), each copy listed in
  ``failures.tsv`` naming every key (kind ``duplicate_across_identities``); repeated copies within one identity
  keep the first key (kind ``duplicate_within_identity``);
* photos without a face are listed (kind ``no_face``), and crops partly outside their photo are counted and
  listed (``outside.npy``; over 10% = partial face; ``--max-outside F`` skips those above F).

Resumable like every data_prep command: finished shards and the file hashes are kept in ``<out>.work`` until
the pack is complete, so a re-run after an interruption detects only the images not yet done. At the end it
prints the counts and the MTCNN throughput (images/s over the images detected in this run), also written to
``<out>/prep_report.json``. Keys are ``identity/NNNN`` for numbered files (``001085.jpg`` -> ``7201/1085``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from sphereface_lib.data.packed import atomic_write_text
from sphereface_lib.errors import UserError

from .align import FACE_RULES
from .folders import list_folders
from .pipeline import (Item, PrepResult, Problem, add_common_arguments, cli, command_line, config_from_args,
                       report, require_dir)
from .prep_report import timed_prepare, write_report

#: the smallest face searched for in full-body photos: MTCNN's P-Net window
WILD_MIN_FACE_SIZE = 12
HASHES_NAME = "file_sha256.tsv"


@dataclass(frozen=True)
class DuplicateGroup:
    """Byte-identical files: their keys (sorted), the keys dropped, whether they span identities."""

    sha256: str
    keys: tuple[str, ...]
    dropped: tuple[str, ...]
    across_identities: bool


def file_digests(paths: Sequence[str], cache: Path) -> dict[str, str]:
    """SHA-256 of each file's bytes; digests already in ``cache`` (same size and modification time) are reused,
    and the cache is rewritten atomically, so an interrupted run does not hash the same file twice."""
    known: dict[tuple[str, int, int], str] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            path, size, mtime, digest = line.rsplit("\t", 3)
            known[(path, int(size), int(mtime))] = digest
    digests, rows = {}, []
    for path in paths:
        st = Path(path).stat()
        ident = (path, st.st_size, st.st_mtime_ns)
        digest = known.get(ident) or hashlib.sha256(Path(path).read_bytes()).hexdigest()
        digests[path] = digest
        rows.append(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{digest}\n")
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, "".join(rows))
    return digests


def drop_duplicates(items: Sequence[Item], digests: dict[str, str]
                    ) -> tuple[list[Item], list[Problem], list[DuplicateGroup]]:
    """``items`` without byte-identical copies: every copy of an image found under several identities is dropped,
    copies within one identity keep the first key; a problem per dropped file names all the keys."""
    by_digest: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_digest[digests[it.path]].append(it)
    dropped: set[str] = set()
    problems, groups = [], []
    for digest, copies in by_digest.items():
        if len(copies) < 2:
            continue
        copies = sorted(copies, key=lambda it: it.key)
        keys = [it.key for it in copies]
        across = len({it.identity for it in copies}) > 1
        gone = copies if across else copies[1:]
        for it in gone:
            dropped.add(it.key)
            if across:
                why = (f"{it.path}: byte-identical images under {len({c.identity for c in copies})} identities "
                       f"({', '.join(keys)}); every copy dropped (which label is right is unknown)")
            else:
                why = f"{it.path}: byte-identical to {keys[0]} of the same identity; dropped (kept {keys[0]})"
            problems.append(Problem(it.path, "duplicate_across_identities" if across else "duplicate_within_identity",
                                    why))
        groups.append(DuplicateGroup(digest, tuple(keys), tuple(it.key for it in gone), across))
    return [it for it in items if it.key not in dropped], problems, groups


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.celeba", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="folder with one sub-folder of photos per identity")
    parser.add_argument("--source-name", default=None, help="name stored in the manifest (default: src folder name)")
    parser.add_argument("--face", choices=sorted(FACE_RULES), default="largest",
                        help="which face to keep when MTCNN finds several: the largest (default: the photo's "
                             "subject) or the one closest to the image centre")
    add_common_arguments(parser)
    parser.set_defaults(min_face_size=WILD_MIN_FACE_SIZE)
    args = parser.parse_args(argv)
    config = replace(config_from_args(args), face=args.face)
    src = require_dir(args.src, "--src")
    listed, problems = list_folders(src)
    if not listed:
        raise UserError(f"--src {src} has no <identity>/<image> files")
    digests = file_digests([it.path for it in listed], config.work / HASHES_NAME)
    items, dup_problems, groups = drop_duplicates(listed, digests)
    across = [g for g in groups if g.across_identities]
    duplicate_counts = {"duplicate_groups_across_identities": len(across),
                        "duplicate_files_dropped": sum(len(g.dropped) for g in groups)}
    result, speed = timed_prepare(items, config, source=args.source_name or src.name,
                                  command=command_line("data_prep.celeba", argv), problems=problems + dup_problems,
                                  extra={**duplicate_counts, "listed_files": len(listed)})
    report(result)
    write_report(result, speed, extra={
        "duplicates": {**duplicate_counts,
                       "groups": [{"sha256": g.sha256, "keys": list(g.keys), "dropped": list(g.dropped),
                                   "across_identities": g.across_identities} for g in groups]}})
    print(f"  duplicates: {len(across)} images byte-identical under two or more identities (every copy dropped); "
          f"{duplicate_counts['duplicate_files_dropped']} files dropped in all", file=sys.stderr)
    return result


if __name__ == "__main__":
    cli(run)
