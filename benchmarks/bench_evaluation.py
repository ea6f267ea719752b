"""Speed of the evaluation protocols, each against a peer or a plain reference run in the same process.

* LFW 10-fold on 6,000 pairs of 1024-d features: ``lfw_10fold`` (sorted scores + searchsorted over the
  threshold grid) against (a) a loop over the 20,001 thresholds of evaluation.m (must give the same
  accuracies) and (b) the usual scikit-learn recipe (``KFold`` + ``roc_curve`` thresholds per fold).
* MegaFace Challenge 1 with 3,530 probe images (80 identities) and 512-d features, distractors in a float16
  memmap on disk: identification (rank-1, CMC up to rank 10) and exact TAR at FAR 1e-6 by
  ``megaface_evaluate`` against exact faiss-cpu (``IndexFlatIP``, index build included: read, convert,
  normalize, add; then one search for each probe's top max(10, FAR x impostors + 1), which holds both the CMC
  and the exact TAR threshold). Contenders alternate ``--repeats`` times; each line gives the time ratio
  ours / faiss (below 1: ours is faster), peak resident memory, and whether rank-1, CMC and TAR agree.

Features are random with a fixed seed (identity centres plus noise); only times and agreement matter here.

    python benchmarks/bench_evaluation.py                       # 100k and 1M distractors, 2 repeats
    python benchmarks/bench_evaluation.py --distractors 100000 --repeats 3
    python benchmarks/bench_evaluation.py --quick               # 10k only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this file is in

from sphereface_lib.evaluation import lfw_10fold, megaface_evaluate  # noqa: E402
from sphereface_lib.evaluation.megaface import _false_accepts_allowed, _probe_pairs  # noqa: E402
from sphereface_lib.evaluation.verification import threshold_grid  # noqa: E402

MAX_RANK, FAR = 10, 1e-6


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


def _timed(fn):
    """(result, seconds, peak RSS MiB, peak anonymous MiB) of ``fn()``."""
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    return out, elapsed, mem.peak, mem.peak_anon


def _spread(values: list[float]) -> str:
    """min-max and median of several ratios (a shared machine's load moves single runs by 10-20%)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{min(values):.2f}-{max(values):.2f}, median {float(np.median(values)):.2f}"


# ------------------------------------------------------------------------------------------------ LFW
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


def sklearn_lfw_10fold(a: np.ndarray, b: np.ndarray, same: np.ndarray) -> np.ndarray:
    """The usual scikit-learn recipe: KFold(10), mean subtraction, cosine, best roc_curve threshold per fold."""
    from sklearn.metrics import roc_curve
    from sklearn.model_selection import KFold

    accs = []
    for train, test in KFold(n_splits=10, shuffle=False).split(a):
        mu = np.vstack([a[train], b[train]]).mean(axis=0)
        na = (a - mu) / np.linalg.norm(a - mu, axis=1, keepdims=True)
        nb = (b - mu) / np.linalg.norm(b - mu, axis=1, keepdims=True)
        s = (na * nb).sum(axis=1)
        fpr, tpr, thr = roc_curve(same[train], s[train])
        pos = same[train].sum()
        correct = tpr * pos + (1 - fpr) * (len(train) - pos)
        t = thr[np.argmax(correct)]
        accs.append(np.mean((s[test] >= t) == same[test]))
    return np.array(accs)


def bench_lfw(dim: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    a = rng.normal(size=(6000, dim)).astype(np.float32)
    b = (np.where(same[:, None], a, rng.normal(size=(6000, dim))) + 12.0 * rng.normal(size=(6000, dim))).astype(np.float32)
    lfw_10fold(a, b, same)  # warm up BLAS
    sklearn_lfw_10fold(a, b, same)
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = lfw_10fold(a, b, same)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk = sklearn_lfw_10fold(a, b, same)
        t_sk = time.perf_counter() - t0
        ratios.append(t_fast / t_sk)
        print(f"LFW 10-fold, 6000 pairs x {dim}-d: lfw_10fold {t_fast:.3f} s ({fast}) | scikit-learn KFold + "
              f"roc_curve {t_sk:.3f} s ({100 * sk.mean():.2f}%) | ratio ours/sklearn {t_fast / t_sk:.3f}")
    t0 = time.perf_counter()
    accs, thrs = naive_lfw_10fold(a.astype(np.float64), b.astype(np.float64), same)
    t_naive = time.perf_counter() - t0
    agree = np.array_equal(fast.accuracies, accs) and np.allclose(fast.thresholds, thrs, atol=1e-9)
    print(f"  loop over {len(threshold_grid())} thresholds (evaluation.m) {t_naive:.2f} s: same accuracies and "
          f"thresholds as lfw_10fold: {agree}")
    print(f"  LFW ratio ours/sklearn over {repeats} runs: {_spread(ratios)}")


# ------------------------------------------------------------------------------------------------ MegaFace
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


def faiss_megaface(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray, d: int,
                   seed: int = 0) -> tuple[np.ndarray, float, np.ndarray]:
    """CMC up to MAX_RANK, the exact threshold at FAR and the genuine scores, by faiss ``IndexFlatIP`` (exact
    inner product), index build included."""
    import faiss

    rows = np.sort(np.random.default_rng(seed).permutation(len(distractors))[:d])
    x = np.asarray(distractors[rows], dtype=np.float32)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    del x
    p = np.array(probes, dtype=np.float32)  # a copy: normalize_L2 works in place
    faiss.normalize_L2(p)
    n_imp = len(p) * d
    allowed = _false_accepts_allowed(FAR, n_imp)
    scores, _ = index.search(p, max(MAX_RANK, allowed + 1))  # each row sorted, highest first
    scores = np.clip(scores, -1.0, 1.0)
    pair_probe, pair_mate = _probe_pairs(labels)
    pp = np.clip(p @ p.T, -1.0, 1.0)
    mates = pp[pair_probe, pair_mate]
    beaten_by = (scores[pair_probe, :MAX_RANK] >= mates[:, None]).sum(axis=1)
    cmc = np.array([(beaten_by < r).mean() for r in range(1, MAX_RANK + 1)])
    flat = scores.ravel()
    threshold = -np.partition(-flat, allowed)[allowed]  # the (allowed + 1)-th highest impostor score
    genuine = mates[pair_probe < pair_mate]
    return cmc, float(threshold), genuine


def bench_megaface(counts: list[int], dim: int, chunk_size: int, repeats: int, with_faiss: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_megaface_") as tmp:
        t0 = time.perf_counter()
        probes, labels, distractors = make_features(Path(tmp), max(counts), dim)
        rss, anon = PeakMemory._sample()
        print(f"MegaFace: 3530 probes of 80 identities, {max(counts)} distractors x {dim}-d float16 memmap "
              f"(made in {time.perf_counter() - t0:.1f} s), {torch.get_num_threads()} torch threads, chunk "
              f"{chunk_size}, RSS before {rss:.0f} MiB (anonymous {anon:.0f} MiB)")
        megaface_evaluate(probes, labels, distractors, [min(counts)], fars=(FAR,), progress=False)  # compile kernel
        for d in counts:
            ratios = []
            for r in range(repeats):
                res, t_ours, peak, peak_anon = _timed(lambda: megaface_evaluate(
                    probes, labels, distractors, [d], max_rank=MAX_RANK, fars=(FAR,), chunk_size=chunk_size,
                    progress=False)[d])
                line = (f"  D={d:>8} run {r + 1}: ours {t_ours:6.1f} s (peak RSS {peak:5.0f} MiB, anonymous "
                        f"{peak_anon:5.0f}) rank-1 {100 * res.rank1:.3f}% TAR@1e-6 {100 * res.tar_at_far[FAR]:.3f}%")
                if with_faiss:
                    (cmc, thr, genuine), t_faiss, fpeak, fanon = _timed(
                        lambda: faiss_megaface(probes, labels, distractors, d))
                    ratios.append(t_ours / t_faiss)
                    # both sum float32 products in their own order: a genuine score within float32 rounding
                    # (1e-6) of the threshold may fall on either side; count those instead of calling it a bug
                    differ = abs(round(res.tar_at_far[FAR] * len(genuine)) - int(np.sum(genuine > thr)))
                    edge = int(np.sum(np.abs(genuine - thr) < 1e-6))
                    line += (f" | faiss {t_faiss:6.1f} s (peak RSS {fpeak:5.0f} MiB, anonymous {fanon:5.0f}) | "
                             f"ratio ours/faiss {t_ours / t_faiss:.2f} | CMC differs by at most "
                             f"{int(np.abs(np.round((cmc - res.cmc) * res.num_probe_pairs)).max())} of "
                             f"{res.num_probe_pairs} probe pairs at a rank, rank-1 by "
                             f"{int(round(abs(cmc[0] - res.rank1) * res.num_probe_pairs))}, "
                             f"thresholds differ by {abs(thr - res.threshold_at_far[FAR]):.1e}, TAR differs by "
                             f"{differ} of {len(genuine)} genuine pairs ({edge} within 1e-6 of the threshold)")
                print(line, flush=True)
            if ratios:
                print(f"  D={d}: ratio ours/faiss over {repeats} runs {_spread(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MegaFace at 10k distractors only")
    parser.add_argument("--distractors", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="MegaFace distractor counts D (default: 100k 1M)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each contender, alternating (default 2)")
    parser.add_argument("--lfw-dim", type=int, default=1024, help="LFW feature dimension (default 1024)")
    parser.add_argument("--dim", type=int, default=512, help="MegaFace feature dimension (default 512)")
    parser.add_argument("--chunk-size", type=int, default=4096, help="distractors per chunk (default 4096)")
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss-cpu reference")
    parser.add_argument("--skip-lfw", action="store_true", help="MegaFace only")
    args = parser.parse_args()
    counts = [10_000] if args.quick else sorted(args.distractors)
    if min(counts) < 1 or args.repeats < 1:
        parser.error(f"--distractors and --repeats must be positive, got {counts} and {args.repeats}")
    if not args.no_faiss:
        try:
            import faiss  # noqa: F401
        except ImportError:
            parser.error("the faiss reference needs faiss-cpu (.venv/bin/pip install faiss-cpu==1.15.1), "
                         "or pass --no-faiss")
    if not args.skip_lfw:
        bench_lfw(args.lfw_dim, args.repeats)
    bench_megaface(counts, args.dim, args.chunk_size, args.repeats, not args.no_faiss)


if __name__ == "__main__":
    main()
