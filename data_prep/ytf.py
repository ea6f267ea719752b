"""YouTube Faces (``frame_images_DB/<Person>/<video number>/*.jpg`` plus the splits file) -> aligned pack.

    python -m data_prep.ytf --src YouTubeFaces/frame_images_DB --splits ytf_splits.csv --out data/ytf_aligned

Keys are ``Person/number/NNNN``: the 1-based position of the frame among its video's frames sorted by frame
number (YTF names frames ``<video>.<frame>.jpg``). ``--frames-per-video`` keeps that many evenly spaced
frames per video (keys still count all frames). The splits file (the official ``splits.txt`` or the CSV
``split,video_a,video_b,same``; both read by :func:`sphereface_lib.data.protocols.read_ytf_splits`) is copied
unchanged beside the pack as ``ytf_splits.csv``; videos it names that end up with no frame in the pack are
listed in ``failures.tsv`` (kind ``splits_missing``); a malformed splits file is listed once (kind
``bad_splits_file``, with the reader's message naming file and line).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from sphereface_lib.data.protocols import ProtocolFormatError, read_ytf_splits, ytf_frame_key
from sphereface_lib.errors import UserError

from .pipeline import (cli, Item, PrepResult, Problem, add_common_arguments, command_line, config_from_args,
                       image_files, prepare, report, require_dir, require_file, read_utf8, utf8_name_problem)

_LAST_NUMBER = re.compile(r"(\d+)$")


def _frame_order(path: Path) -> tuple[int, str]:
    m = _LAST_NUMBER.search(path.stem)
    return (int(m[1]) if m else -1, path.name)


def list_ytf(src: Path, frames_per_video: int | None = None) -> tuple[list[Item], list[Problem]]:
    """Items of every ``<src>/<Person>/<number>/<frame>``, and problems (empty videos, other files)."""
    items, problems = [], []
    for person in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        bad_name = utf8_name_problem(person)
        if bad_name is not None:
            problems.append(bad_name)
            continue
        videos = []
        for v in sorted((v for v in person.iterdir() if v.is_dir()), key=lambda v: v.name):
            bad_name = utf8_name_problem(v)
            if bad_name is not None:
                problems.append(bad_name)
            else:
                videos.append(v)
        if not videos:
            problems.append(Problem(str(person), "empty_identity", "person folder holds no video folder; skipped"))
        for video in videos:
            frames, bad = image_files(video)
            problems += bad
            if not frames:
                problems.append(Problem(str(video), "empty_video", "video folder holds no frame; skipped"))
                continue
            frames.sort(key=_frame_order)
            chosen = range(len(frames)) if frames_per_video is None or frames_per_video >= len(frames) else (
                np.unique(np.linspace(0, len(frames) - 1, frames_per_video).round().astype(int)))
            items += [Item(ytf_frame_key(f"{person.name}/{video.name}", i + 1), person.name, str(frames[i]))
                      for i in chosen]
    return items, problems


def check_splits(splits_file: Path, keys: set[str]) -> list[Problem]:
    """One ``bad_splits_file`` problem if ``splits_file`` is malformed, else a ``splits_missing`` problem
    (at ``file:line``) for every video it names that has no frame among ``keys``."""
    try:
        pairs = read_ytf_splits(splits_file)
    except ProtocolFormatError as exc:
        return [Problem(str(splits_file), "bad_splits_file", str(exc))]
    videos = {k.rsplit("/", 1)[0] for k in keys}
    problems = []
    for no, a, b in zip(pairs.lines.tolist(), pairs.keys_a, pairs.keys_b):
        for v in (a, b):
            if v not in videos:
                problems.append(Problem(f"{splits_file}:{no}", "splits_missing",
                                        f"{splits_file}:{no}: video {v!r} has no frame in the pack"))
    return problems


def run(argv: Sequence[str] | None = None) -> PrepResult:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.ytf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="frame_images_DB folder (or the folder above it)")
    parser.add_argument("--splits", required=True, type=Path,
                        help="splits file: the official splits.txt, or a CSV split,video_a,video_b,same")
    parser.add_argument("--frames-per-video", type=int, default=None, help="evenly spaced frames kept per video")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    src = require_dir(args.src, "--src")
    if (src / "frame_images_DB").is_dir():
        src = src / "frame_images_DB"
    splits = require_file(args.splits, "--splits")
    read_utf8(splits, "--splits")
    if args.frames_per_video is not None and args.frames_per_video < 1:
        raise UserError(f"--frames-per-video must be >= 1, got {args.frames_per_video}")
    items, problems = list_ytf(src, args.frames_per_video)
    if not items:
        raise UserError(f"--src {src} has no <Person>/<number>/<frame>.jpg files")
    result = prepare(items, config, source="ytf", command=command_line("data_prep.ytf", argv), problems=problems,
                     protocol_files={"ytf_splits.csv": splits}, protocol_check=lambda keys: check_splits(splits, keys),
                     extra={"videos": len({it.key.rsplit("/", 1)[0] for it in items}),
                            "frames_per_video": args.frames_per_video})
    report(result)
    return result


if __name__ == "__main__":
    cli(run)
