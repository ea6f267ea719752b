"""data_prep.resize: a 112x96 pack, or a real-data folder of packs, at 56x48 (the CPU profiles' size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import resize
from sphereface_lib.data.packed import PackedDataset, PackedWriter
from sphereface_lib.errors import UserError


def _pack(root: Path, height: int = 112, width: int = 96, n: int = 5) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    with PackedWriter(root, height=height, width=width, channels=3, source="tiny", identities=["a", "b"],
                      extra={"aligned": n}) as w:
        w.add(images, [0, 0, 1, 1, 1][:n], [f"{'aabbb'[i]}/{i + 1:04d}" for i in range(n)])
    return images


def _real_folder(root: Path) -> dict[str, np.ndarray]:
    images = {part: _pack(root / part) for part in ("train", "lfw")}
    (root / "lfw" / "pairs.txt").write_text("10\t300\n")
    np.save(root / "lfw" / "outside.npy", np.arange(5, dtype=np.float32))
    (root / "megaface_split.tsv").write_text("identity\tpart\n")
    (root / "logs").mkdir()
    (root / "logs" / "run.log").write_text("log\n")
    return images


def test_a_real_data_folder_is_written_at_56x48_with_its_protocol_files(tmp_path: Path) -> None:
    src, out = tmp_path / "real", tmp_path / "real56"
    images = _real_folder(src)
    assert resize.run(["--src", str(src), "--out", str(out), "--size", "56x48"]) == ["lfw", "train"]
    for part, full in images.items():
        small = PackedDataset(out / part)
        assert small.images.shape == (5, 56, 48, 3)
        area = np.stack([cv2.resize(im, (48, 56), interpolation=cv2.INTER_AREA) for im in full])
        exact = (full.reshape(5, 56, 2, 48, 2, 3).astype(np.int32).sum(axis=(2, 4)) + 2) // 4
        np.testing.assert_array_equal(small.images, exact)  # the exact 2x2 mean, rounded half up
        assert np.abs(small.images.astype(int) - area).max() <= 1  # which is OpenCV's INTER_AREA up to rounding
        original = PackedDataset(src / part)
        assert (small.keys, small.identities, small.labels.tolist()) == (
            original.keys, original.identities, original.labels.tolist())
        assert small.manifest.extra["aligned"] == 5 and small.manifest.extra["resized_to"] == "56x48"
    assert (out / "lfw" / "pairs.txt").read_text() == "10\t300\n"
    np.testing.assert_array_equal(np.load(out / "lfw" / "outside.npy"), np.arange(5))
    assert (out / "megaface_split.tsv").is_file() and not (out / "logs").exists()
    assert not (tmp_path / "real56.partial").exists()


def test_one_pack_is_resized(tmp_path: Path) -> None:
    _pack(tmp_path / "pack")
    assert resize.run(["--src", str(tmp_path / "pack"), "--out", str(tmp_path / "small"), "--size", "28x24"]) == ["."]
    assert PackedDataset(tmp_path / "small").images.shape == (5, 28, 24, 3)


@pytest.mark.parametrize("case", ["exists", "not_112x96", "no_packs"])
def test_bad_input_is_one_error_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    if case == "not_112x96":
        _pack(src, 56, 48)
    else:
        _pack(src)
    if case == "exists":
        out.mkdir()
    if case == "no_packs":
        src = tmp_path / "empty"
        src.mkdir()
    with pytest.raises(UserError, match={"exists": "already exists", "not_112x96": "56x48 pack",
                                         "no_packs": "neither a pack"}[case]):
        resize.run(["--src", str(src), "--out", str(out), "--size", "56x48"])
    assert case == "exists" or not out.exists()
    assert not (tmp_path / "out.partial").exists()


def test_command_line_error_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "data_prep.resize", "--src", str(tmp_path / "none"), "--out",
                           str(tmp_path / "out"), "--size", "56x48"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --src") and "\n" not in proc.stderr.strip()
