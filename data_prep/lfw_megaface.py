"""A MegaFace-like identification set from LFW alone, cut from an aligned LFW pack (no image is detected twice).

    python -m data_prep.lfw_megaface --lfw DATA/lfw --names lfw-names.txt --out DATA

MegaFace (Kemelmacher-Shlizerman et al., CVPR 2016; SphereFace Table 5) pairs a probe set of known people with
distractors of one photo each. Here both come from LFW (Huang et al. 2007), as its own ``lfw-names.txt`` counts
each person's images:

* ``DATA/megaface_probe/``: every person with at least ``--probe-min-images`` images (default 10: 158 people,
  4,324 images in LFW), each aligned image of theirs;
* ``DATA/megaface_distractors/``: every person with exactly one image (4,069 in LFW), that image.

A person is in one set or the other by their image count, so the two are identity-disjoint by construction
(checked before anything is written). The crops are copied from ``--lfw`` (a pack written by
:mod:`data_prep.lfw`), with their ``outside.npy`` and ``landmarks.npy`` rows; images that pack lacks (no face
found) are counted and named in the manifests (``probe_images_missing``, ``distractors_missing``). This is the
layout ``REAL_LAYOUT`` of :mod:`sphereface_lib.companion.experiments` reads. ``DATA/megaface_split.tsv`` lists,
per probe or distractor person, their LFW image count, part and aligned images. These people also appear in
LFW's View 2 pairs: train on another set (CelebA, CASIA-WebFace), never on LFW, for both tests to hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from sphereface_lib.data.packed import PackedDataset, PackedWriter, atomic_write_text
from sphereface_lib.errors import UserError

from .pipeline import check_out, cli, command_line, outside_counts, require_dir, require_file, read_utf8

PROBE_FOLDER, DISTRACTOR_FOLDER = "megaface_probe", "megaface_distractors"
SPLIT_NAME = "megaface_split.tsv"
_CHUNK = 1024


def read_image_counts(names_file: Path) -> dict[str, int]:
    """Person -> number of images, from LFW's ``lfw-names.txt`` (``<Name>\\t<count>`` per line)."""
    counts: dict[str, int] = {}
    for no, line in enumerate(read_utf8(names_file, "--names").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise UserError(f"--names {names_file}, line {no}: expected '<Name> <number of images>', got {line!r}; "
                            "give LFW's lfw-names.txt")
        if fields[0] in counts:
            raise UserError(f"--names {names_file}, line {no}: {fields[0]} is listed twice")
        counts[fields[0]] = int(fields[1])
    return counts


def split_people(counts: dict[str, int], probe_min_images: int) -> tuple[list[str], list[str]]:
    """(probe people: at least ``probe_min_images`` images, distractor people: exactly one image), sorted."""
    probes = sorted(n for n, c in counts.items() if c >= probe_min_images)
    distractors = sorted(n for n, c in counts.items() if c == 1)
    if set(probes) & set(distractors):  # impossible while probe_min_images >= 2
        raise RuntimeError(f"probe and distractor people overlap: {sorted(set(probes) & set(distractors))[:5]}")
    return probes, distractors


def _check_pack_against_counts(lfw: PackedDataset, counts: dict[str, int], names_file: Path) -> np.ndarray:
    """Per image of ``lfw``, its person's LFW image count; a person or an image count ``--names`` contradicts
    is a :class:`UserError` naming both files."""
    aligned = np.bincount(lfw.labels, minlength=len(lfw.identities))
    for person, n in zip(lfw.identities, aligned.tolist()):
        if person not in counts:
            raise UserError(f"--lfw {lfw.root}: {person} is not in --names {names_file}; give the lfw-names.txt of "
                            "the LFW release the pack was made from")
        if n > counts[person]:
            raise UserError(f"--lfw {lfw.root}: {n} images of {person}, but --names {names_file} counts "
                            f"{counts[person]}; give the lfw-names.txt of the LFW release the pack was made from")
    return np.array([counts[p] for p in lfw.identities], np.int64)[lfw.labels]


def _write_pack(root: Path, lfw: PackedDataset, rows: np.ndarray, people: list[str], extra: dict) -> PackedDataset:
    """A pack of ``lfw``'s ``rows`` (identities ``people``, sorted), with their outside and landmark rows."""
    label = {p: i for i, p in enumerate(people)}
    outside = np.load(lfw.root / "outside.npy")[rows] if (lfw.root / "outside.npy").is_file() else None
    landmarks = np.load(lfw.root / "landmarks.npy")[rows] if (lfw.root / "landmarks.npy").is_file() else None
    m = lfw.manifest
    writer = PackedWriter(root, height=m.height, width=m.width, channels=m.channels, source=root.name,
                          identities=people, overwrite=True,
                          extra={**extra, **(outside_counts(outside) if outside is not None else {})})
    try:
        for s in range(0, len(rows), _CHUNK):
            chunk = rows[s:s + _CHUNK]
            writer.add(np.asarray(lfw.images[chunk]), [label[lfw.identities[i]] for i in lfw.labels[chunk]],
                       [lfw.keys[i] for i in chunk])
        if outside is not None:
            np.save(writer.partial / "outside.npy", outside)
        if landmarks is not None:
            np.save(writer.partial / "landmarks.npy", landmarks)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def run(argv: Sequence[str] | None = None) -> dict:
    """Command line: see the module docstring and ``--help``; a user's mistake raises ``UserError``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.lfw_megaface", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", required=True, type=Path, help="aligned LFW pack written by data_prep.lfw")
    parser.add_argument("--names", required=True, type=Path, help="LFW's lfw-names.txt ('<Name> <count>' per line)")
    parser.add_argument("--out", required=True, type=Path,
                        help=f"data folder that receives {PROBE_FOLDER}/, {DISTRACTOR_FOLDER}/ and {SPLIT_NAME}")
    parser.add_argument("--probe-min-images", type=int, default=10,
                        help="probe people have at least this many LFW images (default 10, at least 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing probe and distractor packs")
    args = parser.parse_args(argv)
    if args.probe_min_images < 2:
        raise UserError(f"--probe-min-images must be >= 2 (a probe person needs a gallery image and a probe), "
                        f"got {args.probe_min_images}")
    require_dir(args.lfw, "--lfw")
    lfw = PackedDataset(args.lfw)
    counts = read_image_counts(require_file(args.names, "--names"))
    for folder in (PROBE_FOLDER, DISTRACTOR_FOLDER):
        check_out(args.out / folder, args.overwrite)
    image_count = _check_pack_against_counts(lfw, counts, args.names)
    probes, distractors = split_people(counts, args.probe_min_images)
    probe_rows = np.flatnonzero(image_count >= args.probe_min_images)
    distractor_rows = np.flatnonzero(image_count == 1)
    aligned = np.bincount(lfw.labels, minlength=len(lfw.identities))
    aligned_of = dict(zip(lfw.identities, aligned.tolist()))
    probe_people = [p for p in probes if aligned_of.get(p, 0) >= 2]
    probe_rows = probe_rows[np.isin(np.asarray(lfw.identities)[lfw.labels[probe_rows]], probe_people)]
    distractor_people = [p for p in distractors if aligned_of.get(p, 0) == 1]
    summary = {
        "rule": f"probes: LFW people with >= {args.probe_min_images} images; distractors: LFW people with exactly "
                "one image; identity-disjoint by construction",
        "probe_people": len(probe_people), "probe_images": int(len(probe_rows)),
        "probe_people_in_lfw": len(probes),
        "probe_images_missing": sum(counts[p] - aligned_of.get(p, 0) for p in probes),
        "probe_people_dropped": [p for p in probes if aligned_of.get(p, 0) < 2],
        "distractors": len(distractor_people), "distractors_in_lfw": len(distractors),
        "distractors_missing": [p for p in distractors if aligned_of.get(p, 0) == 0],
        "lfw_pack": str(args.lfw), "names": str(args.names),
        "command": command_line("data_prep.lfw_megaface", argv),
    }
    if set(probe_people) & set(distractor_people):
        raise RuntimeError("probe and distractor people overlap")  # a bug: the split is by image count
    args.out.mkdir(parents=True, exist_ok=True)
    _write_pack(args.out / PROBE_FOLDER, lfw, probe_rows, probe_people, {**summary, "part": "probe"})
    _write_pack(args.out / DISTRACTOR_FOLDER, lfw, distractor_rows, distractor_people,
                {**summary, "part": "distractors"})
    rows = [(p, counts[p], "probe", aligned_of.get(p, 0)) for p in probes] + \
           [(p, 1, "distractor", aligned_of.get(p, 0)) for p in distractors]
    atomic_write_text(args.out / SPLIT_NAME, "identity\tlfw_images\tpart\taligned\n"
                      + "".join(f"{p}\t{n}\t{part}\t{a}\n" for p, n, part, a in rows))
    print(f"{args.out}: {PROBE_FOLDER}/ {len(probe_people)} people, {len(probe_rows)} images "
          f"(LFW people with >= {args.probe_min_images} images: {len(probes)}, "
          f"{summary['probe_images_missing']} of their images not aligned); {DISTRACTOR_FOLDER}/ "
          f"{len(distractor_people)} of the {len(distractors)} one-image people "
          f"({len(summary['distractors_missing'])} not aligned); identity-disjoint ({SPLIT_NAME})", file=sys.stderr)
    return summary


if __name__ == "__main__":
    cli(run)
