"""Speed of the evaluation protocols, each against a plain reference run in the same process.

* LFW 10-fold on 6,000 pairs of 1024-d features: ``lfw_10fold`` (sorted scores + searchsorted over the
  threshold grid) against a loop over the 20,001 thresholds; both must give the same accuracies.
* MegaFace Challenge 1 with 3,530 probe images (80 identities) and 512-d features: identification and
  verification at each distractor count (float16 memmap on disk, streamed in chunks): time and peak memory;
  at the smallest count also against a full probe x distractor score matrix (same rank-1 and TAR@FAR).

Features are random with a fixed seed (identity centres plus noise); only times and agreement matter here.

    python benchmarks/bench_evaluation.py            # 10k, 100k and 1M distractors
    python benchmarks/bench_evaluation.py --quick    # 10k only
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from sphereface_lib.evaluation import lfw_10fold, megaface_evaluate
from sphereface_lib.evaluation.verification import threshold_grid


class PeakMemory:
    """Samples the process's resident memory in a background thread; ``peak`` and ``peak_anon`` in MiB."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = self.peak_anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _sample() -> tuple[float, float]:
        rss = psutil.Process().memory_info().rss / 2**20
        anon = rss
        status = Path("/proc/self/status")
        if status.is_file():  # anonymous memory excludes the memmap's file pages
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) / 1024
        return rss, anon

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = self._sample()
            self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def naive_lfw_10fold(a: np.ndarray, b: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """evaluation.m as written: per fold, normalize, then try every threshold of the grid in a loop."""
    folds = np.repeat(np.arange(10), len(same) // 10)
    grid = threshold_grid()
    accs, thrs = np.empty(10), np.empty(10)
    for k in range(10):
        test, train = folds == k, folds != k
        mu = np.vstack([a[train], b[train]]).mean(axis=0)
        na = (a - mu) / np.linalg.norm(a - mu, axis=1, keepdims=True)
        nb = (b - mu) / np.linalg.norm(b - mu, axis=1, keepdims=True)
        s = (na * nb).sum(axis=1)
        s_same, s_diff = s[train & same], s[train & ~same]
        correct = np.array([np.count_nonzero(s_same > t) + np.count_nonzero(s_diff < t) for t in grid])
        thrs[k] = grid[correct == correct.max()].mean()
        accs[k] = (np.count_nonzero(s[test & same] > thrs[k]) + np.count_nonzero(s[test & ~same] < thrs[k])) / test.sum()
    return accs, thrs


def bench_lfw(dim: int) -> None:
    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    a = rng.normal(size=(6000, dim)).astype(np.float32)
    b = (np.where(same[:, None], a, rng.normal(size=(6000, dim))) + 12.0 * rng.normal(size=(6000, dim))).astype(np.float32)
    lfw_10fold(a, b, same)  # warm up BLAS
    t0 = time.perf_counter()
    fast = lfw_10fold(a, b, same)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    accs, thrs = naive_lfw_10fold(a.astype(np.float64), b.astype(np.float64), same)
    t_naive = time.perf_counter() - t0
    agree = np.array_equal(fast.accuracies, accs) and np.allclose(fast.thresholds, thrs, atol=1e-9)
    print(f"LFW 10-fold, 6000 pairs x {dim}-d: accuracy {fast}")
    print(f"  lfw_10fold {t_fast:.3f} s | loop over {len(threshold_grid())} thresholds {t_naive:.2f} s | "
          f"speed-up x{t_naive / t_fast:.0f} | same results: {agree}")


def make_features(workdir: Path, n_distractors: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.memmap]:
    """3,530 probes of 80 identities (centre + noise) and a float16 distractor memmap, fixed seed."""
    rng = np.random.default_rng(1)
    labels = np.sort(np.r_[np.arange(80), rng.integers(0, 80, 3530 - 80)])
    centres = rng.normal(size=(80, dim))
    probes = (centres[labels] + 1.8 * rng.normal(size=(3530, dim))).astype(np.float32)
    with open(workdir / "distractors.f16", "wb") as f:  # plain writes: no file pages stay mapped
        for start in range(0, n_distractors, 65536):
            end = min(start + 65536, n_distractors)
            f.write(rng.standard_normal((end - start, dim), dtype=np.float32).astype(np.float16).tobytes())
    return probes, labels, np.memmap(workdir / "distractors.f16", dtype=np.float16, mode="r",
                                     shape=(n_distractors, dim))


def full_matrix_reference(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray, d: int, far: float,
                          seed: int) -> tuple[float, float]:
    """Rank-1 and TAR@FAR from the whole probe x distractor score matrix (memory grows with D)."""
    p = torch.nn.functional.normalize(torch.from_numpy(probes), dim=1)
    rows = np.sort(np.random.default_rng(seed).permutation(len(distractors))[:d])
    x = torch.nn.functional.normalize(torch.from_numpy(np.asarray(distractors[rows], dtype=np.float32)), dim=1)
    s = (p @ x.T).clamp_(-1, 1)
    pp = p @ p.T
    same = torch.from_numpy(labels[:, None] == labels[None, :])
    off_diag = ~torch.eye(len(p), dtype=torch.bool)
    best_distractor = s.max(dim=1).values
    mates = same & off_diag
    rank1 = (pp > best_distractor[:, None])[mates].double().mean().item()
    genuine = pp[mates & torch.triu(torch.ones_like(mates), diagonal=1)]
    impostors = torch.sort(s.flatten(), descending=True).values
    threshold = impostors[math.floor(far * impostors.numel())]
    return rank1, (genuine > threshold).double().mean().item()


def bench_megaface(counts: list[int], dim: int, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_megaface_") as tmp:
        t0 = time.perf_counter()
        probes, labels, distractors = make_features(Path(tmp), max(counts), dim)
        rss, anon = PeakMemory._sample()
        print(f"MegaFace: 3530 probes of 80 identities, {max(counts)} distractors x {dim}-d float16 memmap "
              f"(made in {time.perf_counter() - t0:.1f} s), {torch.get_num_threads()} torch threads, "
              f"RSS before {rss:.0f} MiB (anonymous {anon:.0f} MiB)")
        for i, d in enumerate(counts):
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                res = megaface_evaluate(probes, labels, distractors, [d], fars=(1e-6,), chunk_size=chunk_size,
                                        progress=False)[d]
                elapsed = time.perf_counter() - t0
            print(f"  D={d:>8}: {elapsed:7.1f} s, peak RSS {mem.peak:6.0f} MiB (anonymous {mem.peak_anon:6.0f} MiB) | "
                  f"rank-1 {100 * res.rank1:.2f}% over {res.num_probe_pairs} pairs, "
                  f"TAR@FAR=1e-6 {100 * res.tar_at_far[1e-6]:.2f}% ({res.num_genuine} genuine, "
                  f"{res.num_impostors:.2e} impostors)")
            if i == 0:
                with PeakMemory() as ref_mem:
                    t0 = time.perf_counter()
                    rank1, tar = full_matrix_reference(probes, labels, distractors, d, 1e-6, seed=0)
                    ref_time = time.perf_counter() - t0
                agree = math.isclose(rank1, res.rank1, abs_tol=1e-9) and math.isclose(tar, res.tar_at_far[1e-6],
                                                                                      abs_tol=1e-9)
                print(f"    full-matrix reference at D={d}: {ref_time:.1f} s, peak RSS {ref_mem.peak:.0f} MiB "
                      f"(anonymous {ref_mem.peak_anon:.0f} MiB) | time ratio reference/chunked "
                      f"x{ref_time / elapsed:.2f} | same rank-1 and TAR: {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MegaFace at 10k distractors only")
    parser.add_argument("--distractors", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="MegaFace distractor counts D (default: 10k 100k 1M)")
    parser.add_argument("--lfw-dim", type=int, default=1024, help="LFW feature dimension (default 1024)")
    parser.add_argument("--dim", type=int, default=512, help="MegaFace feature dimension (default 512)")
    parser.add_argument("--chunk-size", type=int, default=4096, help="distractors per chunk (default 4096)")
    args = parser.parse_args()
    counts = [10_000] if args.quick else sorted(args.distractors)
    if min(counts) < 1:
        parser.error(f"--distractors must be positive, got {counts}")
    bench_lfw(args.lfw_dim)
    bench_megaface(counts, args.dim, args.chunk_size)


if __name__ == "__main__":
    main()
