"""data_prep: alignment maths, and each dataset layout (built here, with broken files) through its command."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import align, casia, folders, lfw, megaface, ytf
from data_prep.mtcnn import nms
from data_prep.pipeline import cli, read_rgb
from sphereface_lib.data.packed import PackedDataset
from sphereface_lib.errors import UserError

from conftest import PROJECT, SHARED_DATA


def _synthetic_face(rng: np.random.Generator) -> np.ndarray:
    """A grey 112x92 cartoon face (used only when the AT&T faces are absent)."""
    img = np.full((112, 92), 90, np.uint8)
    cx, cy = 46 + rng.integers(-3, 4), 58 + rng.integers(-3, 4)
    cv2.ellipse(img, (int(cx), int(cy)), (30, 40), 0, 0, 360, 190, -1)
    for dx in (-12, 12):
        cv2.circle(img, (int(cx + dx), int(cy - 10)), 4, 30, -1)
    cv2.line(img, (int(cx), int(cy - 4)), (int(cx), int(cy + 8)), 120, 2)
    cv2.ellipse(img, (int(cx), int(cy + 20)), (10, 4), 0, 0, 180, 40, 2)
    return img


_ATT = SHARED_DATA / "att_faces"
_REAL_FACES = (_ATT / "s1" / "1.pgm").is_file()


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """Nine grey face images: real AT&T crops where present, else synthetic faces."""
    root = _ATT
    if _REAL_FACES:
        return [cv2.imread(str(root / f"s{p}" / f"{i}.pgm"), cv2.IMREAD_GRAYSCALE) for p in (1, 2, 3) for i in (1, 2, 3)]
    rng = np.random.default_rng(0)
    return [_synthetic_face(rng) for _ in range(9)]


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _broken_files(folder: Path, img: np.ndarray) -> dict[str, Path]:
    """A truncated JPEG, a file of garbage named .jpg, a text file and a faceless image in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img)
    paths = {"truncated": folder / "truncated.jpg", "garbage": folder / "garbage.jpg",
             "text": folder / "notes.txt", "blank": folder / "blank.png"}
    paths["truncated"].write_bytes(buf.tobytes()[: len(buf) // 2])
    paths["garbage"].write_bytes(b"this is not an image at all")
    paths["text"].write_text("not an image\n")
    _write(paths["blank"], np.full((112, 92), 128, np.uint8))
    return paths


def _failures(root: Path) -> list[list[str]]:
    return [line.split("\t") for line in (root / "failures.tsv").read_text().splitlines()[1:]]


COMMON = ["--workers", "1", "--shard-size", "4"]


# --- alignment maths -------------------------------------------------------------------------------------

def test_similarity_maps_transformed_template_back_exactly() -> None:
    theta, s, t = np.deg2rad(17), 1.7, np.array([40.0, -12.0])
    rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    landmarks = align.TEMPLATE @ rot.T + t
    tform = align.similarity_to_template(landmarks)
    np.testing.assert_allclose(tform(landmarks), align.TEMPLATE, atol=1e-9)


def test_warp_puts_marked_points_on_template() -> None:
    theta, s, t = np.deg2rad(-10), 2.0, np.array([30.0, 20.0])
    rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    landmarks = align.TEMPLATE @ rot.T + t
    image = np.zeros((300, 300), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, 255, -1)
    crop = align.warp_to_template(image, landmarks)
    assert crop.shape == (112, 96)
    for x, y in align.TEMPLATE:
        assert crop[int(round(y)), int(round(x))] > 200  # each marked landmark lands on its template spot


def test_degenerate_landmarks_are_rejected() -> None:
    with pytest.raises(ValueError, match="five finite"):
        align.similarity_to_template(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        align.similarity_to_template(np.ones((5, 2)))


def test_centre_crop_keeps_aspect_and_size() -> None:
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 150 - 43:150 + 43] = 255  # the centred 112:96 region of a 100-high image is 86 wide
    out = align.centre_crop(img)
    assert out.shape == (112, 96, 3) and out[:, 2:-2].min() == 255


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float64)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5)
    assert keep.tolist() == [1, 2]


def test_read_rgb_names_broken_files(tmp_path: Path) -> None:
    paths = _broken_files(tmp_path, np.full((60, 50), 100, np.uint8))
    for kind in ("truncated", "garbage"):
        with pytest.raises(OSError, match=str(paths[kind].name)):
            read_rgb(str(paths[kind]))
    with pytest.raises(OSError, match="file not found"):
        read_rgb(str(tmp_path / "absent.jpg"))


# --- dataset layouts ----------------------------------------------------------------------------------------

def test_folders_layout_with_broken_files(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    for i, img in enumerate(faces[:6]):
        _write(src / f"person{i // 3}" / f"img{i % 3}.png", img)
    (src / "empty_person").mkdir()
    bad = _broken_files(src / "person0", faces[0])
    out = tmp_path / "pack"
    result = folders.run(["--src", str(src), "--out", str(out), "--on-miss", "skip", *COMMON])
    ds = PackedDataset(out)
    # Six faces: all found when they are real AT&T faces (synthetic ones may be missed); broken files never are.
    assert len(ds) == result.counts["aligned"] <= 6
    if _REAL_FACES:
        assert len(ds) == 6 and ds.identities == ["person0", "person1"]
    assert all(k.split("/")[1].startswith("img") for k in ds.keys)
    rows = {Path(r[0]).name: r[1] for r in _failures(out)}
    assert rows["truncated.jpg"] == "unreadable" and rows["garbage.jpg"] == "unreadable"
    assert rows["notes.txt"] == "unsupported_format" and rows["empty_person"] == "empty_identity"
    assert rows["blank.png"] == "no_face"
    extra = ds.manifest.extra
    assert extra["failures_by_kind"]["unreadable"] == 2 and extra["listed"] == 9
    assert extra["command"].startswith("python -m data_prep.folders --src")
    assert str(bad["garbage"]) in (out / "failures.tsv").read_text()


def test_folders_resume_reuses_shards_and_repeats_bit_for_bit(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    for i, img in enumerate(faces):
        _write(src / f"p{i // 3}" / f"{i}.pgm", img)
    out, work = tmp_path / "pack", tmp_path / "work"
    args = ["--src", str(src), "--out", str(out), "--work-dir", str(work), "--on-miss", "centre",
            "--keep-work", "--shard-size", "2", "--workers", "1"]
    folders.run(args)
    first = np.array(PackedDataset(out).images)
    shards = sorted(work.glob("shard-*.npz"))
    assert len(shards) == 5
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[2].unlink()  # as if the run had been interrupted before this shard finished
    with pytest.raises(UserError, match="--overwrite"):
        folders.run(args)
    folders.run([*args, "--overwrite"])
    again = sorted(work.glob("shard-*.npz"))
    assert [p.name for p in again] == [p.name for p in shards]
    assert sum(p.stat().st_mtime_ns != stamps[p.name] for p in again) == 1  # only the lost shard was redone
    np.testing.assert_array_equal(np.array(PackedDataset(out).images), first)
    assert len(first) == 9  # centre-crop policy keeps every readable image


def test_lfw_layout_keys_pairs_and_missing_entries(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "lfw"
    names = ["Ann_Lee", "Bo_Chan"]
    for i, img in enumerate(faces[:6]):
        name = names[i // 3]
        _write(src / name / f"{name}_{i % 3 + 1:04d}.jpg", cv2.resize(img, (250, 250)))
    _write(src / "Bo_Chan" / "wrongname.jpg", faces[0])
    pairs = tmp_path / "pairs.txt"  # View 2: 1 fold of 2 matched + 2 mismatched pairs
    pairs.write_text("1\t2\nAnn_Lee\t1\t2\nBo_Chan\t1\t9\nAnn_Lee\t1\tBo_Chan\t3\nAnn_Lee\t2\tBo_Chan\t1\n")
    dev_train = tmp_path / "pairsDevTrain.txt"  # View 1: a single count in the header
    dev_train.write_text("1\nAnn_Lee\t1\t3\n\nAnn_Lee\t2\tBo_Chan\t4\n")  # a blank line does not shift line numbers
    dev_test = tmp_path / "pairsDevTest.txt"  # malformed: line 3 is no pair
    dev_test.write_text("1\nAnn_Lee\t1\t2\nAnn_Lee\tone\n")
    out = tmp_path / "pack"
    lfw.run(["--src", str(src), "--pairs", str(pairs), str(dev_train), str(dev_test), "--out", str(out),
              "--on-miss", "centre", *COMMON])
    ds = PackedDataset(out)
    assert ds.keys == [f"{n}/{j:04d}" for n in names for j in (1, 2, 3)]
    assert ds.identities == names and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert (out / "pairs.txt").read_text() == pairs.read_text()
    assert (out / "pairsDevTest.txt").read_text() == dev_test.read_text()
    rows = _failures(out)
    kinds = {(Path(r[0]).name, r[1]) for r in rows}
    assert ("pairs.txt:3", "pairs_missing") in kinds  # Bo_Chan 9 does not exist
    assert ("pairsDevTrain.txt:4", "pairs_missing") in kinds  # nor Bo_Chan 4
    bad = [r for r in rows if r[1] == "bad_pairs_file"]
    assert len(bad) == 1 and Path(bad[0][0]).name == "pairsDevTest.txt" and "line 3" in bad[0][2]
    assert ("wrongname.jpg", "bad_name") in kinds
    assert ds.manifest.extra["failures_by_kind"]["pairs_missing"] == 2


def test_lfw_check_pairs_reads_both_views(tmp_path: Path) -> None:
    view1 = tmp_path / "pairsDevTest.txt"
    view1.write_text("1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Chan\t1\n")
    assert lfw.check_pairs(view1, {"Ann_Lee/0001", "Ann_Lee/0002", "Bo_Chan/0001"}) == []
    missing = lfw.check_pairs(view1, {"Ann_Lee/0001", "Ann_Lee/0002"})
    assert [(p.path, p.kind) for p in missing] == [(f"{view1}:3", "pairs_missing")]
    short = tmp_path / "pairs.txt"
    short.write_text("2\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Chan\t1\n")  # header announces 4 pair lines
    (problem,) = lfw.check_pairs(short, set())
    assert problem.kind == "bad_pairs_file" and problem.path == str(short) and "announces 4" in problem.message


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt"])
def test_lfw_check_pairs_accepts_the_real_files(protocols_dir: Path, name: str) -> None:
    missing = lfw.check_pairs(protocols_dir / name, set())
    assert missing and {p.kind for p in missing} == {"pairs_missing"}
    lines = len((protocols_dir / name).read_text().splitlines())
    assert missing[0].path.endswith(f"{name}:2") and missing[-1].path.endswith(f"{name}:{lines}")


def test_lfw_wrong_paths_exit_with_the_path_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--src .*nowhere"):
        lfw.run(["--src", str(tmp_path / "nowhere"), "--pairs", "x", "--out", str(tmp_path / "o")])
    (tmp_path / "lfw").mkdir()
    with pytest.raises(UserError, match="--pairs .*missing.txt"):
        lfw.run(["--src", str(tmp_path / "lfw"), "--pairs", str(tmp_path / "missing.txt"),
                  "--out", str(tmp_path / "o")])


def test_casia_layout_removes_lfw_identities(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "CASIA-WebFace"
    for i, img in enumerate(faces):
        _write(src / f"{i // 3 + 100:07d}" / f"{i % 3 + 1:03d}.jpg", img)
    (src / "names.txt").write_text("0000100 Ann_Lee\n0000101 Zed Zone\n0000102 Bo_Chan\n")
    lfw_names = tmp_path / "lfw-names.txt"
    lfw_names.write_text("Ann_Lee\t3\nzed_zone\t1\n")
    out = tmp_path / "pack"
    casia.run(["--src", str(src), "--names", str(src / "names.txt"), "--lfw-names", str(lfw_names),
                "--out", str(out), "--on-miss", "centre", *COMMON])
    ds = PackedDataset(out)
    assert ds.identities == ["0000102"] and len(ds) == 3
    table = (out / "excluded_identities.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in table[1:]] == ["0000100", "0000101"]
    assert ds.manifest.extra["excluded_identities"] == 2
    with pytest.raises(UserError, match="inflates LFW accuracy"):
        casia.run(["--src", str(src), "--out", str(tmp_path / "o2")])


def test_ytf_layout_frame_keys_and_splits(tmp_path: Path, faces, mtcnn_weights) -> None:
    db = tmp_path / "YouTubeFaces" / "frame_images_DB"
    for j, frame in enumerate((5, 12, 100)):  # numeric order differs from the names' text order
        _write(db / "Ann_Lee" / "0" / f"0.{frame}.jpg", faces[j])
    _write(db / "Bo_Chan" / "1" / "1.7.jpg", faces[3])
    (db / "Bo_Chan" / "2").mkdir(parents=True)
    splits = tmp_path / "splits.csv"
    splits.write_text("split,video_a,video_b,same\n1,Ann_Lee/0,Bo_Chan/1,0\n1,Bo_Chan/1,Bo_Chan/2,1\n")
    out = tmp_path / "pack"
    ytf.run(["--src", str(db.parent), "--splits", str(splits), "--out", str(out), "--on-miss", "centre",
              "--frames-per-video", "2", *COMMON])
    ds = PackedDataset(out)
    assert ds.keys == ["Ann_Lee/0/0001", "Ann_Lee/0/0003", "Bo_Chan/1/0001"]
    assert ds.manifest.extra["videos"] == 2 and ds.manifest.extra["listed"] == 3
    assert (out / "ytf_splits.csv").read_text() == splits.read_text()
    kinds = {(Path(r[0]).name, r[1]) for r in _failures(out)}
    assert ("2", "empty_video") in kinds and ("splits.csv:3", "splits_missing") in kinds


def test_ytf_check_splits_reads_official_splits_and_reports_a_bad_file(tmp_path: Path) -> None:
    keys = {"Ann_Lee/0/0001", "Bo_Chan/1/0001"}
    official = tmp_path / "splits.txt"  # the layout the YTF site ships, with a blank line inside
    official.write_text("split number, pair number, first name, second name, is same person, is same video\n"
                        "1, 1, Ann_Lee/0, Bo_Chan/1, 0, 0\n\n1, 2, Bo_Chan/1, Bo_Chan/2, 1, 0\n")
    found = [(Path(p.path).name, p.kind) for p in ytf.check_splits(official, keys)]
    assert found == [("splits.txt:4", "splits_missing")]  # Bo_Chan/2 has no frame
    csv_file = tmp_path / "splits.csv"
    csv_file.write_text("split,video_a,video_b,same\n\n1,Ann_Lee/0,Bo_Chan/1,0\n1,Cy_Dee/3,Bo_Chan/1,0\n")
    assert [p.path for p in ytf.check_splits(csv_file, keys)] == [f"{csv_file}:4"]
    for text in ("video_a,video_b\nAnn_Lee/0,Bo_Chan/1\n", "split,video_a,video_b,same\n1,Ann_Lee/0,Bo_Chan/1\n"):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        (problem,) = ytf.check_splits(bad, keys)
        assert problem.kind == "bad_splits_file" and problem.path == str(bad) and str(bad) in problem.message


def test_megaface_lists_probe_and_distractors(tmp_path: Path, faces, mtcnn_weights) -> None:
    root = tmp_path / "facescrub"
    for i, img in enumerate(faces[:4]):
        _write(root / f"Actor_{i // 2}" / f"Actor_{i // 2}_{i}.png", img)
    probe_list = tmp_path / "facescrub_features_list.json"
    paths = [f"Actor_{i // 2}/Actor_{i // 2}_{i}.png" for i in range(4)] + ["Actor_9/absent.png"]
    probe_list.write_text(json.dumps({"id": ["A0", "A0", "A1", "A1", "A9"], "path": paths}))
    out = tmp_path / "probe"
    megaface.run(["--set", "probe", "--root", str(root), "--list", str(probe_list), "--out", str(out),
                   "--on-miss", "centre", *COMMON])
    ds = PackedDataset(out)
    assert ds.identities == ["A0", "A1"] and ds.keys[0] == "Actor_0/Actor_0_0"
    assert (out / probe_list.name).is_file()
    assert [r[1] for r in _failures(out)].count("missing_file") == 1
    text_list = tmp_path / "distractors.txt"
    text_list.write_text("Actor_0/Actor_0_0.png\nActor_1/Actor_1_2.png\n")
    ds2 = megaface.run(["--set", "distractors", "--root", str(root), "--list", str(text_list),
                         "--out", str(tmp_path / "distractors"), "--on-miss", "centre", *COMMON]).dataset
    assert ds2.identities == ["Actor_0", "Actor_1"] and ds2.manifest.extra["set"] == "distractors"


# --- robustness: deep images, bad names, torn shards, a user's mistakes --------------------------------------

def _user_error(capsys, monkeypatch, run, argv: list[str]) -> str:
    """The one ``error:`` line a command prints for ``argv`` through its ``__main__`` path (exit status 2)."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli(run)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_read_rgb_scales_16_bit_and_float_images_by_their_range(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 1, 64), (48, 1))
    deep = {"grey16.png": (ramp * 4000 + 100).astype(np.uint16),  # 12-bit data in a 16-bit file
            "colour16.png": np.dstack([(ramp * 65535).astype(np.uint16)] * 3),
            "float.tif": (ramp * 0.5 - 0.2).astype(np.float32),
            "colour_float.tif": np.dstack([ramp.astype(np.float32)] * 3)}
    for name, pixels in deep.items():
        _write(tmp_path / name, pixels)
        rgb = read_rgb(str(tmp_path / name))
        assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3), name
        # the ramp survives: black at the left, white at the right, monotone (not all white, not all black)
        assert rgb[:, 0].max() <= 2 and rgb[:, -1].min() >= 253, name
        assert np.all(np.diff(rgb[0, :, 0].astype(int)) >= 0), name
    nan = np.full((8, 8), np.nan, np.float32)
    _write(tmp_path / "nan.tif", nan)
    with pytest.raises(OSError, match="nan.tif.*non-finite"):
        read_rgb(str(tmp_path / "nan.tif"))


def test_folders_16_bit_faces_are_aligned_not_white(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    for i, img in enumerate(faces[:2]):
        _write(src / "p16" / f"{i + 1}.png", img.astype(np.uint16) * 257)
        lo, hi = int(img.min()), int(img.max())  # 16-bit pixels are scaled from their own range to 0..255
        _write(src / "p8" / f"{i + 1}.png", np.rint((img - lo) * 255.0 / (hi - lo)).astype(np.uint8))
    out = tmp_path / "pack"
    result = folders.run(["--src", str(src), "--out", str(out), "--on-miss", "centre", *COMMON])
    ds = PackedDataset(out)
    assert ds.keys == ["p16/0001", "p16/0002", "p8/0001", "p8/0002"] and result.counts["failures"] == 0
    np.testing.assert_array_equal(np.array(ds.images[:2]), np.array(ds.images[2:]))  # as 8-bit
    assert np.array(ds.images).mean() < 200


def test_names_that_are_not_utf8_are_failures_and_the_run_goes_on(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    _write(src / "good" / "1.png", faces[0])
    png = cv2.imencode(".png", faces[1])[1].tobytes()
    os.mkdir(bytes(src) + b"/caf\xe9")  # Latin-1 names, as an old archive unpacks them
    Path(os.fsdecode(bytes(src) + b"/caf\xe9/1.png")).write_bytes(png)
    Path(os.fsdecode(bytes(src) + b"/good/\xff\xfe.png")).write_bytes(png)
    out = tmp_path / "pack"
    result = folders.run(["--src", str(src), "--out", str(out), "--on-miss", "centre", *COMMON])
    assert PackedDataset(out).keys == ["good/0001"]
    rows = _failures(out)
    assert sorted(r[1] for r in rows) == ["bad_name", "bad_name"] and result.counts["failures"] == 2
    assert any(r[0].endswith("caf\\xe9") for r in rows) and any(r[0].endswith("\\xff\\xfe.png") for r in rows)


def test_a_truncated_shard_is_recomputed(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    for i, img in enumerate(faces[:4]):
        _write(src / f"p{i // 2}" / f"{i % 2 + 1}.pgm", img)
    out, work = tmp_path / "pack", tmp_path / "work"
    args = ["--src", str(src), "--out", str(out), "--work-dir", str(work), "--on-miss", "centre", "--keep-work",
            "--shard-size", "2", "--workers", "1"]
    folders.run(args)
    first = np.array(PackedDataset(out).images)
    shard = sorted(work.glob("shard-*.npz"))[1]
    shard.write_bytes(shard.read_bytes()[:100])  # torn, as by a full disk
    folders.run([*args, "--overwrite"])
    np.testing.assert_array_equal(np.array(PackedDataset(out).images), first)
    assert len(np.load(shard)["images"]) == 2


def test_outside_fraction_is_stored_counted_and_can_skip(tmp_path: Path, faces, mtcnn_weights) -> None:
    src = tmp_path / "src"
    for i, img in enumerate(faces[:3]):
        _write(src / "p" / f"{i + 1}.png", img)
    out = tmp_path / "pack"
    folders.run(["--src", str(src), "--out", str(out), *COMMON])
    ds = PackedDataset(out)
    outside = np.load(out / "outside.npy")
    assert outside.shape == (len(ds),) and np.all((outside >= 0) & (outside <= 1))
    assert ds.manifest.extra["outside_above_10pct"] == int(np.sum(outside > 0.10))
    if len(ds):
        limit = float(outside.min()) + 1e-6
        folders.run(["--src", str(src), "--out", str(out), "--overwrite", "--max-outside", str(limit), *COMMON])
        skipped = [r for r in _failures(out) if r[1] == "outside"]
        assert len(skipped) == int(np.sum(outside > limit)) and len(PackedDataset(out)) == len(ds) - len(skipped)


def test_outside_fraction_of_a_crop_half_off_the_image() -> None:
    assert align.outside_fraction(align.TEMPLATE, (112, 96)) == 0.0
    assert align.outside_fraction(align.TEMPLATE, (56, 96)) == pytest.approx(0.5)
    assert align.outside_fraction(align.TEMPLATE * 0.5, (56, 48)) == pytest.approx(0.0)


@pytest.mark.parametrize("option, value, message", [
    ("--pad", "-1", "--pad must be a finite fraction >= 0"),
    ("--pad", "nan", "--pad must be a finite fraction >= 0"),
    ("--min-face-size", "0", "--min-face-size must be >= 12"),
    ("--workers", "0", "--workers must be >= 1"),
    ("--max-outside", "1.5", "--max-outside must be a fraction in"),
])
def test_bad_common_options_stop_before_work(tmp_path: Path, capsys, monkeypatch, option, value, message) -> None:
    (tmp_path / "src" / "p").mkdir(parents=True)
    line = _user_error(capsys, monkeypatch, folders.run,
                       ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), option, value])
    assert message in line and not (tmp_path / "o.work").exists()


def test_user_mistakes_are_one_error_line_with_exit_status_2(tmp_path: Path, capsys, monkeypatch, faces) -> None:
    src = tmp_path / "src"
    _write(src / "p" / "a.png", faces[0])
    _write(src / "p" / "a.jpg", faces[1])
    out = tmp_path / "out"
    line = _user_error(capsys, monkeypatch, folders.run, ["--src", str(src), "--out", str(out), *COMMON])
    assert str(src / "p" / "a.jpg") in line and str(src / "p" / "a.png") in line and "'p/a'" in line
    out.mkdir()
    line = _user_error(capsys, monkeypatch, folders.run, ["--src", str(src), "--out", str(out), *COMMON])
    assert f"--out {out} already exists" in line and "--overwrite" in line

    lfw_src = tmp_path / "lfw"
    _write(lfw_src / "Ann_Lee" / "Ann_Lee_0001.jpg", faces[0])
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(b"1\t1\nAnn_Lee\t1\t1\nAnn_L\xe9e\t1\tBo\t1\n")
    line = _user_error(capsys, monkeypatch, lfw.run,
                       ["--src", str(lfw_src), "--pairs", str(pairs), "--out", str(tmp_path / "l"), *COMMON])
    assert f"--pairs {pairs}, line 3" in line and "not UTF-8" in line
    assert not (tmp_path / "l.work").exists()  # checked before any image was aligned

    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["p/a.png"]))
    line = _user_error(capsys, monkeypatch, megaface.run, ["--set", "distractors", "--root", str(src), "--list",
                                                           str(listed), "--out", str(tmp_path / "m"), *COMMON])
    assert f"--list {listed}: a JSON list" in line and '{"path": [...]}' in line


def test_python_m_data_prep_exits_2_with_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "data_prep.folders", "--src", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=PROJECT)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: --src {tmp_path / 'nowhere'} is not a folder (check the path)"]


def test_a_full_disk_while_writing_a_shard_is_named_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    from data_prep import pipeline
    from sphereface_lib.errors import OutputWriteError

    config = pipeline.PrepConfig(out=tmp_path / "out", work_dir=tmp_path / "work")
    config.work.mkdir()

    def full_disk(file, **arrays) -> None:
        Path(file).write_bytes(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline.np, "savez", full_disk)
    with pytest.raises(OutputWriteError, match=r"disk full while writing .*shard-00000-x\.npz\.tmp\.npz \(No space "
                                               r"left on device\); nothing partial .* finished in the work folder"):
        pipeline._process_shard(([], config, "shard-00000-x.npz"))
    assert list(config.work.iterdir()) == []


def test_a_second_data_prep_command_on_one_out_is_refused_naming_the_first(tmp_path: Path, capsys, monkeypatch,
                                                                           faces) -> None:
    """Every data_prep command packs through prepare(), which holds the --out's lock (as a training run folder)."""
    src = tmp_path / "src"
    _write(src / "p" / "1.png", faces[0])
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom sphereface_lib.locking import "
         "output_lock\nwith output_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True, cwd=PROJECT)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _user_error(capsys, monkeypatch, folders.run, ["--src", str(src), "--out", str(out), *COMMON])
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert f"--out {out} is in use by process {holder.pid} on host " in line and "choose another --out" in line
    assert not out.exists() and not (tmp_path / "out.work").exists()
