"""MegaFace identification and verification: a hand example, a naive reference, float16 memmaps, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sphereface_lib.evaluation import megaface_evaluate


def _deg(*angles: float) -> np.ndarray:
    r = np.deg2rad(angles)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def test_hand_example() -> None:
    probes, labels = _deg(0, 20, 90, 100), np.array([0, 0, 1, 1])
    distractors = _deg(5, 170, 270)
    res = megaface_evaluate(probes, labels, distractors, [3], max_rank=3, fars=(0.1, 0.2), progress=False)[3]
    # probe 0 deg, mate 20 deg (cos 20 = .940): distractor at 5 deg (.996) beats it -> rank 2; same for 20 -> 0;
    # 90 -> 100 (cos 10 = .985): best distractor 170 deg (cos 80 = .174) -> rank 1; 100 -> 90 likewise
    assert res.cmc.tolist() == [0.5, 1.0, 1.0] and res.rank1 == 0.5
    assert res.num_probe_pairs == 4 and res.num_genuine == 2 and res.num_impostors == 12
    # impostor scores, highest first: cos 5 = .996, cos 15 = .966, cos 70 = .342, ...
    # FAR 0.1 of 12: 1 false accept allowed -> threshold = 2nd highest (.966): genuine .985 only -> TAR 0.5
    # FAR 0.2: 2 allowed -> threshold .342 -> both genuine (.940, .985) -> TAR 1
    assert res.threshold_at_far[0.1] == pytest.approx(math.cos(math.radians(15)), abs=1e-6)
    assert res.tar_at_far == {0.1: 0.5, 0.2: 1.0}


def _naive(probes, labels, distractors, counts, max_rank, fars, seed):
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    x = distractors / np.linalg.norm(distractors, axis=1, keepdims=True)
    order = np.random.default_rng(seed).permutation(len(x))
    out = {}
    for d in counts:
        s = p @ x[order[:d]].T
        ranks = []
        for i in range(len(p)):
            for j in range(len(p)):
                if i != j and labels[i] == labels[j]:
                    ranks.append(1 + int(np.sum(s[i] >= p[i] @ p[j])))
        ranks = np.array(ranks)
        cmc = np.array([np.mean(ranks <= r) for r in range(1, max_rank + 1)])
        genuine = np.array([p[i] @ p[j] for i in range(len(p)) for j in range(i + 1, len(p)) if labels[i] == labels[j]])
        impostors = np.sort(s.ravel())[::-1]
        tar = {f: float(np.mean(genuine > impostors[math.floor(f * impostors.size)])) for f in fars}
        out[d] = (cmc, tar, impostors)
    return out


def test_matches_naive_reference() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    centers = rng.normal(size=(6, 8))
    probes = (centers[labels] + 0.9 * rng.normal(size=(24, 8))).astype(np.float32)
    distractors = rng.normal(size=(500, 8)).astype(np.float32)
    counts, fars = (10, 100, 500), (0.01, 0.001)
    got = megaface_evaluate(probes, labels, distractors, counts, max_rank=5, fars=fars, seed=7, chunk_size=37,
                            hist_bins=16, progress=False)
    want = _naive(probes.astype(np.float64), labels, distractors.astype(np.float64), counts, 5, fars, 7)
    for d in counts:
        cmc, tar, impostors = want[d]
        assert np.allclose(got[d].cmc, cmc), d
        assert got[d].tar_at_far == pytest.approx(tar), d
        # histogram ROC at the bin edges (edge e: impostors scoring >= e)
        edges = np.linspace(-1, 1, 17)[:-1][::-1]
        assert np.allclose(got[d].roc_far, [(impostors >= e).mean() for e in edges])
    # more distractors can only make identification harder (nested sets)
    assert got[10].rank1 >= got[100].rank1 >= got[500].rank1 and 0 < got[500].rank1 < 1


def test_float16_memmap_matches_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 3)
    probes = rng.normal(size=(9, 6)).astype(np.float32)
    values = rng.normal(size=(300, 6)).astype(np.float16)
    mm = np.memmap(tmp_path / "d.f16", dtype=np.float16, mode="w+", shape=values.shape)
    mm[:] = values
    mm.flush()
    ro = np.memmap(tmp_path / "d.f16", dtype=np.float16, mode="r", shape=values.shape)
    kw = dict(max_rank=3, fars=(0.01,), chunk_size=64, hist_bins=64, progress=False)
    a = megaface_evaluate(probes, labels, ro, (30, 300), **kw)
    b = megaface_evaluate(probes, labels, values.astype(np.float32), (30, 300), **kw)
    for d in (30, 300):
        assert np.array_equal(a[d].cmc, b[d].cmc) and a[d].tar_at_far == b[d].tar_at_far


def test_tie_counts_against_the_mate() -> None:
    probes, labels = _deg(0, 0, 90, 90), np.array([0, 0, 1, 1])
    res = megaface_evaluate(probes, labels, _deg(0, 180), [2], max_rank=2, fars=(0.2,), progress=False)[2]
    # probes at 0 deg: mate score 1 ties the distractor at 0 deg -> rank 2; probes at 90 deg: rank 1
    assert res.cmc.tolist() == [0.5, 1.0]


def test_bad_input_errors() -> None:
    probes, labels = np.ones((4, 3), np.float32), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"distractor_counts must lie in 1 \.\. 5"):
        megaface_evaluate(probes, labels, np.ones((5, 3), np.float32), (10,), progress=False)
    with pytest.raises(ValueError, match=r"must be \(M, 3\)"):
        megaface_evaluate(probes, labels, np.ones((5, 2), np.float32), (5,), progress=False)
    with pytest.raises(ValueError, match="no probe identity has two images"):
        megaface_evaluate(probes, np.arange(4), np.ones((5, 3), np.float32), (5,), progress=False)


def test_false_accepts_allowed_is_exact() -> None:
    from sphereface_lib.evaluation.megaface import _false_accepts_allowed

    # in floating point 0.29 * 100 = 28.999... and 1e-6 * 3530 * 1e6 = 3529.999...
    assert _false_accepts_allowed(0.29, 100) == 29 and _false_accepts_allowed(1e-6, 3530 * 10**6) == 3530
    probes, labels = _deg(0, 30, 90, 110), np.array([0, 0, 1, 1])
    distractors = _deg(*np.linspace(0, 360, 25, endpoint=False))
    res = megaface_evaluate(probes, labels, distractors, [25], fars=(0.29,), progress=False)[25]
    impostors = np.sort((probes @ distractors.T).ravel())[::-1]
    assert res.threshold_at_far[0.29] == pytest.approx(impostors[29], abs=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused_naming_the_rows(bad: float, tmp_path: Path) -> None:
    from sphereface_lib.evaluation.checks import NonFiniteFeaturesError

    rng = np.random.default_rng(2)
    probes, labels = rng.normal(size=(6, 4)).astype(np.float32), np.repeat(np.arange(3), 2)
    distractors = rng.normal(size=(50, 4)).astype(np.float16)
    distractors[[3, 41]] = bad
    mm = np.memmap(tmp_path / "d.f16", dtype=np.float16, mode="w+", shape=distractors.shape)
    mm[:] = distractors
    # rows are named as in the distractor file, whatever the chunk they fall in
    with pytest.raises(NonFiniteFeaturesError, match=r"distractor_features: 1 of .* \(rows 3\)|\(rows 41\)"):
        megaface_evaluate(probes, labels, mm, [50], chunk_size=7, progress=False)
    with pytest.raises(NonFiniteFeaturesError, match=r"distractor_features: 2 of 50 .*\(rows 3, 41\)"):
        megaface_evaluate(probes, labels, distractors, [50], progress=False)
    probes[4, 0] = bad
    with pytest.raises(NonFiniteFeaturesError, match=r"probe_features: 1 of 6 .*\(rows 4\)"):
        megaface_evaluate(probes, labels, distractors[:3], [3], progress=False)


def test_a_list_of_distractors_works_and_a_ragged_one_is_named() -> None:
    probes, labels = _deg(0, 20, 90, 100), np.array([0, 0, 1, 1])
    as_list = _deg(5, 170, 270).tolist()
    res = megaface_evaluate(probes.tolist(), labels, as_list, [3], max_rank=3, fars=(0.1,), progress=False)[3]
    assert res.cmc.tolist() == [0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="distractor_features must be an \\(N, D\\) float array or memmap, got list"):
        megaface_evaluate(probes, labels, [[1.0, 0.0], [1.0]], [2], progress=False)
    with pytest.raises(ValueError, match=r"distractor_features must be an \(N, D\) float array or memmap, got "
                                         r"float32 \(3,\)"):
        megaface_evaluate(probes, labels, [1.0, 0.0, 1.0], [2], progress=False)


def test_scan_kernel_histogram_matches_torch_histc() -> None:
    """The compiled pass counts scores in the bins torch.histc(min=-1, max=1) uses, edges included."""
    import torch

    from sphereface_lib.evaluation.megaface import _scan_scores

    bins = 4096
    edges = (np.arange(bins + 1) / bins * 2 - 1).astype(np.float32)
    values = np.concatenate([edges, np.nextafter(edges, np.float32(2)), np.nextafter(edges, np.float32(-2)),
                             np.random.default_rng(0).uniform(-1, 1, 20000).astype(np.float32)])
    s = values[: len(values) // 4 * 4].reshape(4, -1).copy()
    want = torch.histc(torch.from_numpy(np.clip(s, -1, 1)), bins=bins, min=-1, max=1).long().numpy()
    hist = np.zeros((2, bins), np.int64)
    top = np.full((4, 3), -np.inf, np.float32)
    cand, cand_n = np.empty((4, 8), np.float32), np.zeros(4, np.int64)
    before = s.copy()
    _scan_scores(s, top, hist, cand, cand_n, np.float32(0.999), np.float32(bins))
    clamped = np.clip(s, -1, 1)
    assert np.array_equal(hist.sum(axis=0), want) and np.array_equal(s, before)  # s is read, not written
    assert np.array_equal(top, -np.sort(-clamped, axis=1)[:, :3]) and top.max() == 1
    assert np.array_equal(cand_n, (clamped > np.float32(0.999)).sum(axis=1))
    for i in range(4):  # candidates in column order, up to the row's capacity
        above = clamped[i][clamped[i] > np.float32(0.999)][:8]
        assert len(above) and np.array_equal(cand[i, : len(above)], above)


@pytest.mark.parametrize("chunk_size", [7, 64, 1000])
def test_exact_tar_threshold_with_ties_at_the_seeded_bound(chunk_size: int) -> None:
    """The first chunk's candidate bound comes from a sample of its scores; scores tied at that bound (here
    every distractor is one of three directions, so impostor scores take few values) must all stay
    candidates, and the threshold at each FAR is the exact (allowed + 1)-th highest impostor score."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 2)
    probes = rng.normal(size=(10, 4)).astype(np.float32)
    directions = rng.normal(size=(3, 4)).astype(np.float32)
    distractors = directions[rng.integers(0, 3, 400)]
    fars = (0.001, 0.01, 0.3)
    got = megaface_evaluate(probes, labels, distractors, [400], fars=fars, chunk_size=chunk_size, progress=False)[400]
    want = _naive(probes.astype(np.float64), labels, distractors.astype(np.float64), [400], 10, fars, 0)[400]
    impostors = want[2]
    for f in fars:
        assert got.threshold_at_far[f] == pytest.approx(impostors[math.floor(f * impostors.size)], abs=1e-6), f
    assert got.tar_at_far == pytest.approx(want[1])


def test_a_row_with_more_candidates_than_its_row_holds() -> None:
    """The first chunk's sample of columns holds only low scores, and the 200 columns after it score high, highest
    last: each row gets more candidates than its candidate row holds (64), so they are taken from the chunk
    itself, clamped (the distractor at 10 deg scores 1 + 1 float32 step against the probe at 10 deg)."""
    probes, labels = _deg(0, 10, 90, 100), np.array([0, 0, 1, 1])
    distractors = _deg(*np.linspace(220, 230, 600), *np.linspace(20, 10, 200))
    fars = (1e-4, 0.001, 0.005, 0.01)  # at most 33 kept: a sample of the first 576 columns
    got = megaface_evaluate(probes, labels, distractors, [800], fars=fars, chunk_size=800, progress=False)[800]
    impostors = np.sort((probes.astype(np.float64) @ distractors.astype(np.float64).T).ravel())[::-1]
    for f in fars:
        assert got.threshold_at_far[f] == pytest.approx(impostors[math.floor(f * impostors.size)], abs=1e-6), f
    assert got.threshold_at_far[1e-4] == 1.0  # the highest impostor score, clamped


def test_a_duplicated_image_ties_its_mate_whatever_the_rounding() -> None:
    """Every probe identity is one image twice, and the distractors hold that image too: each mate ties a
    distractor, which counts against the mate (rank-1 0). Some of these unit vectors score 1 + 1 float32 step
    against themselves: mates and distractors must be scored (and clamped) under one rule for the tie to hold."""
    import torch

    rng = np.random.default_rng(5)
    faces = rng.normal(size=(150, 64)).astype(np.float32)
    probes, labels = np.repeat(faces, 2, axis=0), np.repeat(np.arange(150), 2)
    distractors = np.concatenate([faces, rng.normal(size=(50, 64)).astype(np.float32)])
    unit = torch.from_numpy(faces.copy())
    unit /= torch.linalg.vector_norm(unit, dim=1, keepdim=True)
    assert int((torch.mm(unit, unit.T).diagonal() > 1).sum()) > 10  # the case that needs the one rule
    res = megaface_evaluate(probes, labels, distractors, [200], max_rank=2, fars=(1e-3,), progress=False)[200]
    assert res.rank1 == 0.0 and res.cmc[1] == 1.0
    # 60 false accepts allowed among 300 impostor scores of 1 (a probe and its duplicate): threshold 1, which no
    # genuine score (1, clamped) exceeds
    assert res.threshold_at_far[1e-3] == 1.0 and res.tar_at_far[1e-3] == 0.0


@pytest.mark.parametrize("where", ["probes", "distractors"])
def test_all_zero_rows_are_refused_naming_the_rows(where: str) -> None:
    from sphereface_lib.evaluation.checks import ZeroFeaturesError

    rng = np.random.default_rng(2)
    probes, labels = rng.normal(size=(6, 4)).astype(np.float32), np.repeat(np.arange(3), 2)
    distractors = rng.normal(size=(50, 4)).astype(np.float16)
    if where == "probes":
        probes[[1, 4]] = 0
        pattern = r"probe_features: 2 of 6 feature rows are all zero \(rows 1, 4\)"
    else:
        distractors[[3, 41]] = 0
        pattern = r"distractor_features: 1 of 7 feature rows are all zero \(rows 3\)"
    with pytest.raises(ZeroFeaturesError, match=pattern):
        megaface_evaluate(probes, labels, distractors, [50], chunk_size=7, seed=0, progress=False)
