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
