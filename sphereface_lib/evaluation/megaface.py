"""MegaFace Challenge 1: identification (rank-1, CMC) and verification (TAR at FAR) under D distractors.

Paper Table 5 and Fig. 6 (identification and verification against 10 .. 1M distractors).

Identification: every image of every probe identity serves in turn as the probe, with one other image of
the same identity in the gallery among D distractors; the mate's rank is 1 + the number of distractors
scoring at least as high as the mate (ties count against the mate). Verification: genuine pairs are all
pairs of probe images of one identity, impostor pairs are all (probe, distractor) pairs. Every score (mate,
genuine and distractor alike) is a float32 cosine clamped to [-1, 1], so a duplicated image ties its mate.
A feature holding NaN or infinity, or all zero, is an error naming its rows, never a score.

The distractor set of size D is the first D rows of a fixed-seed permutation, so the sets are nested.
Distractors are streamed in chunks. Each chunk's probe x distractor score matrix is one matrix product,
then one pass of a compiled kernel (numba, parallel over probes) that clamps each score to [-1, 1], counts it
in a fixed histogram (for the ROC), inserts it into its probe's top ``max_rank`` only when it beats the
current k-th best (enough for the CMC up to ``max_rank``), and keeps it as an impostor candidate only when
it beats the current lowest of the highest impostor scores kept (for an exact TAR at the requested FARs;
before enough are kept, a bound taken from a sample of the chunk).
Memory stays bounded by ``probes x chunk_size`` whatever the number of distractors.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

import numba
import numpy as np
import torch
from tqdm import tqdm

from .checks import require_usable

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


def _unit_rows(x: np.ndarray, name: str, rows: np.ndarray | None = None) -> torch.Tensor:
    """Rows of float32 ``x`` scaled to unit length, in place; a row holding NaN or infinity, or all zero, is named."""
    t = torch.from_numpy(x)
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if not bool((torch.isfinite(norms) & (norms > 0)).all()):  # a bad row, or a norm beyond float32's range
        require_usable(x, name, rows)
        norms = torch.linalg.vector_norm(t.double(), dim=1, keepdim=True)
        return t.copy_(t.double() / norms)
    return t.div_(norms)


def _float32(x: np.ndarray) -> np.ndarray:
    """``x`` as a float32 array (float16 is widened by torch, exactly and several times faster than numpy); a
    wider row whose entries float32 cannot hold (beyond ~3.4e38 or below ~1e-38) is first scaled to a largest
    entry of 1: a score is a cosine, so only the row's direction counts."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        return torch.from_numpy(x).float().numpy()
    if x.dtype.kind == "f" and x.dtype.itemsize > 4 and len(x):
        peak = np.abs(x).max(axis=1)
        out_of_range = (peak > 1e38) | ((peak > 0) & (peak < 1e-30))
        if out_of_range.any():
            x = x.copy()
            x[out_of_range] /= peak[out_of_range, None]  # an infinite row becomes NaN: named as non-finite
    return x.astype(np.float32, copy=False)


def _identities(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each identity's images, identities in sorted order, images in their given order."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    return np.split(order, starts[1:]) if len(order) else []


def _probe_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered (probe, mate) index pairs of distinct images of one identity, identity by identity."""
    probe, mate = [], []
    for members in _identities(labels):
        i, j = np.meshgrid(members, members, indexing="ij")
        off = i != j
        probe.append(i[off])
        mate.append(j[off])
    if not probe:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(probe).astype(np.int64), np.concatenate(mate).astype(np.int64)


def _mate_scores(p: torch.Tensor, labels: np.ndarray, block_rows: int = 256) -> torch.Tensor:
    """The score of each pair of :func:`_probe_pairs`, in its order, clamped to [-1, 1] as the distractors' are.

    Identities are scored together in products of at least ``block_rows`` probes (all of them when fewer), not
    one small product per identity: a matrix product that large scores an image and its duplicate among the
    distractors with the same rounding, so their tie counts against the mate as documented.
    """
    blocks: list[list[np.ndarray]] = [[]]
    rows = 0
    for members in _identities(labels):
        if rows >= block_rows:
            blocks.append([])
            rows = 0
        blocks[-1].append(members)
        rows += len(members)
    if len(blocks) > 1 and rows < block_rows:  # a short last block joins the one before
        blocks[-2].extend(blocks.pop())
    scores = []
    for block in blocks:
        b = p[torch.from_numpy(np.concatenate(block))]
        s = torch.mm(b, b.T)
        start = 0
        for members in block:
            n = len(members)
            scores.append(s[start:start + n, start:start + n][~torch.eye(n, dtype=torch.bool)])
            start += n
    return torch.cat(scores).clamp_(-1.0, 1.0) if scores else torch.zeros(0)


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


def _parallel_kernel(fn):
    """``fn`` compiled by numba, parallel, without fast-math, cached on disk where numba finds a cache folder."""
    try:
        return numba.njit(parallel=True, nogil=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(parallel=True, nogil=True)(fn)


@_parallel_kernel
def _scan_scores(s, top, hist, cand, cand_n, thr, nbins):  # pragma: no cover - compiled
    """One pass over a chunk's scores ``s`` (probes x distractors, float32), each clamped to [-1, 1].

    Counts each score in ``hist[block]`` (bins as ``torch.histc(min=-1, max=1)``: float32 (v + 1) / 2 x bins);
    inserts it into its probe's descending ``top`` row when above that row's last entry; appends it to its
    probe's ``cand`` row when above ``thr`` (``cand_n`` counts them and may exceed the row's capacity).
    One branch per score (above the lower of the two bounds) keeps the common path short; ``s`` is not written.
    """
    n, m = s.shape
    blocks, bins = hist.shape
    k = top.shape[1]
    cap = cand.shape[1]
    one, half_bins = np.float32(1.0), nbins * np.float32(0.5)
    for blk in numba.prange(blocks):
        h = hist[blk]
        for i in range(blk * n // blocks, (blk + 1) * n // blocks):
            row = s[i]
            kth = top[i, k - 1]
            low = kth if kth < thr else thr
            c = cand_n[i]
            for j in range(m):
                v = row[j]
                v = one if v > one else v
                v = -one if v < -one else v
                b = int((v + one) * half_bins)  # = (v + 1) / 2 x bins exactly: halving is exact
                h[b if b < bins - 1 else bins - 1] += 1
                if v > low:
                    if v > kth:
                        pos = k - 1
                        while pos > 0 and top[i, pos - 1] < v:
                            top[i, pos] = top[i, pos - 1]
                            pos -= 1
                        top[i, pos] = v
                        kth = top[i, k - 1]
                    if v > thr:
                        if c < cap:
                            cand[i, c] = v
                        c += 1
                    low = kth if kth < thr else thr
            cand_n[i] = c


def _candidate_threshold(kept: np.ndarray, s: torch.Tensor, keep: int) -> float:
    """The score a chunk's impostor score must beat to join the ``keep`` highest kept so far (``kept``).

    Once ``keep`` are kept, their lowest (a tie changes nothing). Before that, the ``keep``-th highest of the
    kept and a sample of this chunk's scores (its first columns, clamped as the scan clamps), lowered by one
    float32 step so that ties are kept: the ``keep`` highest of everything can lie only at or above it, so the
    first chunk does not hand all of its scores to the merge. -inf while too few scores exist for that.
    """
    if not keep:
        return np.inf
    if len(kept) == keep:
        return float(kept.min())
    cols = min(s.shape[1], 64 * -(-keep // s.shape[0]))
    pool = np.concatenate([kept, s[:, :cols].clamp(-1.0, 1.0).numpy().ravel()])
    if len(pool) < keep:
        return -np.inf
    kth = np.partition(pool, len(pool) - keep)[len(pool) - keep]
    return float(np.nextafter(kth, np.float32(-np.inf)))


def _as_features(x: object, name: str) -> np.ndarray:
    """An (N, D) float array, or a memmap as it is; anything else is named."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be an (N, D) float array or memmap, got {type(x).__name__}: {e}") from None
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be an (N, D) float array or memmap, got {x.dtype} {x.shape}")
    return x


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
    the first D rows of ``np.random.default_rng(seed).permutation(M)`` form the set of size D. Features
    holding NaN or infinity raise :class:`~sphereface_lib.evaluation.checks.NonFiniteFeaturesError` naming
    the rows (distractor rows as they are read).
    """
    probes = _as_features(probe_features, "probe_features")
    labels = np.asarray(probe_labels)
    if labels.shape != (len(probes),):
        raise ValueError(f"probe_labels must hold one label per probe ({len(probes)}), got shape {labels.shape}")
    distractor_features = _as_features(distractor_features, "distractor_features")
    if distractor_features.shape[1] != probes.shape[1]:
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
    p = _unit_rows(np.array(_float32(probes)), "probe_features")
    n_probes = len(p)
    pair_probe, pair_mate = _probe_pairs(labels)
    if len(pair_probe) == 0:
        raise ValueError("no probe identity has two images: identification needs a probe and a gallery mate")
    mate_scores = _mate_scores(p, labels)
    genuine = mate_scores[torch.from_numpy(pair_probe < pair_mate)].numpy()
    genuine_sorted = np.sort(genuine)

    order = np.random.default_rng(seed).permutation(num_distractors)[: counts[-1]]
    keep = max((_false_accepts_allowed(f, n_probes * d) + 1 for f in fars for d in counts), default=0)
    top = np.full((n_probes, max_rank), -np.inf, np.float32)
    blocks = min(n_probes, 4 * numba.get_num_threads())  # a few blocks per thread: a busy core delays less
    hist = np.zeros((blocks, hist_bins), np.int64)
    cand = np.empty((n_probes, max(64, 4 * -(-keep // n_probes))), np.float32)
    cand_n = np.zeros(n_probes, np.int64)
    impostor_top = np.empty(0, np.float32)  # the highest `keep` impostor scores so far, unordered
    buffer = torch.empty(n_probes * min(chunk_size, counts[-1]))
    snapshots: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for start, end, reached in tqdm(_segments(counts, chunk_size), disable=not progress, desc="distractors"):
        rows = np.sort(order[start:end])
        x = _unit_rows(_float32(distractor_features[rows]), "distractor_features", rows)
        s = buffer[: n_probes * len(rows)].view(n_probes, len(rows))
        torch.mm(p, x.T, out=s)
        thr = _candidate_threshold(impostor_top, s, keep)
        cand_n[:] = 0
        _scan_scores(s.numpy(), top, hist, cand, cand_n, np.float32(thr), np.float32(hist_bins))
        if keep:
            if cand_n.max() > cand.shape[1]:  # a row overflowed its candidate row: take them from s itself
                clamped = s.clamp(-1.0, 1.0)
                new = clamped[clamped > float(thr)].numpy()
            else:
                new = cand[np.arange(cand.shape[1]) < cand_n[:, None]]
            merged = np.concatenate([impostor_top, new])
            impostor_top = np.partition(merged, len(merged) - keep)[len(merged) - keep:] if len(merged) > keep \
                else merged
        if reached is not None:
            snapshots[reached] = (top.copy(), np.sort(impostor_top)[::-1], hist.sum(axis=0))

    edges = np.linspace(-1.0, 1.0, hist_bins + 1)[:-1]
    roc_tar = ((len(genuine) - np.searchsorted(genuine_sorted, edges, side="left")) / len(genuine))[::-1]
    mates = mate_scores.numpy()[:, None]
    results: dict[int, MegaFaceResult] = {}
    for d in counts:
        top_d, imp_d, hist_d = snapshots[d]
        beaten_by = (top_d[pair_probe] >= mates).sum(axis=1)
        cmc = np.array([(beaten_by < r).mean() for r in range(1, max_rank + 1)])
        n_imp = n_probes * d
        tar, thr_at = {}, {}
        for f in fars:
            t = float(imp_d[_false_accepts_allowed(f, n_imp)])
            thr_at[float(f)] = t
            tar[float(f)] = float(len(genuine) - np.searchsorted(genuine_sorted, t, side="right")) / len(genuine)
        imp_at_or_above = np.cumsum(hist_d[::-1])[::-1]
        roc_far = (imp_at_or_above / n_imp)[::-1]
        results[d] = MegaFaceResult(d, float(cmc[0]), cmc, tar, thr_at, roc_far, roc_tar,
                                    len(pair_probe), len(genuine), n_imp)
    return results
