"""data_prep on real faces: all 400 AT&T (ORL) images through detection, alignment, packing and the grid."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import align, folders, grid
from data_prep.mtcnn import MTCNN
from data_prep.pipeline import read_rgb
from sphereface_lib.data.packed import PackedDataset


@pytest.mark.slow
@pytest.mark.realdata
def test_att_faces_detected_aligned_packed(att_faces: Path, mtcnn_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "att"
    start = time.perf_counter()
    result = folders.run(["--src", str(att_faces), "--out", str(out), "--workers", "2", "--on-miss", "skip"])
    seconds = time.perf_counter() - start
    ds = PackedDataset(out)
    rate = result.counts["aligned"] / result.counts["listed"]
    print(f"AT&T: {result.counts['aligned']}/{result.counts['listed']} faces detected ({rate:.1%}), "
          f"{seconds / result.counts['listed'] * 1000:.1f} ms per image with 2 workers")
    assert result.counts["listed"] == 400 and rate >= 0.98
    assert ds.num_identities == 40 and ds.images.shape[1:] == (112, 96, 3)
    assert "s1/0001" in ds.keys and "s10/0010" in ds.keys  # lfw_key, as pairs.txt counts images

    # The fitted similarity puts each face's own landmarks within a few pixels of the template ...
    landmarks = np.load(out / "landmarks.npy")
    assert landmarks.shape == (len(ds), 5, 2) and np.isfinite(landmarks).all()
    residual = np.array([np.linalg.norm(align.similarity_to_template(lm)(lm) - align.TEMPLATE, axis=1)
                         for lm in landmarks])
    print(f"aligned landmarks vs template: mean {residual.mean():.2f} px, max {residual.max():.2f} px")
    assert residual.mean() < 3.0 and residual.max() < 10.0

    # ... and, independently, MTCNN run again on aligned crops finds the landmarks there too.
    detector, errors = MTCNN(), []
    for i in range(0, len(ds), 20):
        found = align.detect_and_align(detector, np.array(ds.images[i]), pad=0.3)
        assert found is not None, f"no face in aligned crop {ds.keys[i]}"
        errors.append(np.linalg.norm(found[1] - align.TEMPLATE, axis=1))
    errors = np.array(errors)
    print(f"re-detected landmarks vs template: mean {errors.mean():.2f} px, 95th pct {np.percentile(errors, 95):.2f} px")
    assert errors.mean() < 4.0 and np.percentile(errors, 95) < 8.0

    png = grid.save_grid(ds, tmp_path / "grid.png", rows=4, per_row=5)
    img = read_rgb(str(png))
    assert img.shape == (4 * 114, 5 * 98, 3) and img.std() > 20


@pytest.mark.realdata
def test_most_central_of_several_real_faces_is_kept(att_faces: Path, mtcnn_weights: Path) -> None:
    detector = MTCNN()
    a, b = read_rgb(str(att_faces / "s1" / "1.pgm")), read_rgb(str(att_faces / "s2" / "1.pgm"))
    canvas = np.full((240, 400, 3), 60, np.uint8)  # a wider "photo": s2 near the centre, s1 at the edge
    canvas[10:122, 5:97], canvas[70:182, 160:252] = a, b
    found = detector.detect(canvas)
    assert len(found) == 2
    crop, landmarks = align.detect_and_align(detector, canvas)
    assert 160 < landmarks[:, 0].mean() < 252 and 70 < landmarks[:, 1].mean() < 182
    assert crop.shape == (112, 96, 3)
