"""Any folder-per-identity set -> an open-set benchmark folder the notebooks read (``REAL_LAYOUT``).

    python -m data_prep.openset --src ../shared/data/att_faces --out data/att_real --size 56x48 --channels 1 \\
        --test-identities 20 --seed 0 --workers 2

``--src`` is a folder ``<identity>/<image>`` of photos (detected and aligned by the shared pipeline, as
:mod:`data_prep.folders` does) or a 112x96 pack that data_prep already wrote. The identities are split, seeded
by ``--seed``, into disjoint parts, as the paper keeps training and test identities apart (Sec. 4.1):

* ``lfw/``: the held-out test identities (``--test-identities N`` or ``--test-fraction F``), with ``pairs.txt``
  beside the folder: LFW View 2 layout, 10 folds of matched and mismatched pairs, keys ``identity/NNNN``
  (:func:`sphereface_lib.data.protocols.lfw_key`). The test identities are dealt to the folds so that, as in
  LFW, a person appears in one fold only; with fewer than 20 test identities a fold holds one person, and its
  mismatched pairs take their second image from other folds (stated as ``folds_identity_disjoint: false``);
* ``megaface_probe/`` and ``megaface_distractors/`` (with ``--megaface-probe N --megaface-distractors M``):
  N probe identities and the images of M further identities as distractors (Table 5's protocol, small);
* ``train/``: every other identity.

Test and probe identities need two images or more. How many matched and mismatched pairs each fold can give is
computed from the images that were aligned and printed; ``--pairs-per-fold`` defaults to the largest feasible
value (at most LFW's 300), and a value that cannot be met, like a split the identities cannot fill, stops with
an ``error:`` naming the flag and the largest feasible value.

Crops are stored at ``--size`` (112x96, the paper's; 56x48 or 28x24 by the exact block mean the synthetic faces
use), recorded in every manifest. ``outside.npy`` in each pack holds each crop's fraction outside its source
image; the report and each manifest count those above 10% and 25%, and ``--max-outside F`` skips crops above F.
Written beside the packs: ``split.tsv`` (identity, part, images, fold), ``images.tsv`` (key, part, source file,
outside fraction), ``failures.tsv`` and ``openset.json`` (the counts printed at the end). The folder appears
only when complete; aligned shards are kept in ``<out>.work`` for a re-run until it is. One command writes an
``--out`` at a time (a second is refused, naming the first), and a full disk leaves nothing partial behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sphereface_lib.companion.experiments import REAL_LAYOUT
from sphereface_lib.data.packed import PackedDataset, PackedWriter, atomic_write_text, removed_on_failure
from sphereface_lib.data.protocols import PairList, lfw_key, pair_rows, read_lfw_pairs, write_lfw_pairs
from sphereface_lib.data.synthetic.faces import OUTPUT_SIZES
from sphereface_lib.data.synthetic.faces import _resize as block_mean
from sphereface_lib.errors import UserError
from sphereface_lib.locking import output_lock

from .align import HEIGHT, WIDTH
from .folders import list_folders
from .pipeline import (Item, Problem, PrepConfig, add_common_arguments, cli, command_line, outside_counts,
                       prepare, printable, require_dir, write_failures)

FOLDS = 10
#: LFW View 2's matched (and mismatched) pairs per fold: the default ceiling of ``--pairs-per-fold``
LFW_PAIRS_PER_FOLD = 300
SIZES = {f"{h}x{w}": (h, w) for h, w in OUTPUT_SIZES}
PARTS = ("train", "lfw", "megaface_probe", "megaface_distractors")
_CHUNK = 512


@dataclass(frozen=True)
class Aligned:
    """Aligned 112x96 crops of a set: per image its identity, number within the identity, source, outside
    fraction (NaN: unknown) and landmarks; the problems met on the way."""

    images: np.ndarray
    identity: list[str]
    number: list[int]
    source: list[str]
    outside: np.ndarray
    landmarks: np.ndarray
    problems: list[Problem]


@dataclass(frozen=True)
class Folds:
    """The test identities dealt to folds, and what each fold can give."""

    members: list[list[str]]
    matched: list[int]
    mismatched: list[int]
    disjoint: bool

    @property
    def feasible(self) -> int:
        """The largest pairs-per-fold every fold can give (matched and mismatched alike)."""
        return min(min(self.matched), min(self.mismatched))


# ------------------------------------------------------------------------------------------ the source


def _numbers(identity: Sequence[str], tails: Sequence[str]) -> list[int]:
    """Each image's number within its identity: the file's own number where every file of the identity is
    named by one (``7.pgm`` -> 7), else its 1-based position in name order."""
    by_identity: dict[str, list[int]] = {}
    for i, name in enumerate(identity):
        by_identity.setdefault(name, []).append(i)
    number = [0] * len(identity)
    for rows in by_identity.values():
        if all(tails[i].isascii() and tails[i].isdigit() and int(tails[i]) > 0 for i in rows):
            for i in rows:
                number[i] = int(tails[i])
        else:
            for n, i in enumerate(sorted(rows, key=lambda r: tails[r]), start=1):
                number[i] = n
    return number


def _bad_identity(name: str) -> str | None:
    if not name or any(ch.isspace() for ch in name):
        return "identity name is empty or holds whitespace, which pairs.txt cannot hold; skipped (rename it)"
    return None


def from_folder(src: Path, config: PrepConfig, command: str) -> Aligned:
    """Detect and align every ``<src>/<identity>/<image>`` through the shared pipeline (resumable in
    ``config.work``); ``config.out`` receives the full 112x96 pack."""
    listed, problems = list_folders(src)
    items: list[Item] = []
    skipped: set[str] = set()
    for it in listed:
        why = _bad_identity(it.identity)
        if why is None:
            items.append(it)
        elif it.identity not in skipped:
            skipped.add(it.identity)
            problems.append(Problem(str(Path(it.path).parent), "bad_name", why))
    if not items:
        raise UserError(f"--src {src} has no <identity>/<image> files")
    result = prepare(items, config, source=src.name, command=command, problems=problems)
    ds = result.dataset
    path_of = {it.key: it.path for it in items}
    identity = [ds.identities[lab] for lab in ds.labels.tolist()]
    return Aligned(ds.images, identity, _numbers(identity, [k.rpartition("/")[2] for k in ds.keys]),
                   [path_of[k] for k in ds.keys], np.load(ds.root / "outside.npy"),
                   np.load(ds.root / "landmarks.npy"), result.problems)


def from_pack(src: Path, max_outside: float | None) -> Aligned:
    """The crops of a 112x96 pack data_prep wrote (its ``outside.npy`` when present, else unknown)."""
    ds = PackedDataset(src)
    if (ds.manifest.height, ds.manifest.width) != (HEIGHT, WIDTH):
        raise UserError(f"--src {src}: a {ds.manifest.height}x{ds.manifest.width} pack; openset reads 112x96 packs "
                        "(data_prep's output) and downsamples them to --size itself")
    n = len(ds)
    outside = np.load(src / "outside.npy") if (src / "outside.npy").is_file() else np.full(n, np.nan, np.float32)
    landmarks = np.load(src / "landmarks.npy") if (src / "landmarks.npy").is_file() else np.full((n, 5, 2), np.nan)
    if outside.shape != (n,) or landmarks.shape != (n, 5, 2):
        raise UserError(f"--src {src}: outside.npy or landmarks.npy does not hold one entry per image ({n}); "
                        "re-create the pack with data_prep")
    if max_outside is not None and np.isnan(outside).any():
        raise UserError(f"--max-outside: the pack {src} has no outside.npy (made before it existed); "
                        "re-create it with data_prep, or drop --max-outside")
    identity = [ds.identities[lab] for lab in ds.labels.tolist()]
    keep = np.ones(n, bool)
    problems = []
    for name in sorted(set(identity)):
        why = _bad_identity(name)
        if why is not None:
            problems.append(Problem(f"{src}:{name}", "bad_name", why))
            keep &= np.array([x != name for x in identity])
    if max_outside is not None:
        for i in np.flatnonzero(keep & (outside > max_outside)):
            problems.append(Problem(f"{src}:{ds.keys[i]}", "outside",
                                    f"{ds.keys[i]}: {outside[i]:.1%} of the crop lies outside the image "
                                    f"(above --max-outside {max_outside:g}); skipped"))
            keep[i] = False
    rows = np.flatnonzero(keep)
    ident = [identity[i] for i in rows]
    return Aligned(ds.images[rows] if len(rows) < n else ds.images, ident,
                   _numbers(ident, [ds.keys[i].rpartition("/")[2] for i in rows]),
                   [f"{src}:{ds.keys[i]}" for i in rows], outside[rows], landmarks[rows], problems)


# --------------------------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class SplitRequest:
    """The identity counts asked for on the command line."""

    test_identities: int | None
    test_fraction: float | None
    probe: int
    distractors: int


def split_identities(counts: dict[str, int], request: SplitRequest, seed: int) -> dict[str, str]:
    """Identity -> part (:data:`PARTS`), seeded: test identities, then probe identities (both among those with
    two images or more), then distractor identities, in the order of a seeded permutation; the rest train.

    Raises :class:`UserError` naming the flag and the largest feasible value when a count cannot be met.
    """
    names = sorted(counts)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    eligible = [n for n in order if counts[n] >= 2]
    total = len(names)
    if request.test_identities is not None:
        test, flag = request.test_identities, f"--test-identities {request.test_identities}"
    else:
        test = round(request.test_fraction * total)
        flag = f"--test-fraction {request.test_fraction:g} ({test} of {total} identities)"
    if test < FOLDS:
        raise UserError(f"{flag}: need at least {FOLDS} test identities (one per fold of pairs.txt)")
    most = min(len(eligible), total - 1)
    if test > most:
        raise UserError(f"{flag}: the largest feasible value is {most} ({len(eligible)} of {total} identities have "
                        "two images or more, and one at least must train)")
    if request.probe > len(eligible) - test:
        raise UserError(f"--megaface-probe {request.probe}: the largest feasible value is {len(eligible) - test} "
                        "(identities with two images or more, after the test identities)")
    rest = total - test - request.probe - 1
    if request.distractors > rest:
        raise UserError(f"--megaface-distractors {request.distractors}: the largest feasible value is {rest} "
                        "(after the test and probe identities, keeping one to train)")
    part = {n: "train" for n in names}
    chosen = set(eligible[:test])
    probe = [n for n in eligible if n not in chosen][:request.probe]
    for n in chosen:
        part[n] = "lfw"
    for n in probe:
        part[n] = "megaface_probe"
    for n in [n for n in order if part[n] == "train"][:request.distractors]:
        part[n] = "megaface_distractors"
    return part


def deal_folds(test: Sequence[str], counts: dict[str, int], seed: int) -> Folds:
    """The test identities dealt to :data:`FOLDS` folds (most genuine pairs first, in snake order, so folds
    are balanced in identities and pairs), with each fold's available matched and mismatched pairs."""
    order = [test[i] for i in np.random.default_rng([seed, 1]).permutation(len(test))]
    order.sort(key=lambda n: -counts[n])  # stable: ties keep the seeded order
    members: list[list[str]] = [[] for _ in range(FOLDS)]
    for i, name in enumerate(order):
        r, c = divmod(i, FOLDS)
        members[c if r % 2 == 0 else FOLDS - 1 - c].append(name)
    disjoint = min(len(m) for m in members) >= 2
    matched = [sum(counts[n] * (counts[n] - 1) // 2 for n in m) for m in members]
    mismatched = [sum(counts[a] * counts[b] for a, b in _identity_pairs(members, f, disjoint))
                  for f in range(FOLDS)]
    return Folds(members, matched, mismatched, disjoint)


def _identity_pairs(members: list[list[str]], f: int, disjoint: bool) -> list[tuple[str, str]]:
    """The identity pairs fold ``f``'s mismatched pairs come from: both in the fold when folds are disjoint;
    else also one in the fold and one in a fold 1-4 after it (or 5 after, for the first five folds), so every
    pair of identities belongs to exactly one fold."""
    own = sorted(members[f])
    pairs = [(a, b) for i, a in enumerate(own) for b in own[i + 1:]]
    if not disjoint:
        for d in range(1, 6):
            if d == 5 and f >= FOLDS // 2:
                continue
            pairs += [(a, b) for a in own for b in sorted(members[(f + d) % FOLDS])]
    return pairs


def sample_pairs(folds: Folds, numbers: dict[str, list[int]], per_fold: int, seed: int) -> PairList:
    """``per_fold`` matched then ``per_fold`` mismatched pairs for each fold, drawn without replacement (seeded)
    from the fold's candidates; keys by :func:`lfw_key`."""
    rng = np.random.default_rng([seed, 2])
    keys_a, keys_b, same, fold_of = [], [], [], []
    for f, members in enumerate(folds.members):
        own = sorted(members)
        sizes = np.array([len(numbers[n]) * (len(numbers[n]) - 1) // 2 for n in own])
        for k in np.sort(rng.choice(int(sizes.sum()), per_fold, replace=False)):
            p = int(np.searchsorted(np.cumsum(sizes), k, side="right"))
            local = int(k - (sizes[:p].sum() if p else 0))
            ii, jj = np.triu_indices(len(numbers[own[p]]), 1)
            keys_a.append(lfw_key(own[p], numbers[own[p]][ii[local]]))
            keys_b.append(lfw_key(own[p], numbers[own[p]][jj[local]]))
        pairs = _identity_pairs(folds.members, f, folds.disjoint)
        sizes = np.array([len(numbers[a]) * len(numbers[b]) for a, b in pairs])
        for k in np.sort(rng.choice(int(sizes.sum()), per_fold, replace=False)):
            p = int(np.searchsorted(np.cumsum(sizes), k, side="right"))
            local = int(k - (sizes[:p].sum() if p else 0))
            a, b = pairs[p]
            i, j = divmod(local, len(numbers[b]))
            keys_a.append(lfw_key(a, numbers[a][i]))
            keys_b.append(lfw_key(b, numbers[b][j]))
        same += [True] * per_fold + [False] * per_fold
        fold_of += [f] * (2 * per_fold)
    return PairList.from_pairs(keys_a, keys_b, same, fold_of, source="data_prep.openset")


def check_disjoint(part: dict[str, str], folds: Folds, pairs: PairList) -> None:
    """Raise ``AssertionError`` unless every identity is in exactly one part, every pair names test identities
    only, and (when the folds are disjoint) no identity appears in two folds; checked before anything is written."""
    seen: dict[str, str] = {}
    for f, members in enumerate(folds.members):
        for name in members:
            if part.get(name) != "lfw" or name in seen:
                raise AssertionError(f"identity {name!r} in fold {f}: part {part.get(name)!r}, also fold {seen.get(name)}")
            seen[name] = str(f)
    if set(seen) != {n for n, p in part.items() if p == "lfw"}:
        raise AssertionError("the folds do not hold exactly the test identities")
    for a, b, s, f in zip(pairs.keys_a, pairs.keys_b, pairs.is_same, pairs.folds):
        ia, ib = a.rpartition("/")[0], b.rpartition("/")[0]
        if part.get(ia) != "lfw" or part.get(ib) != "lfw" or (ia == ib) != bool(s):
            raise AssertionError(f"pair {a} {b} (matched={bool(s)}) leaves the test identities or mislabels them")
        if folds.disjoint and (seen[ia] != str(f) or seen[ib] != str(f)):
            raise AssertionError(f"pair {a} {b} of fold {f} names an identity of another fold")
    if len(set(zip(pairs.keys_a, pairs.keys_b))) != len(pairs):
        raise AssertionError("a pair appears twice")


# ------------------------------------------------------------------------------------------- writing


def _write_part(root: Path, name: str, rows: np.ndarray, aligned: Aligned, size: tuple[int, int],
                extra: dict) -> PackedDataset:
    """One pack of ``rows`` at ``size``, identities sorted, with its outside.npy and landmarks.npy."""
    rows = np.asarray(sorted(rows.tolist(), key=lambda r: (aligned.identity[r], aligned.number[r])), np.int64)
    identities = sorted({aligned.identity[r] for r in rows})
    label = {n: i for i, n in enumerate(identities)}
    channels = aligned.images.shape[3]
    writer = PackedWriter(root / name, height=size[0], width=size[1], channels=channels,
                          source=f"openset-{name}", identities=identities,
                          extra={**extra, "part": name, **outside_counts(aligned.outside[rows])})
    with writer.failing_aborts():
        for s in range(0, len(rows), _CHUNK):
            chunk = rows[s:s + _CHUNK]
            writer.add(block_mean(np.asarray(aligned.images[chunk]), size),
                       [label[aligned.identity[r]] for r in chunk],
                       [lfw_key(aligned.identity[r], aligned.number[r]) for r in chunk])
        np.save(writer.partial / "outside.npy", aligned.outside[rows].astype(np.float32))
        np.save(writer.partial / "landmarks.npy", aligned.landmarks[rows].astype(np.float32))
    return writer.close()


def _tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    atomic_write_text(path, "\t".join(header) + "\n" + "".join(
        "\t".join(printable(str(c)).replace("\t", " ") for c in r) + "\n" for r in rows))


def _size(text: str) -> tuple[int, int]:
    if text not in SIZES:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(SIZES)}")
    return SIZES[text]


def run(argv: Sequence[str] | None = None) -> dict:
    """Command line: see the module docstring and ``--help``; returns the summary written to openset.json."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.openset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path,
                        help="folder with one sub-folder per identity, or a 112x96 pack data_prep wrote")
    parser.add_argument("--size", type=_size, default=SIZES["112x96"], metavar="HxW",
                        help=f"crop size stored: {', '.join(SIZES)} (default 112x96, the paper's)")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test-identities", type=int, default=None, help="held-out identities for pairs.txt")
    test.add_argument("--test-fraction", type=float, default=None,
                      help="held-out fraction of the identities (default 0.25)")
    parser.add_argument("--megaface-probe", type=int, default=0, help="identities of the MegaFace-like probe set")
    parser.add_argument("--megaface-distractors", type=int, default=0,
                        help="identities whose images form the MegaFace-like distractors")
    parser.add_argument("--pairs-per-fold", type=int, default=None,
                        help=f"matched (and mismatched) pairs per fold; default: the largest feasible, at most "
                             f"{LFW_PAIRS_PER_FOLD}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the pairs")
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    # every parameter is checked here, before any image is read
    request = SplitRequest(args.test_identities, 0.25 if args.test_identities is None and args.test_fraction is None
                           else args.test_fraction, args.megaface_probe, args.megaface_distractors)
    if request.test_fraction is not None and not 0 < request.test_fraction < 1:
        raise UserError(f"--test-fraction must lie in (0, 1), got {request.test_fraction}")
    for flag, value in (("--megaface-probe", args.megaface_probe), ("--megaface-distractors", args.megaface_distractors)):
        if value < 0:
            raise UserError(f"{flag} must be >= 0, got {value}")
    if (args.megaface_probe > 0) != (args.megaface_distractors > 0):
        raise UserError("--megaface-probe and --megaface-distractors go together (probe identities are searched "
                        "among distractors); give both, or neither")
    if args.pairs_per_fold is not None and args.pairs_per_fold < 1:
        raise UserError(f"--pairs-per-fold must be >= 1, got {args.pairs_per_fold}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    with output_lock(args.out):
        return _build(args, request, command_line("data_prep.openset", argv))


def _build(args: argparse.Namespace, request: SplitRequest, command: str) -> dict:
    """Align (or read), split and write the benchmark folder ``args.out``, the output's lock held."""
    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out")
    work = args.work_dir if args.work_dir is not None else out.with_name(out.name + ".work")
    config = PrepConfig(out=work / "aligned", work_dir=work / "shards", workers=args.workers,
                        shard_size=args.shard_size, pad=args.pad, on_miss=args.on_miss, channels=args.channels,
                        min_face_size=args.min_face_size, overwrite=True, keep_work=True,
                        max_outside=args.max_outside)
    src = require_dir(args.src, "--src")
    is_pack = (src / "manifest.json").is_file()
    if not is_pack:  # the split, on the images listed (an upper bound), fails here rather than after aligning
        listed, _ = list_folders(src)
        counts: dict[str, int] = {}
        for it in listed:
            if _bad_identity(it.identity) is None:
                counts[it.identity] = counts.get(it.identity, 0) + 1
        split_identities(counts, request, args.seed)

    aligned = from_pack(src, args.max_outside) if is_pack else from_folder(src, config, command)
    counts = {}
    for name in aligned.identity:
        counts[name] = counts.get(name, 0) + 1
    part = split_identities(counts, request, args.seed)
    test_ids = sorted(n for n, p in part.items() if p == "lfw")
    folds = deal_folds(test_ids, counts, args.seed)
    feasible = folds.feasible
    per_fold = min(feasible, LFW_PAIRS_PER_FOLD) if args.pairs_per_fold is None else args.pairs_per_fold
    if per_fold > feasible:
        raise UserError(f"--pairs-per-fold {per_fold}: the largest feasible value is {feasible} (the fold with the "
                        f"fewest gives {min(folds.matched)} matched and {min(folds.mismatched)} mismatched pairs)")
    numbers: dict[str, list[int]] = {}
    for name, num in zip(aligned.identity, aligned.number):
        numbers.setdefault(name, []).append(num)
    numbers = {n: sorted(v) for n, v in numbers.items()}
    pairs = sample_pairs(folds, numbers, per_fold, args.seed)
    check_disjoint(part, folds, pairs)

    size = args.size
    fold_of = {n: f + 1 for f, m in enumerate(folds.members) for n in m}
    parts_used = [p for p in PARTS if any(v == p for v in part.values())]
    summary = {
        "command": command, "source": str(src), "source_kind": "pack" if is_pack else "folder",
        "seed": args.seed, "size": f"{size[0]}x{size[1]}", "channels": int(aligned.images.shape[3]),
        "downsampling": "exact block mean from 112x96 (sphereface_lib.data.synthetic.faces, as the synthetic faces)",
        "parts": {p: {"identities": sum(v == p for v in part.values()),
                      "images": sum(counts[n] for n, v in part.items() if v == p)} for p in parts_used},
        "folds": [{"fold": f + 1, "identities": sorted(m), "matched_available": folds.matched[f],
                   "mismatched_available": folds.mismatched[f]} for f, m in enumerate(folds.members)],
        "folds_identity_disjoint": folds.disjoint, "pairs_per_fold": per_fold, "pairs_per_fold_feasible": feasible,
        "split_file": "split.tsv", **outside_counts(aligned.outside),
        "outside_unknown": int(np.isnan(aligned.outside).sum()), "max_outside": args.max_outside,
        "failures": len(aligned.problems),
    }
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    with removed_on_failure(partial):
        partial.mkdir(parents=True)
        common = {k: summary[k] for k in ("command", "source", "seed", "size", "downsampling", "split_file",
                                          "folds_identity_disjoint", "pairs_per_fold")}
        common["split"] = {p: v["identities"] for p, v in summary["parts"].items()}
        rows_of = {p: np.array([i for i, n in enumerate(aligned.identity) if part[n] == p], np.int64)
                   for p in parts_used}
        for p in parts_used:
            folder = REAL_LAYOUT[p][0]
            _write_part(partial, folder, rows_of[p], aligned, size, common)
        write_lfw_pairs(partial / "pairs.txt", pairs, view=2)
        # the written pairs read back with the library's reader and resolve to lfw/ rows
        pair_rows(PackedDataset(partial / REAL_LAYOUT["lfw"][0]), read_lfw_pairs(partial / "pairs.txt"))
        _tsv(partial / "split.tsv", ("identity", "part", "images", "fold"),
             [(n, part[n], counts[n], fold_of.get(n, "")) for n in sorted(part)])
        _tsv(partial / "images.tsv", ("key", "part", "source", "outside"),
             [(lfw_key(aligned.identity[i], aligned.number[i]), part[aligned.identity[i]], aligned.source[i],
               "" if math.isnan(aligned.outside[i]) else f"{aligned.outside[i]:.4f}")
              for i in sorted(range(len(aligned.identity)), key=lambda r: (aligned.identity[r], aligned.number[r]))])
        write_failures(partial / "failures.tsv", aligned.problems)
        atomic_write_text(partial / "openset.json", json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print_summary(out, summary, aligned.problems)
    return summary


def print_summary(out: Path, summary: dict, problems: Sequence[Problem], stream=None) -> None:
    """The end-of-run report: the split, each fold's available pairs, the questionable crops, the failures."""
    stream = sys.stderr if stream is None else stream
    for p in problems:
        line = p.message if p.path in p.message else f"{p.path}: {p.message}"
        print(f"  [{p.kind}] {printable(line)}", file=stream)
    parts = ", ".join(f"{p} {v['identities']} identities / {v['images']} images" for p, v in summary["parts"].items())
    print(f"{out}: {summary['size']} crops, seed {summary['seed']}: {parts} (split.tsv)", file=stream)
    kind = "identity-disjoint (as LFW View 2)" if summary["folds_identity_disjoint"] else (
        "NOT identity-disjoint: fewer than 20 test identities, so mismatched pairs reach into other folds")
    print(f"  pairs.txt: {FOLDS} folds, {kind}; available per fold (matched/mismatched): "
          + ", ".join(f"{f['matched_available']}/{f['mismatched_available']}" for f in summary["folds"]), file=stream)
    print(f"  pairs.txt: {summary['pairs_per_fold']} matched + {summary['pairs_per_fold']} mismatched pairs per fold "
          f"(largest feasible {summary['pairs_per_fold_feasible']}), {2 * FOLDS * summary['pairs_per_fold']} in all",
          file=stream)
    unknown = f", {summary['outside_unknown']} unknown" if summary["outside_unknown"] else ""
    print(f"  crops partly outside their image: {summary['outside_above_10pct']} above 10%, "
          f"{summary['outside_above_25pct']} above 25%{unknown} (outside.npy; --max-outside skips them); "
          f"{summary['failures']} failures (failures.tsv)", file=stream)


if __name__ == "__main__":
    cli(run)
