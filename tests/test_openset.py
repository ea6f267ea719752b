"""data_prep.openset: a folder of identities (or an aligned pack) -> train / lfw + pairs.txt / MegaFace parts."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import openset
from data_prep.pipeline import cli
from sphereface_lib.companion.experiments import open_benchmark
from sphereface_lib.data.packed import PackedDataset, PackedWriter
from sphereface_lib.data.protocols import pair_rows, read_lfw_pairs
from sphereface_lib.data.synthetic import render_images
from sphereface_lib.data.synthetic.faces import _resize as block_mean

COMMON = ["--workers", "1", "--shard-size", "64"]


def _user_error(capsys, monkeypatch, argv: list[str]) -> str:
    """The one ``error:`` line ``python -m data_prep.openset argv`` prints (exit status 2)."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli(openset.run)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _pack(root: Path, counts: dict[str, int], seed: int = 0, outside: np.ndarray | None = None) -> Path:
    """An aligned 112x96 grey pack (random pixels) with ``counts[identity]`` images, keys ``identity/img<k>``."""
    rng = np.random.default_rng(seed)
    names = sorted(counts)
    labels = np.repeat(np.arange(len(names)), [counts[n] for n in names])
    keys = [f"{n}/img{k}" for n in names for k in range(counts[n])]
    with PackedWriter(root, height=112, width=96, channels=1, source="test", identities=names) as w:
        w.add(rng.integers(0, 256, (len(labels), 112, 96, 1), dtype=np.uint8), labels, keys)
    np.save(root / "outside.npy", (rng.random(len(labels)) * 0.3 if outside is None else outside).astype(np.float32))
    np.save(root / "landmarks.npy", np.full((len(labels), 5, 2), np.nan, np.float32))
    return root


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """26 identities of 4 images, one of 1 image (it can only train) and one named with a space."""
    counts = {f"id{i:02d}": 4 for i in range(26)} | {"single": 1, "bad name": 3}
    return _pack(tmp_path_factory.mktemp("src") / "aligned", counts)


def _parts(out: Path) -> dict[str, set[str]]:
    rows = [line.split("\t") for line in (out / "split.tsv").read_text().splitlines()[1:]]
    parts: dict[str, set[str]] = {}
    for name, part, _, _ in rows:
        parts.setdefault(part, set()).add(name)
    return parts


def _check_benchmark(out: Path, per_fold: int, disjoint: bool) -> None:
    """Identity-disjoint parts, pairs readable by the library, 10 folds of per_fold matched + mismatched."""
    parts = _parts(out)
    for part, names in parts.items():
        assert set(PackedDataset(out / part).identities) == names
    for a, b in combinations(parts.values(), 2):
        assert not a & b
    pairs = read_lfw_pairs(out / "pairs.txt")
    lfw = PackedDataset(out / "lfw")
    rows_a, rows_b = pair_rows(lfw, pairs)
    assert pairs.n_folds == 10 and len(pairs) == 20 * per_fold
    assert np.array_equal(lfw.labels[rows_a] == lfw.labels[rows_b], pairs.is_same)
    assert len(set(zip(pairs.keys_a, pairs.keys_b))) == len(pairs) and not np.any(rows_a == rows_b)
    fold_people = [{k.split("/")[0] for k in pairs.keys_a[f * 2 * per_fold:(f + 1) * 2 * per_fold]
                    + pairs.keys_b[f * 2 * per_fold:(f + 1) * 2 * per_fold]} for f in range(10)]
    assert set().union(*fold_people) <= parts["lfw"]
    if disjoint:
        for a, b in combinations(fold_people, 2):
            assert not a & b


def test_pack_becomes_an_identity_disjoint_benchmark(pack: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    summary = openset.run(["--src", str(pack), "--out", str(out), "--size", "28x24", "--test-identities", "20",
                           "--megaface-probe", "2", "--megaface-distractors", "2", *COMMON])
    err = capsys.readouterr().err
    # 2 test identities of 4 images per fold: 2 * C(4, 2) = 12 matched and 4 * 4 = 16 mismatched pairs available
    assert all(f["matched_available"] == 12 and f["mismatched_available"] == 16 for f in summary["folds"])
    assert summary["pairs_per_fold"] == summary["pairs_per_fold_feasible"] == 12
    assert "12/16" in err and "12 matched + 12 mismatched pairs per fold (largest feasible 12)" in err
    assert summary["folds_identity_disjoint"]
    _check_benchmark(out, 12, disjoint=True)
    parts = _parts(out)
    assert {p: len(v) for p, v in parts.items()} == {"lfw": 20, "megaface_probe": 2, "megaface_distractors": 2,
                                                     "train": 3}
    assert "single" not in parts["lfw"] | parts["megaface_probe"]  # one image gives no genuine pair
    assert "bad name" not in set().union(*parts.values())
    failures = (out / "failures.tsv").read_text()
    assert "bad_name" in failures and "whitespace" in failures
    bench = open_benchmark(str(out), tmp_path / "cache",
                           parts=("train", "lfw", "megaface_probe", "megaface_distractors"))
    for ds in (bench.train, bench.lfw, bench.megaface_probe, bench.megaface_distractors):
        assert ds.images.shape[1:] == (28, 24, 1) and ds.manifest.extra["size"] == "28x24"
        assert ds.manifest.extra["split"] == {"train": 3, "lfw": 20, "megaface_probe": 2, "megaface_distractors": 2}
        assert np.load(ds.root / "outside.npy").shape == (len(ds),)
        assert all(k.split("/")[1].isdigit() and len(k.split("/")[1]) == 4 for k in ds.keys)  # lfw_key


def test_sizes_are_the_synthetic_block_mean_of_the_112x96_crops(pack: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    openset.run(["--src", str(pack), "--out", str(full), "--test-identities", "10", *COMMON])
    big = PackedDataset(full / "train")
    assert big.images.shape[1:] == (112, 96, 1) and big.manifest.extra["size"] == "112x96"
    for size in ("56x48", "28x24"):
        out = tmp_path / size
        openset.run(["--src", str(pack), "--out", str(out), "--test-identities", "10", "--size", size, *COMMON])
        small = PackedDataset(out / "train")
        h, w = map(int, size.split("x"))
        assert small.keys == big.keys
        np.testing.assert_array_equal(np.array(small.images), block_mean(np.array(big.images), (h, w)))
        np.testing.assert_array_equal(np.load(out / "train" / "outside.npy"), np.load(full / "train" / "outside.npy"))


def test_fewer_than_20_test_identities_give_folds_that_share_no_pair(pack: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    summary = openset.run(["--src", str(pack), "--out", str(out), "--test-identities", "10", *COMMON])
    assert not summary["folds_identity_disjoint"]
    # one identity per fold: C(4, 2) = 6 matched; mismatched: 4 x 4 images with each of 4.5 folds' identities
    assert [f["matched_available"] for f in summary["folds"]] == [6] * 10
    assert [f["mismatched_available"] for f in summary["folds"]] == [80] * 5 + [64] * 5
    assert summary["pairs_per_fold"] == 6
    _check_benchmark(out, 6, disjoint=False)
    pairs = read_lfw_pairs(out / "pairs.txt")
    people = [frozenset((a.split("/")[0], b.split("/")[0])) for a, b, s in
              zip(pairs.keys_a, pairs.keys_b, pairs.is_same) if not s]
    fold_of: dict[frozenset, int] = {}
    for p, f in zip(people, pairs.folds[~pairs.is_same]):
        assert fold_of.setdefault(p, int(f)) == int(f)  # a pair of people belongs to one fold only


def test_same_seed_same_benchmark_other_seed_other_split(pack: Path, tmp_path: Path) -> None:
    args = ["--src", str(pack), "--test-identities", "20", "--pairs-per-fold", "5", *COMMON]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        openset.run([*args, "--out", str(tmp_path / name), "--seed", seed])
    for f in ("pairs.txt", "split.tsv", "images.tsv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert _parts(tmp_path / "a")["lfw"] != _parts(tmp_path / "c")["lfw"]  # another seed holds out other people
    assert (tmp_path / "a" / "lfw" / "images.u8").read_bytes() == (tmp_path / "b" / "lfw" / "images.u8").read_bytes()


def test_max_outside_skips_listed_crops(tmp_path: Path) -> None:
    counts = {f"p{i:02d}": 3 for i in range(12)}
    outside = np.zeros(36, np.float32)
    outside[[0, 5, 7]] = [0.3, 0.12, 0.5]
    src = _pack(tmp_path / "src", counts, outside=outside)
    out = tmp_path / "data"
    summary = openset.run(["--src", str(src), "--out", str(out), "--test-identities", "10",
                           "--max-outside", "0.25", *COMMON])
    assert summary["outside_above_10pct"] == 1 and summary["outside_above_25pct"] == 0  # after skipping 2
    rows = [r.split("\t") for r in (out / "failures.tsv").read_text().splitlines()[1:]]
    assert sorted(r[0] for r in rows if r[1] == "outside") == [f"{src}:p00/img0", f"{src}:p02/img1"]
    kept = sum(len(PackedDataset(out / p)) for p in ("train", "lfw"))
    assert kept == 34


@pytest.mark.parametrize("extra, message", [
    (["--pairs-per-fold", "13"], "--pairs-per-fold 13: the largest feasible value is 12"),
    (["--test-identities", "27"], "--test-identities 27: the largest feasible value is 26"),
    (["--test-identities", "9"], "need at least 10 test identities"),
    (["--test-fraction", "0.99"], "--test-fraction 0.99 (27 of 27 identities): the largest feasible value is 26"),
    (["--test-fraction", "1.5"], "--test-fraction must lie in (0, 1)"),
    (["--megaface-probe", "3"], "--megaface-probe and --megaface-distractors go together"),
    (["--megaface-probe", "7", "--megaface-distractors", "1"], "--megaface-probe 7: the largest feasible value is 6"),
    (["--megaface-probe", "6", "--megaface-distractors", "1"], "--megaface-distractors 1: the largest feasible value is 0"),
    (["--pad", "-1"], "--pad must be a finite fraction >= 0"),
    (["--min-face-size", "0"], "--min-face-size must be >= 12"),
])
def test_sizes_a_set_cannot_afford_are_errors(pack: Path, tmp_path: Path, capsys, monkeypatch, extra, message):
    base = ["--test-identities", "20"] if not any(a.startswith("--test-") for a in extra) else []
    line = _user_error(capsys, monkeypatch, ["--src", str(pack), "--out", str(tmp_path / "o"), *base, *extra,
                                             *COMMON])
    assert message in line and not (tmp_path / "o").exists()


def test_bad_arguments_exit_2(pack: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "o").mkdir()
    line = _user_error(capsys, monkeypatch, ["--src", str(pack), "--out", str(tmp_path / "o")])
    assert f"--out {tmp_path / 'o'} already exists" in line
    line = _user_error(capsys, monkeypatch, ["--src", str(tmp_path / "absent"), "--out", str(tmp_path / "p")])
    assert "--src" in line and "is not a folder" in line
    monkeypatch.setattr(sys, "argv", ["prog", "--src", str(pack), "--out", str(tmp_path / "q"), "--size", "64x64"])
    with pytest.raises(SystemExit) as exit_info:
        cli(openset.run)
    assert exit_info.value.code == 2 and "choose one of 112x96, 56x48, 28x24" in capsys.readouterr().err


def test_folder_of_photos_is_aligned_split_and_paired(tmp_path: Path, mtcnn_weights, capsys) -> None:
    """Synthetic faces written as PNG files (12 identities x 3, numbered and named files) through MTCNN."""
    src = tmp_path / "photos"
    ids = np.repeat(np.arange(12), 3)
    faces = render_images(5, ids, np.tile(np.arange(3), 12), workers=1)
    for k, (i, img) in enumerate(zip(ids, faces)):
        name = f"{k % 3 + 1}.png" if i % 2 else f"shot_{'abc'[k % 3]}.png"
        (src / f"person{i:02d}").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(src / f"person{i:02d}" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "data"
    summary = openset.run(["--src", str(src), "--out", str(out), "--size", "56x48", "--test-identities", "10",
                           "--on-miss", "centre", *COMMON])
    assert summary["parts"] == {"train": {"identities": 2, "images": 6}, "lfw": {"identities": 10, "images": 30}}
    assert summary["pairs_per_fold"] == 3  # C(3, 2) genuine pairs per one-identity fold
    _check_benchmark(out, 3, disjoint=False)
    keys = PackedDataset(out / "lfw").keys + PackedDataset(out / "train").keys
    assert "person01/0002" in keys and "person00/0003" in keys  # numbered file 2.png; 3rd of shot_a..c
    rows = {r.split("\t")[0]: r.split("\t") for r in (out / "images.tsv").read_text().splitlines()[1:]}
    assert len(rows) == 36 and rows["person00/0003"][2] == str(src / "person00" / "shot_c.png")
    assert rows["person00/0003"][1] == ("lfw" if "person00" in _parts(out)["lfw"] else "train")
    assert not (tmp_path / "data.work").exists() and "crops partly outside" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_att_faces_documented_command(att_faces: Path, mtcnn_weights, tmp_path: Path, capsys) -> None:
    """The command of data_prep/README.md on the 400 AT&T faces: 20 + 20 identities, 90 pairs per fold."""
    out = tmp_path / "att_real"
    summary = openset.run(["--src", str(att_faces), "--out", str(out), "--size", "56x48", "--channels", "1",
                           "--test-identities", "20", "--seed", "0", "--workers", "2"])
    print(capsys.readouterr().err)
    assert summary["parts"] == {"train": {"identities": 20, "images": 200}, "lfw": {"identities": 20, "images": 200}}
    assert summary["folds_identity_disjoint"] and summary["pairs_per_fold"] == 90
    assert all(f["matched_available"] == 90 and f["mismatched_available"] == 100 for f in summary["folds"])
    _check_benchmark(out, 90, disjoint=True)
    train = PackedDataset(out / "train")
    assert train.images.shape[1:] == (56, 48, 1) and "s1/0010" in train.keys + PackedDataset(out / "lfw").keys
    outside = np.concatenate([np.load(out / p / "outside.npy") for p in ("train", "lfw")])
    assert summary["outside_above_10pct"] == int(np.sum(outside > 0.1)) and summary["failures"] == 0
    assert json.loads((out / "openset.json").read_text()) == summary


def test_a_folder_split_that_cannot_be_met_stops_before_aligning(tmp_path: Path, capsys, monkeypatch) -> None:
    src = tmp_path / "photos"
    for i in range(11):
        (src / f"p{i}").mkdir(parents=True)
        for k in range(2 if i else 1):  # p0 has one image: it can train, not be held out
            assert cv2.imwrite(str(src / f"p{i}" / f"{k + 1}.png"), np.full((40, 40), 100, np.uint8))
    line = _user_error(capsys, monkeypatch, ["--src", str(src), "--out", str(tmp_path / "o"),
                                             "--test-identities", "11"])
    assert "--test-identities 11: the largest feasible value is 10" in line
    assert not (tmp_path / "o.work").exists()  # no image was aligned


def test_a_second_command_on_one_out_is_refused_naming_the_first(pack: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """Two runs on one --out shared the fixed <out>.partial and <out>.work names; now the output is locked."""
    out = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom sphereface_lib.locking import "
         "output_lock\nwith output_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _user_error(capsys, monkeypatch, ["--src", str(pack), "--out", str(out), "--size", "28x24",
                                                 "--test-identities", "20", *COMMON])
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert f"--out {out} is in use by process {holder.pid} on host " in line and "choose another --out" in line
    assert not out.exists() and not (tmp_path / "data.partial").exists()
    openset.run(["--src", str(pack), "--out", str(out), "--size", "28x24", "--test-identities", "20", *COMMON])
    assert (out / "pairs.txt").is_file()  # the lock died with its holder


def test_a_full_disk_while_writing_the_parts_is_one_error_line_and_leaves_nothing(pack: Path, tmp_path: Path, capsys,
                                                                                  monkeypatch) -> None:
    real_save = np.save

    def full_disk(path, array, *args, **kwargs) -> None:
        if Path(path).name == "landmarks.npy" and "lfw" in Path(path).parent.name:
            Path(path).write_bytes(b"\x93NUMPY")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", full_disk)
    out = tmp_path / "data"
    line = _user_error(capsys, monkeypatch, ["--src", str(pack), "--out", str(out), "--size", "28x24",
                                             "--test-identities", "20", *COMMON])
    assert line.startswith(f"error: disk full while writing {tmp_path / 'data.partial'}") and "nothing partial" in line
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
