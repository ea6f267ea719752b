"""MegaFace Challenge 1: identification (rank-1, CMC) and verification (TAR at FAR) under D distractors.

Paper Table 5 and Fig. 6 (identification and verification against 10 .. 1M distractors).

Identification: every image of every probe identity serves in turn as the probe, with one other image of
the same identity in the gallery among D distractors; the mate's rank is 1 + the number of distractors
scoring at least as high as the mate (ties count against the mate). Verification: genuine pairs are all
pairs of probe images of one identity, impostor pairs are all (probe, distractor) pairs.

The distractor set of size D is the first D rows of a fixed-seed permutation, so the sets are nested.
Distractors are streamed in chunks; for each probe only its top ``max_rank`` distractor scores are kept
(enough for the CMC up to ``max_rank``), impostor scores go to a fixed histogram (for the ROC) and to a
short list of the highest ones (for an exact TAR at the requested FARs). Memory stays bounded by
``probes x chunk_size`` whatever the number of distractors.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

MEGAFACE_DISTRACTORS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class MegaFaceResult:
    """MegaFace results for one distractor count D.

    ``cmc[r - 1]`` is the fraction of (probe, gallery mate) pairs whose mate ranks r or better;
    ``tar_at_far`` maps each requested FAR to the exact TAR (threshold = an impostor score);
    ``roc_far`` / ``roc_tar`` are the ROC at the histogram's bin edges (resolution 2 / bins).
    """

    distractors: int
    rank1: float
    cmc: np.ndarray
    tar_at_far: dict[float, float]
    threshold_at_far: dict[float, float]
    roc_far: np.ndarray
    roc_tar: np.ndarray
    num_probe_pairs: int
    num_genuine: int
    num_impostors: int


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _probe_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered (probe, mate) index pairs of distinct images of one identity."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    probe, mate = [], []
    for s, e in zip(starts, ends):
        members = order[s:e]
        i, j = np.meshgrid(members, members, indexing="ij")
        off = i != j
        probe.append(i[off])
        mate.append(j[off])
    if not probe:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(probe).astype(np.int64), np.concatenate(mate).astype(np.int64)


def _false_accepts_allowed(far: float, num_impostors: int) -> int:
    """floor(FAR x impostors), exact in decimal (1e-6 x 3.53e9 is 3530, not 3529.999... or 3530.000...1)."""
    return int(Decimal(repr(float(far))) * num_impostors)


def _segments(counts: Sequence[int], chunk_size: int) -> list[tuple[int, int, int | None]]:
    """Chunks (start, end, D reached at end or None) over the permuted distractors, split at each D."""
    out: list[tuple[int, int, int | None]] = []
    start = 0
    for d in counts:
        while start < d:
            end = min(start + chunk_size, d)
            out.append((start, end, d if end == d else None))
            start = end
    return out


@torch.inference_mode()
def megaface_evaluate(
    probe_features: np.ndarray,
    probe_labels: np.ndarray,
    distractor_features: np.ndarray,
    distractor_counts: Sequence[int] = MEGAFACE_DISTRACTORS,
    *,
    max_rank: int = 10,
    fars: Sequence[float] = (1e-6,),
    seed: int = 0,
    chunk_size: int = 4096,
    hist_bins: int = 65536,
    progress: bool = True,
) -> dict[int, MegaFaceResult]:
    """MegaFace identification and verification for each D in ``distractor_counts``; cosine scores.

    ``distractor_features`` is (M, d) float32 or float16, an array or a memmap (read chunk by chunk);
    the first D rows of ``np.random.default_rng(seed).permutation(M)`` form the set of size D.
    """
    probes = np.asarray(probe_features)
    labels = np.asarray(probe_labels)
    if probes.ndim != 2 or labels.shape != (len(probes),):
        raise ValueError(f"probe_features must be (N, d) with one label each, got {probes.shape} and {labels.shape}")
    if distractor_features.ndim != 2 or distractor_features.shape[1] != probes.shape[1]:
        raise ValueError(
            f"distractor_features must be (M, {probes.shape[1]}) like the probes, got {distractor_features.shape}"
        )
    counts = sorted({int(d) for d in distractor_counts})
    num_distractors = len(distractor_features)
    if not counts or counts[0] < 1 or counts[-1] > num_distractors:
        raise ValueError(
            f"distractor_counts must lie in 1 .. {num_distractors} (the distractors given), got {list(distractor_counts)}"
        )
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    if not all(0 < f < 1 for f in fars):
        raise ValueError(f"fars must lie strictly between 0 and 1, got {list(fars)}")
    if chunk_size < 1 or hist_bins < 2:
        raise ValueError(f"chunk_size must be >= 1 and hist_bins >= 2, got {chunk_size} and {hist_bins}")

    p = _l2_normalize(torch.from_numpy(np.ascontiguousarray(probes, dtype=np.float32)))
    n_probes = len(p)
    pair_probe, pair_mate = _probe_pairs(labels)
    if len(pair_probe) == 0:
        raise ValueError("no probe identity has two images: identification needs a probe and a gallery mate")
    probe_scores = p @ p.T
    mate_scores = probe_scores[torch.from_numpy(pair_probe), torch.from_numpy(pair_mate)]
    genuine = mate_scores[torch.from_numpy(pair_probe < pair_mate)].numpy()
    genuine_sorted = np.sort(genuine)

    order = np.random.default_rng(seed).permutation(num_distractors)[: counts[-1]]
    keep_impostors = max((_false_accepts_allowed(f, n_probes * d) + 1 for f in fars for d in counts), default=0)
    top = torch.full((n_probes, max_rank), -float("inf"))
    impostor_top = torch.empty(0)
    hist = torch.zeros(hist_bins, dtype=torch.int64)
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    # torch.histc counts in float32, exact up to 2**24 per call: keep each chunk's score count below it
    rows_per_chunk = max(1, min(chunk_size, (1 << 24) // n_probes))
    for start, end, reached in tqdm(_segments(counts, rows_per_chunk), disable=not progress, desc="distractors"):
        rows = np.sort(order[start:end])
        x = _l2_normalize(torch.from_numpy(np.asarray(distractor_features[rows], dtype=np.float32)))
        s = (p @ x.T).clamp_(-1.0, 1.0)
        k = min(max_rank, s.shape[1])
        top = torch.topk(torch.cat([top, torch.topk(s, k, dim=1).values], dim=1), max_rank, dim=1).values
        hist += torch.histc(s, bins=hist_bins, min=-1.0, max=1.0).to(torch.int64)
        if keep_impostors:
            full = len(impostor_top) == keep_impostors
            candidates = s[s > impostor_top[-1]] if full else s.flatten()
            if len(candidates) > keep_impostors:
                candidates = torch.topk(candidates, keep_impostors).values
            merged = torch.cat([impostor_top, candidates])
            impostor_top = torch.topk(merged, min(keep_impostors, len(merged))).values
        if reached is not None:
            snapshots[reached] = (top.clone(), impostor_top.clone(), hist.clone())

    edges = np.linspace(-1.0, 1.0, hist_bins + 1)[:-1]
    roc_tar = ((len(genuine) - np.searchsorted(genuine_sorted, edges, side="left")) / len(genuine))[::-1]
    mates = mate_scores.numpy()[:, None]
    results: dict[int, MegaFaceResult] = {}
    for d in counts:
        top_d, imp_d, hist_d = (t.numpy() for t in snapshots[d])
        beaten_by = (top_d[pair_probe] >= mates).sum(axis=1)
        cmc = np.array([(beaten_by < r).mean() for r in range(1, max_rank + 1)])
        n_imp = n_probes * d
        tar, thr = {}, {}
        for f in fars:
            t = float(imp_d[_false_accepts_allowed(f, n_imp)])
            thr[float(f)] = t
            tar[float(f)] = float(len(genuine) - np.searchsorted(genuine_sorted, t, side="right")) / len(genuine)
        imp_at_or_above = np.cumsum(hist_d[::-1])[::-1]
        roc_far = (imp_at_or_above / n_imp)[::-1]
        results[d] = MegaFaceResult(d, float(cmc[0]), cmc, tar, thr, roc_far, roc_tar,
                                    len(pair_probe), len(genuine), n_imp)
    return results
