"""Real faces through data_prep: CelebA in the wild -> training pack, LFW -> pack + MegaFace-like split.

Small subsets of ``../shared/data`` (a few identities, a few pairs); tests needing those folders skip with the
reason when they are absent. The duplicate rule and the split rule are also checked on constructed cases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep import align, celeba, lfw, lfw_megaface, pipeline
from data_prep.mtcnn import Detections
from data_prep.pipeline import Item
from sphereface_lib.data.packed import PackedDataset
from sphereface_lib.errors import UserError

from conftest import SHARED_DATA

CELEBA = SHARED_DATA / "celeba-id7201-7499"
LFW = SHARED_DATA / "lfw-deepfunneled"
NAMES = SHARED_DATA / "protocols" / "lfw-names.txt"
#: identities holding every byte-identical copy in the CelebA folder (10 pairs across identities, 1 within 7287)
CELEBA_DUPLICATE_IDENTITIES = ("7287", "7310", "7312", "7314", "7317", "7320")
#: a few LFW people: 10+ images (probes), one image (distractors), and the one image MTCNN misses
LFW_PEOPLE = ("Bill_McBride", "Ian_Thorpe", "AJ_Cook", "AJ_Lamas", "Aaron_Eckhart", "Marilyn_Monroe")
COMMON = ["--workers", "1", "--shard-size", "8"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real faces not available: {path} is absent")
    return path


def _failures(root: Path) -> list[list[str]]:
    return [line.split("\t") for line in (root / "failures.tsv").read_text().splitlines()[1:]]


def _copy_identities(src: Path, dest: Path, names: tuple[str, ...], per_identity: int | None = None) -> Path:
    for name in names:
        (dest / name).mkdir(parents=True)
        for f in sorted((src / name).iterdir())[:per_identity]:
            shutil.copyfile(f, dest / name / f.name)
    return dest


# --- rules on constructed cases (no ../shared needed) ---------------------------------------------------------

def test_duplicates_across_identities_drop_every_copy_naming_both_keys(tmp_path: Path) -> None:
    files = {}
    for name, data in [("a/1.jpg", b"same"), ("b/7.jpg", b"same"), ("a/2.jpg", b"other"), ("c/3.jpg", b"twin"),
                       ("c/4.jpg", b"twin"), ("b/8.jpg", b"unique")]:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = Item(f"{path.parent.name}/{path.stem}", path.parent.name, str(path))
    items = list(files.values())
    digests = celeba.file_digests([it.path for it in items], tmp_path / "work" / "hashes.tsv")
    kept, problems, groups = celeba.drop_duplicates(items, digests)
    assert [it.key for it in kept] == ["a/2", "c/3", "b/8"]
    across = [p for p in problems if p.kind == "duplicate_across_identities"]
    assert sorted(p.path for p in across) == sorted([files["a/1.jpg"].path, files["b/7.jpg"].path])
    assert all("a/1" in p.message and "b/7" in p.message for p in across)
    within = [p for p in problems if p.kind == "duplicate_within_identity"]
    assert [p.path for p in within] == [files["c/4.jpg"].path]
    assert sorted((g.keys, g.across_identities) for g in groups) == [(("a/1", "b/7"), True), (("c/3", "c/4"), False)]


def test_file_digests_reuse_the_cache_and_notice_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"one")
    cache = tmp_path / "hashes.tsv"
    first = celeba.file_digests([str(path)], cache)
    forged = cache.read_text().replace(first[str(path)], "f" * 64)
    cache.write_text(forged)  # a cached digest is trusted while size and mtime match: nothing is hashed again
    assert celeba.file_digests([str(path)], cache)[str(path)] == "f" * 64
    path.write_bytes(b"two!")
    assert celeba.file_digests([str(path)], cache)[str(path)] != "f" * 64


def test_largest_face_rule_picks_the_biggest_box_not_the_central_one() -> None:
    found = Detections(np.array([[45, 45, 55, 55], [0, 0, 40, 40]], np.float32), np.array([0.99, 0.99], np.float32),
                       np.zeros((2, 5, 2), np.float32))
    assert align.central_face(found, (100, 100, 3)) == 0
    assert align.largest_face(found, (100, 100, 3)) == 1
    with pytest.raises(UserError, match="--face"):
        pipeline.PrepConfig(out=Path("x"), face="nearest")


def test_split_people_by_image_count_is_identity_disjoint(tmp_path: Path) -> None:
    names = tmp_path / "lfw-names.txt"
    names.write_text("A\t12\nB\t1\nC\t2\nD\t10\nE\t1\n")
    probes, distractors = lfw_megaface.split_people(lfw_megaface.read_image_counts(names), 10)
    assert (probes, distractors) == (["A", "D"], ["B", "E"])
    names.write_text("A\t12\nB\tone\n")
    with pytest.raises(UserError, match="line 2"):
        lfw_megaface.read_image_counts(names)


# --- real subsets ---------------------------------------------------------------------------------------------

def test_real_celeba_folder_has_ten_duplicates_across_identities(tmp_path: Path) -> None:
    from data_prep.folders import list_folders

    items, _ = list_folders(_need(CELEBA))
    kept, problems, groups = celeba.drop_duplicates(items, celeba.file_digests([it.path for it in items],
                                                                             tmp_path / "h.tsv"))
    across = [g for g in groups if g.across_identities]
    assert len(across) == 10 and len(groups) == 11  # as ../shared/README.md states: 11 pairs, 10 across identities
    assert {k.split("/")[0] for g in groups for k in g.keys} == set(CELEBA_DUPLICATE_IDENTITIES)
    assert len(items) - len(kept) == 21 == len(problems)


def test_celeba_subset_drops_duplicates_lists_misses_and_reports(tmp_path: Path, mtcnn_weights) -> None:
    src = _copy_identities(_need(CELEBA), tmp_path / "src", ("7287", "7314"), per_identity=None)
    (src / "7341").mkdir()
    dup = sorted((src / "7314").iterdir())[0]
    shutil.copyfile(dup, src / "7341" / "copy.jpg")  # one photo under a third identity too
    (src / "7341" / "broken.jpg").write_bytes(b"not a photo")  # listed, the run goes on
    out = tmp_path / "pack"
    result = celeba.run(["--src", str(src), "--out", str(out), *COMMON])
    ds = PackedDataset(out)
    rows = _failures(out)
    dup_key = f"7314/{int(dup.stem)}"
    across = [r for r in rows if r[1] == "duplicate_across_identities"]
    assert {Path(r[0]).name for r in across} >= {dup.name, "copy.jpg"}
    assert all(dup_key in r[2] and "7341/copy" in r[2] for r in across if Path(r[0]).name in (dup.name, "copy.jpg"))
    assert dup_key not in ds.keys and "7341/copy" not in ds.keys
    assert "7287/48009" not in ds.keys and "7287/30507" in ds.keys  # the within-identity copy keeps its first key
    report = json.loads((out / "prep_report.json").read_text())
    assert report["counts"]["images"] == len(ds) and report["counts"]["missed"] == len(report["missed"])
    outside = np.load(out / "outside.npy")
    assert report["counts"]["partial"] == int((outside > 0.10).sum()) == len(report["partial_faces"])
    assert report["throughput"]["detected"] == result.counts["listed"] and report["throughput"]["images_per_s"] > 0
    assert ds.manifest.extra["face"] == "largest" and ds.manifest.extra["min_face_size"] == 12
    assert [r[1] for r in rows if Path(r[0]).name == "broken.jpg"] == ["unreadable"]
    # 7314's real twins are under 7312, not copied here: ours is the one group across identities
    assert report["duplicates"]["duplicate_groups_across_identities"] == 1
    assert report["duplicates"]["duplicate_files_dropped"] == 3


def test_celeba_resumes_after_an_interruption_without_redoing_finished_shards(tmp_path: Path, mtcnn_weights,
                                                                              monkeypatch) -> None:
    src = _copy_identities(_need(CELEBA), tmp_path / "src", ("7341", "7342", "7376", "7412", "7414"))
    out, work = tmp_path / "pack", tmp_path / "work"
    args = ["--src", str(src), "--out", str(out), "--work-dir", str(work), "--keep-work", "--workers", "1",
            "--shard-size", "4"]
    done = []
    real = pipeline._process_shard

    def killed_after_two(task):
        if len(done) == 2:
            raise KeyboardInterrupt  # as if the run were killed half way
        done.append(real(task))
        return done[-1]

    monkeypatch.setattr(pipeline, "_process_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        celeba.run(args)
    assert not out.exists() and (work / celeba.HASHES_NAME).is_file()
    stamps = {n: (work / n).stat().st_mtime_ns for n in done}
    monkeypatch.setattr(pipeline, "_process_shard", real)
    celeba.run(args)
    assert all((work / n).stat().st_mtime_ns == t for n, t in stamps.items())  # finished shards were not redone
    report = json.loads((out / "prep_report.json").read_text())
    assert report["throughput"]["reused"] == 8 and report["throughput"]["detected"] == 10 - 8
    fresh = tmp_path / "fresh"
    celeba.run(["--src", str(src), "--out", str(fresh), "--workers", "1", "--shard-size", "4"])
    np.testing.assert_array_equal(np.asarray(PackedDataset(out).images), np.asarray(PackedDataset(fresh).images))


def _lfw_subset(tmp_path: Path) -> tuple[Path, Path, Path]:
    src = _copy_identities(_need(LFW), tmp_path / "lfw", LFW_PEOPLE)
    names = tmp_path / "lfw-names.txt"
    names.write_text("".join(line + "\n" for line in _need(NAMES).read_text().splitlines()
                             if line.split("\t")[0] in LFW_PEOPLE))
    # real View 2 lines (pairs.txt) of these people: 2 matched, 2 mismatched, in one fold
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t2\nMarilyn_Monroe\t1\t2\nIan_Thorpe\t1\t3\nAJ_Cook\t1\tBill_McBride\t2\n"
                     "Aaron_Eckhart\t1\tIan_Thorpe\t4\n")
    return src, names, pairs


def test_lfw_subset_lists_the_image_mtcnn_misses_and_splits_megaface_like(tmp_path: Path, mtcnn_weights) -> None:
    src, names, pairs = _lfw_subset(tmp_path)
    data = tmp_path / "data"
    lfw.run(["--src", str(src), "--pairs", str(pairs), "--out", str(data / "lfw"), *COMMON])
    rows = _failures(data / "lfw")
    assert [Path(r[0]).name for r in rows if r[1] == "no_face"] == ["Marilyn_Monroe_0001.jpg"]
    assert [Path(r[0]).name for r in rows if r[1] == "pairs_missing"] == ["pairs.txt:2"]
    report = json.loads((data / "lfw" / "prep_report.json").read_text())
    assert [Path(p).name for p in report["missed"]] == ["Marilyn_Monroe_0001.jpg"]

    summary = lfw_megaface.run(["--lfw", str(data / "lfw"), "--names", str(names), "--out", str(data)])
    probe = PackedDataset(data / lfw_megaface.PROBE_FOLDER)
    distractors = PackedDataset(data / lfw_megaface.DISTRACTOR_FOLDER)
    assert probe.identities == ["Bill_McBride", "Ian_Thorpe"] and len(probe) == 20
    assert distractors.identities == ["AJ_Cook", "AJ_Lamas", "Aaron_Eckhart"] and len(distractors) == 3
    assert not set(probe.identities) & set(distractors.identities)
    assert "Marilyn_Monroe" not in probe.identities + distractors.identities  # two images: neither part
    source = PackedDataset(data / "lfw")
    for part in (probe, distractors):  # the crops are the LFW pack's, not detected again
        for i, key in enumerate(part.keys):
            np.testing.assert_array_equal(part.images[i], source.images[source.index_of(key)])
    assert summary["distractors"] == 3 and summary["probe_people"] == 2
    with pytest.raises(UserError, match="--overwrite"):
        lfw_megaface.run(["--lfw", str(data / "lfw"), "--names", str(names), "--out", str(data)])


def test_real_lfw_names_give_158_probe_people_and_4069_one_image_distractors() -> None:
    counts = lfw_megaface.read_image_counts(_need(NAMES))
    probes, distractors = lfw_megaface.split_people(counts, 10)
    assert (len(probes), len(distractors)) == (158, 4069)
    assert sum(counts[p] for p in probes) == 4324 and sum(counts.values()) == 13233
    assert not set(probes) & set(distractors)
