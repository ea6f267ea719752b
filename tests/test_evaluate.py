"""python -m sphereface_lib.evaluate: LFW, YTF and MegaFace for features keyed by image, on the real protocol files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sphereface_lib.data.protocols import read_lfw_pairs, read_ytf_splits
from sphereface_lib.evaluate import main

DIM = 64


def _identity(key: str) -> str:
    """The person of an LFW key 'Name/NNNN' or of a YTF frame key 'Person/number/NNNN'."""
    return key.split("/")[0]


def _features(keys: list[str], perfect: bool, seed: int = 0) -> np.ndarray:
    """Random features, or 'perfect' ones: every image of a person on one random direction plus a little noise."""
    rng = np.random.default_rng(seed)
    if not perfect:
        return rng.standard_normal((len(keys), DIM)).astype(np.float32)
    people = sorted({_identity(k) for k in keys})
    direction = dict(zip(people, rng.standard_normal((len(people), DIM))))
    return np.stack([direction[_identity(k)] + 0.05 * rng.standard_normal(DIM) for k in keys]).astype(np.float32)


@pytest.fixture(scope="module")
def lfw_keys(protocols_dir: Path) -> list[str]:
    pairs = read_lfw_pairs(protocols_dir / "pairs.txt")
    return sorted(set(pairs.keys_a + pairs.keys_b))


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from sphereface_lib.errors import run_command

    rc = run_command(main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("perfect, low, high", [(False, 0.45, 0.55), (True, 1.0, 1.0)])
def test_lfw_on_the_real_pairs(tmp_path, protocols_dir, lfw_keys, capsys, perfect, low, high):
    feats = tmp_path / "lfw.npz"
    np.savez(feats, features=_features(lfw_keys, perfect), keys=np.array(lfw_keys))
    out = tmp_path / "r.json"
    rc, stdout, _ = _run(["lfw", "--features", str(feats), "--pairs", str(protocols_dir / "pairs.txt"),
                          "--out", str(out)], capsys)
    assert rc == 0
    result = json.loads(out.read_text())
    assert (result["pairs"], result["same_pairs"], result["folds"]) == (6000, 3000, 10)
    assert len(result["fold_accuracies"]) == 10
    assert low <= result["accuracy"] <= high
    assert "LFW: 6,000 pairs, 10 folds" in stdout
    assert f"accuracy  {100 * result['accuracy']:.2f}%" in stdout


def test_lfw_accepts_npy_with_keys_file_and_file_names(tmp_path, protocols_dir, lfw_keys, capsys):
    """An .npy + keys text file, keys as LFW's own file names 'Name/Name_0001.jpg'."""
    names = [f"{k.split('/')[0]}/{k.split('/')[0]}_{k.split('/')[1]}.jpg" for k in lfw_keys]
    np.save(tmp_path / "f.npy", _features(lfw_keys, perfect=True))
    (tmp_path / "keys.txt").write_text("\n".join(names) + "\n")
    rc, _, err = _run(["lfw", "--features", str(tmp_path / "f.npy"), "--keys", str(tmp_path / "keys.txt"),
                       "--pairs", str(protocols_dir / "pairs.txt"), "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == 1.0


def test_lfw_missing_keys_name_the_first_and_count(tmp_path, protocols_dir, lfw_keys, capsys):
    kept = lfw_keys[7:]
    np.savez(tmp_path / "f.npz", features=_features(kept, False), keys=np.array(kept))
    rc, _, err = _run(["lfw", "--features", str(tmp_path / "f.npz"), "--pairs", str(protocols_dir / "pairs.txt"),
                       "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"lacks 7 of the {len(lfw_keys):,} keys" in err
    assert repr(lfw_keys[0]) in err and "..." in err
    assert not (tmp_path / "r.json").exists()


def test_non_finite_features_are_an_error_not_a_result(tmp_path, protocols_dir, lfw_keys, capsys):
    feats = _features(lfw_keys, True)
    feats[3, 5] = np.nan
    np.savez(tmp_path / "f.npz", features=feats, keys=np.array(lfw_keys))
    rc, _, err = _run(["lfw", "--features", str(tmp_path / "f.npz"), "--pairs", str(protocols_dir / "pairs.txt"),
                       "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2 and "1 feature row needed here hold NaN" in err and repr(lfw_keys[3]) in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("perfect, low, high", [(False, 0.44, 0.56), (True, 1.0, 1.0)])
def test_ytf_on_the_real_splits_from_frames(tmp_path, protocols_dir, capsys, perfect, low, high):
    splits = read_ytf_splits(protocols_dir / "ytf_splits.csv")
    videos = sorted(set(splits.keys_a + splits.keys_b))
    frames = [f"{v}/{f:04d}" for v in videos for f in range(3)]
    np.savez(tmp_path / "f.npz", features=_features(frames, perfect), keys=np.array(frames))
    rc, stdout, err = _run(["ytf", "--features", str(tmp_path / "f.npz"), "--splits",
                            str(protocols_dir / "ytf_splits.csv"), "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["pairs"], result["folds"], result["videos"]) == (5000, 10, len(videos))
    assert result["videos_from_frames"] == len(videos)
    assert low <= result["accuracy"] <= high
    assert "YouTube Faces: 5,000 pairs, 10 folds" in stdout


def test_ytf_video_features_equal_their_frames_mean(tmp_path, protocols_dir, capsys):
    """One feature per video gives the same result as frames whose mean is that feature."""
    splits = read_ytf_splits(protocols_dir / "ytf_splits.csv")
    videos = sorted(set(splits.keys_a + splits.keys_b))
    video_feats = _features(videos, False, seed=3)
    offset = np.random.default_rng(4).standard_normal((len(videos), DIM)).astype(np.float32)
    frames = [f"{v}/{f:04d}" for v in videos for f in range(2)]
    frame_feats = np.stack([video_feats + offset, video_feats - offset], axis=1).reshape(-1, DIM)
    np.savez(tmp_path / "v.npz", features=video_feats, keys=np.array(videos))
    np.savez(tmp_path / "f.npz", features=frame_feats, keys=np.array(frames))
    accs = []
    for name in ("v", "f"):
        rc, _, err = _run(["ytf", "--features", str(tmp_path / f"{name}.npz"), "--splits",
                           str(protocols_dir / "ytf_splits.csv"), "--out", str(tmp_path / f"{name}.json")], capsys)
        assert rc == 0, err
        accs.append(json.loads((tmp_path / f"{name}.json").read_text())["fold_accuracies"])
    np.testing.assert_allclose(accs[0], accs[1], atol=1e-12)


def _megaface_files(tmp_path: Path, good: bool) -> tuple[Path, Path]:
    """20 identities x 3 probe images, 500 distractors; 'good' probes cluster by identity."""
    rng = np.random.default_rng(1)
    keys = [f"id{i:02d}/{j}.jpg" for i in range(20) for j in range(3)]
    centers = rng.standard_normal((20, DIM))
    noise = 0.05 if good else 10.0
    probes = np.stack([centers[i] + noise * rng.standard_normal(DIM) for i in range(20) for _ in range(3)])
    np.savez(tmp_path / "probes.npz", features=probes.astype(np.float32), keys=np.array(keys))
    np.save(tmp_path / "distractors.npy", rng.standard_normal((500, DIM)).astype(np.float16))
    return tmp_path / "probes.npz", tmp_path / "distractors.npy"


def test_megaface_on_a_small_synthetic_set(tmp_path, capsys):
    probes, distractors = _megaface_files(tmp_path, good=True)
    rc, stdout, err = _run(["megaface", "--probes", str(probes), "--distractors", str(distractors),
                            "--out", str(tmp_path / "m.json")], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["probes"], result["probe_identities"], result["distractors"]) == (60, 20, 500)
    rows = result["results"]
    assert [r["distractors"] for r in rows] == [10, 100]
    for r in rows:
        assert r["rank1"] == 1.0 and r["tar_at_far"]["1e-06"] == 1.0
        assert (r["probe_pairs"], r["genuine_pairs"], r["impostor_pairs"]) == (120, 60, 60 * r["distractors"])
    assert "MegaFace: 60 probes of 20 identities, 500 distractors" in stdout


def test_megaface_lists_select_probes_and_distractors(tmp_path, capsys):
    """Random probes rank their mate first rarely; the lists pick rows by key and the counts are honoured."""
    probes, distractors = _megaface_files(tmp_path, good=False)
    (tmp_path / "dkeys.txt").write_text("".join(f"d{i}\n" for i in range(500)))
    (tmp_path / "dlist.txt").write_text("".join(f"d{i}\n" for i in range(0, 500, 2)))
    (tmp_path / "plist.txt").write_text("".join(f"id{i:02d}/{j}.jpg\n" for i in range(10) for j in range(3)))
    rc, _, err = _run(["megaface", "--probes", str(probes), "--probe-list", str(tmp_path / "plist.txt"),
                       "--distractors", str(distractors), "--distractor-keys", str(tmp_path / "dkeys.txt"),
                       "--distractor-list", str(tmp_path / "dlist.txt"), "--distractor-counts", "50,250",
                       "--fars", "1e-3,1e-2", "--out", str(tmp_path / "m.json")], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["probes"], result["probe_identities"], result["distractors"]) == (30, 10, 250)
    assert [r["distractors"] for r in result["results"]] == [50, 250]
    assert set(result["results"][0]["tar_at_far"]) == {"0.001", "0.01"}
    assert result["results"][1]["rank1"] < 0.5


def test_megaface_missing_list_keys_are_an_error(tmp_path, capsys):
    probes, distractors = _megaface_files(tmp_path, good=True)
    (tmp_path / "plist.txt").write_text("id00/0.jpg\nnobody/1.jpg\n")
    rc, _, err = _run(["megaface", "--probes", str(probes), "--probe-list", str(tmp_path / "plist.txt"),
                       "--distractors", str(distractors), "--out", str(tmp_path / "m.json")], capsys)
    assert rc == 2 and "lacks 1 of the 2 keys" in err and "'nobody/1.jpg'" in err


@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_a_saved_model_on_a_packed_dataset(tmp_path, protocols_dir, capsys, suffix):
    """--images + --model: features from a torch.export (.pt2) or TorchScript (.pt) model."""
    import torch

    from sphereface_lib.data import PackedWriter

    pairs = read_lfw_pairs(protocols_dir / "pairs.txt")
    keys = sorted(set(pairs.keys_a + pairs.keys_b))
    people = sorted({_identity(k) for k in keys})
    person = {p: i for i, p in enumerate(people)}
    # each person's images are a constant grey level: a model that reads the pixel sees the identity
    levels = np.linspace(0, 255, len(people)).astype(np.uint8)
    images = np.stack([np.full((4, 4, 3), levels[person[_identity(k)]], np.uint8) for k in keys])
    with PackedWriter(tmp_path / "packed", height=4, width=4, channels=3, source="test") as writer:
        writer.add(images, [person[_identity(k)] for k in keys], keys)

    class Angle(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = 200.0 * x[:, 0, 0, 0:1]  # a distinct angle per grey level
            return torch.cat([torch.cos(a), torch.sin(a)], dim=1)

    model = tmp_path / f"m{suffix}"
    if suffix == ".pt2":
        x = torch.zeros(2, 3, 4, 4)
        torch.export.save(torch.export.export(Angle(), (x,), dynamic_shapes=({0: torch.export.Dim("b")},)), model)
    else:
        with pytest.warns(DeprecationWarning):
            torch.jit.save(torch.jit.script(Angle()), str(model))
    rc, _, err = _run(["lfw", "--images", str(tmp_path / "packed"), "--model", str(model),
                       "--pairs", str(protocols_dir / "pairs.txt"), "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] > 0.9


@pytest.mark.parametrize("argv, message", [
    (["lfw", "--pairs", "p.txt"], "give either --features FILE or --images DIR"),
    (["lfw", "--images", "d", "--pairs", "p.txt"], "needs --model FILE"),
    (["lfw", "--features", "f.npy", "--pairs", "p.txt"], "holds no keys"),
    (["lfw", "--features", "f.npz", "--pairs", "missing.txt"], "--pairs missing.txt: protocol file"),
    (["lfw", "--features", "f.npz", "--pairs", "dev.txt"], "has one fold (View 1"),
    (["lfw", "--features", "f.csv", "--pairs", "p.txt"], "expected a .npz"),
])
def test_user_mistakes_are_one_error_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    np.save("f.npy", np.zeros((2, 3), np.float32))
    np.savez("f.npz", features=np.zeros((2, 3), np.float32), keys=np.array(["a/0001", "b/0001"]))
    Path("f.csv").write_text("1,2\n")
    Path("dev.txt").write_text("1\na\t1\t2\na\t1\tb\t1\n")
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err


def test_the_module_runs_as_a_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sphereface_lib.evaluate", "lfw", "--features", "nope.npz",
                           "--pairs", "p.txt"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --features nope.npz: no such file"


SMALL_PAIRS = ("2\t2\n"  # 2 folds of 2 matched + 2 mismatched pairs, built here
               "P0\t1\t2\nP1\t1\t2\nP2\t1\tP3\t1\nP4\t1\tP5\t1\n"
               "P2\t1\t2\nP3\t1\t2\nP0\t1\tP6\t1\nP1\t1\tP7\t1\n")
SMALL_KEYS = [f"P{i}/{n:04d}" for i in range(8) for n in (1, 2)]


def test_missing_skip_scores_without_the_pairs_of_an_absent_image(tmp_path, capsys):
    """An image never aligned (absent from the features) stops the run naming --missing skip; with it, the pairs
    that need the image are left out and counted in the table and the JSON."""
    (tmp_path / "pairs.txt").write_text(SMALL_PAIRS)
    kept = [k for k in SMALL_KEYS if k != "P3/0001"]  # named by 2 pairs: one matched, one mismatched
    np.savez(tmp_path / "f.npz", features=_features(kept, perfect=True), keys=np.array(kept))
    argv = ["lfw", "--features", str(tmp_path / "f.npz"), "--pairs", str(tmp_path / "pairs.txt"),
            "--out", str(tmp_path / "r.json")]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "lacks 1 of the 12 keys" in err and "'P3/0001'" in err and "--missing skip" in err
    rc, stdout, err = _run(argv + ["--missing", "skip"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["pairs"], result["skipped_pairs"], result["missing_images"]) == (6, 2, ["P3/0001"])
    assert result["accuracy"] == 1.0 and result["folds"] == 2
    assert "LFW: 6 pairs, 2 folds (2 pairs skipped: 1 image without features, 'P3/0001')" in stdout
    np.savez(tmp_path / "all.npz", features=_features(SMALL_KEYS, perfect=True), keys=np.array(SMALL_KEYS))
    rc, stdout, err = _run(_with(argv, "--features", str(tmp_path / "all.npz")) + ["--missing", "skip"], capsys)
    assert rc == 0 and json.loads((tmp_path / "r.json").read_text())["skipped_pairs"] == 0
    assert "skipped" not in stdout


def _with(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def test_the_result_goes_beside_the_input_by_default_and_says_where(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "data" / "pairs.txt").write_text(SMALL_PAIRS)
    np.savez(tmp_path / "data" / "model_a.npz", features=_features(SMALL_KEYS, True), keys=np.array(SMALL_KEYS))
    rc, stdout, err = _run(["lfw", "--features", str(tmp_path / "data" / "model_a.npz"), "--pairs",
                            str(tmp_path / "data" / "pairs.txt")], capsys)
    assert rc == 0, err
    written = tmp_path / "data" / "model_a_lfw_result.json"
    assert json.loads(written.read_text())["accuracy"] == 1.0
    assert f"wrote {written}" in stdout and list((tmp_path / "cwd").iterdir()) == []


def test_float64_features_beyond_float32_range_give_the_same_result(tmp_path, capsys):
    """A cosine does not depend on the scale: features x 1e300 in float64 score as the unscaled ones (LFW and
    MegaFace), not as 'NaN or infinity'."""
    (tmp_path / "pairs.txt").write_text(SMALL_PAIRS)
    feats = _features(SMALL_KEYS, perfect=False).astype(np.float64)
    np.savez(tmp_path / "small.npz", features=feats, keys=np.array(SMALL_KEYS))
    np.savez(tmp_path / "huge.npz", features=feats * 1e300, keys=np.array(SMALL_KEYS))
    accs = []
    for name in ("small", "huge"):
        rc, _, err = _run(["lfw", "--features", str(tmp_path / f"{name}.npz"), "--pairs", str(tmp_path / "pairs.txt"),
                           "--out", str(tmp_path / f"{name}.json")], capsys)
        assert rc == 0, err
        accs.append(json.loads((tmp_path / f"{name}.json").read_text())["fold_accuracies"])
    assert accs[0] == accs[1]
    probes, distractors = _megaface_files(tmp_path, good=True)
    results = []
    for scale in (1.0, 1e300):
        np.savez(tmp_path / "p64.npz", features=np.load(probes)["features"].astype(np.float64) * scale,
                 keys=np.load(probes)["keys"])
        np.save(tmp_path / "d64.npy", np.load(distractors).astype(np.float64) * scale)
        rc, _, err = _run(["megaface", "--probes", str(tmp_path / "p64.npz"), "--distractors",
                           str(tmp_path / "d64.npy"), "--out", str(tmp_path / "m.json")], capsys)
        assert rc == 0, err
        results.append(json.loads((tmp_path / "m.json").read_text())["results"])
    for small, huge in zip(*results):  # thresholds to float32 rounding: the huge rows are scaled before float32
        assert small.pop("threshold_at_far") == pytest.approx(huge.pop("threshold_at_far"), abs=1e-6)
        assert small == huge


def test_megaface_marks_a_far_with_too_few_impostor_scores(tmp_path, capsys):
    """60 probes x 100 distractors = 6,000 impostor scores: FAR 1e-2 leaves 60 expected false accepts (usable),
    1e-3 only 6 (marked in the table, left out of usable_fars in the JSON)."""
    probes, distractors = _megaface_files(tmp_path, good=True)
    rc, stdout, err = _run(["megaface", "--probes", str(probes), "--distractors", str(distractors),
                            "--distractor-counts", "100", "--fars", "1e-3,1e-2", "--out", str(tmp_path / "m.json")],
                           capsys)
    assert rc == 0, err
    row = json.loads((tmp_path / "m.json").read_text())["results"][0]
    assert row["impostor_pairs"] == 6000 and row["usable_fars"] == ["0.01"]
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("100 "))
    assert line.count("%*") == 1 and line.rstrip().endswith("%")  # 1e-3 marked, 1e-2 not
    assert "* too few impostor scores: impostor pairs x FAR < 50 expected false accepts" in stdout


def test_ytf_missing_skip_leaves_out_the_pairs_of_a_video_without_frames(tmp_path, capsys):
    splits = "split,video_a,video_b,same\n" + "".join(
        f"{s},P{s}{i}/0,P{s}{i}/1,1\n{s},P{s}{i}/0,Q{s}{i}/0,0\n" for s in (1, 2) for i in range(2))
    (tmp_path / "splits.csv").write_text(splits)
    videos = sorted({v for line in splits.splitlines()[1:] for v in line.split(",")[1:3]} - {"Q20/0"})
    np.savez(tmp_path / "f.npz", features=_features(videos, perfect=True), keys=np.array(videos))
    argv = ["ytf", "--features", str(tmp_path / "f.npz"), "--splits", str(tmp_path / "splits.csv"),
            "--out", str(tmp_path / "r.json")]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "no features for 1 of the 12 videos" in err and "'Q20/0'" in err and "--missing skip" in err
    rc, stdout, err = _run(argv + ["--missing", "skip"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["pairs"], result["skipped_pairs"], result["missing_videos"]) == (7, 1, ["Q20/0"])
    assert "YouTube Faces: 7 pairs, 2 folds (1 pair skipped: 1 video without features, 'Q20/0')" in stdout
