"""Synthetic stand-ins for CASIA-WebFace, LFW, YouTube Faces and MegaFace, identity-disjoint (open set).

:func:`synthetic_benchmark` renders every split once into the packed format, writes LFW ``pairs.txt`` and
``ytf_splits.csv`` with the same writers as the real files, and caches the result under a folder named by a
hash of :data:`~.faces.GENERATOR_VERSION` and every generation parameter; a second call loads the cache.

Identities are integers; each split owns its own range, so no identity is in two splits:
training ``[0, T)``, LFW next, then YTF, then the MegaFace probe set; MegaFace distractor ``i`` is identity
``DISTRACTOR_OFFSET + i`` (one image each, as MegaFace's distractors are mostly single photos of strangers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock

from ..packed import PackedDataset, PackedWriter, atomic_write_text
from ..protocols import PairList, lfw_key, write_lfw_pairs, write_ytf_splits, ytf_frame_key
from .faces import GENERATOR_VERSION, OUTPUT_SIZES, identity_latent, image_nuisance, render, video_nuisance

DISTRACTOR_OFFSET = 2**31
_RENDER_CHUNK = 1024


def identity_name(identity: int) -> str:
    """The person name of a synthetic identity (used in keys ``name/0001`` and protocol files)."""
    return f"Synth_{identity:07d}"


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of a synthetic benchmark (all of them enter the cache key)."""

    seed: int = 0
    height: int = 56
    width: int = 48
    grey: bool = False
    difficulty: float = 1.0
    # training set (CASIA-WebFace-like): long-tailed images per identity
    train_identities: int = 400
    train_images_median: int = 22
    train_images_min: int = 6
    train_images_max: int = 120
    # LFW-like: folds x (pairs matched + pairs mismatched), identities of each fold disjoint
    lfw_folds: int = 10
    lfw_pairs_per_fold: int = 600  # 2x LFW's 300: 12,000 pairs, binomial SE 0.22 pts at 94%
    lfw_identities_per_fold: int = 100
    lfw_images_min: int = 2
    lfw_images_max: int = 10
    # YTF-like: splits x (pairs same + pairs different) video pairs
    ytf_splits: int = 10
    ytf_pairs_per_split: int = 400  # 1.6x YTF's 250: 8,000 video pairs, SE 0.27 pts at 94%
    ytf_identities_per_split: int = 150
    ytf_videos_min: int = 2
    ytf_videos_max: int = 5
    ytf_frames: int = 4
    # MegaFace-like: FaceScrub-like probe set, distractors (rendered lazily beyond the packed ones)
    megaface_probe_identities: int = 160
    megaface_probe_images: int = 10
    megaface_distractors: int = 10_000

    def __post_init__(self) -> None:
        if (self.height, self.width) not in OUTPUT_SIZES:
            raise ValueError(f"SyntheticConfig: (height, width)=({self.height}, {self.width}) is not supported; "
                             f"use one of {list(OUTPUT_SIZES)}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and f.name != "seed" and v < 1:
                raise ValueError(f"SyntheticConfig.{f.name}={v}: must be a positive integer")
        if self.lfw_images_min < 2 or self.ytf_videos_min < 2:
            raise ValueError("SyntheticConfig: lfw_images_min and ytf_videos_min must be >= 2 "
                             "(matched pairs need two images / videos of one person)")
        if not (self.train_images_min <= self.train_images_median <= self.train_images_max):
            raise ValueError("SyntheticConfig: need train_images_min <= train_images_median <= train_images_max")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def cache_key(self) -> str:
        """Hash of the generator version and every parameter: the cache folder's name."""
        blob = json.dumps({"generator": GENERATOR_VERSION, "config": dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # identity ranges, one per split (disjoint by construction)
    def ranges(self) -> dict[str, range]:
        t = self.train_identities
        lfw = self.lfw_folds * self.lfw_identities_per_fold
        ytf = self.ytf_splits * self.ytf_identities_per_split
        p = self.megaface_probe_identities
        return {"train": range(0, t), "lfw": range(t, t + lfw), "ytf": range(t + lfw, t + lfw + ytf),
                "megaface_probe": range(t + lfw + ytf, t + lfw + ytf + p)}


SIZES: dict[str, SyntheticConfig] = {
    "smoke": SyntheticConfig(height=28, width=24, train_identities=20, train_images_median=8, train_images_min=4,
                             train_images_max=16, lfw_pairs_per_fold=10, lfw_identities_per_fold=8,
                             lfw_images_max=5, ytf_pairs_per_split=6, ytf_identities_per_split=6,
                             ytf_videos_max=3, ytf_frames=2, megaface_probe_identities=5,
                             megaface_probe_images=4, megaface_distractors=100),
    "default": SyntheticConfig(),
}


def _rng(cfg: SyntheticConfig, purpose: int) -> np.random.Generator:
    """Generator for the layout of the splits (counts, pairs), separate from every image's stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, purpose], spawn_key=(7,))))


def train_counts(cfg: SyntheticConfig) -> np.ndarray:
    """Images per training identity: log-normal (long tail, like CASIA-WebFace), clipped to [min, max]."""
    n = np.exp(_rng(cfg, 1).normal(np.log(cfg.train_images_median), 0.7, cfg.train_identities))
    return np.clip(np.rint(n), cfg.train_images_min, cfg.train_images_max).astype(np.int64)


class SyntheticDistractors:
    """MegaFace-like distractors rendered on demand: image ``i`` is identity ``DISTRACTOR_OFFSET + i``.

    Scales to 1,000,000 images without holding them: iterate :meth:`chunks` or call :meth:`render`.
    """

    def __init__(self, cfg: SyntheticConfig, count: int) -> None:
        if not 0 < count <= DISTRACTOR_OFFSET:
            raise ValueError(f"distractor count={count}: use 1 .. {DISTRACTOR_OFFSET}")
        self.cfg, self.count = cfg, count

    def __len__(self) -> int:
        return self.count

    def keys(self, start: int, stop: int) -> list[str]:
        return [lfw_key(identity_name(DISTRACTOR_OFFSET + i), 1) for i in range(start, stop)]

    def render(self, start: int, stop: int) -> np.ndarray:
        """Images ``start .. stop - 1`` as uint8 (n, H, W, C)."""
        if not 0 <= start <= stop <= self.count:
            raise IndexError(f"distractors [{start}, {stop}) outside [0, {self.count})")
        ids = range(DISTRACTOR_OFFSET + start, DISTRACTOR_OFFSET + stop)
        z, v = _latents(self.cfg, ids), _nuisances(self.cfg, ids, [0] * (stop - start))
        return render(z, v, size=self.cfg.size, grey=self.cfg.grey, difficulty=self.cfg.difficulty)

    def chunks(self, chunk_size: int = _RENDER_CHUNK) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(images, keys) chunk by chunk, in order."""
        for s in range(0, self.count, chunk_size):
            e = min(self.count, s + chunk_size)
            yield self.render(s, e), self.keys(s, e)


@dataclass(frozen=True)
class SyntheticBenchmark:
    """Paths and packed datasets of one synthetic benchmark, read like the real ones."""

    root: Path
    config: SyntheticConfig
    train: PackedDataset
    lfw: PackedDataset
    lfw_pairs: Path
    ytf: PackedDataset
    ytf_splits: Path
    megaface_probe: PackedDataset
    megaface_distractors: PackedDataset
    distractors: SyntheticDistractors


def _latents(cfg: SyntheticConfig, ids) -> np.ndarray:
    return np.stack([identity_latent(cfg.seed, int(i)) for i in ids])


def _nuisances(cfg: SyntheticConfig, ids, indices) -> np.ndarray:
    return np.stack([image_nuisance(cfg.seed, int(i), int(j)) for i, j in zip(ids, indices)])


def _pack_stills(root: Path, cfg: SyntheticConfig, source: str, identities: list[int], counts: np.ndarray) -> None:
    """Render and pack images 1..counts[k] of identities[k] (label k, key ``name/0001``)."""
    ids = np.repeat(np.asarray(identities, np.int64), counts)
    labels = np.repeat(np.arange(len(identities)), counts)
    index = np.concatenate([np.arange(1, c + 1) for c in counts])
    names = [identity_name(i) for i in identities]
    h, w = cfg.size
    with PackedWriter(root, height=h, width=w, channels=1 if cfg.grey else 3, source=source,
                      version=GENERATOR_VERSION, identities=names, overwrite=True,
                      extra={"synthetic": dataclasses.asdict(cfg)}) as wr:
        for s in range(0, len(ids), _RENDER_CHUNK):
            sl = slice(s, s + _RENDER_CHUNK)
            img = render(_latents(cfg, ids[sl]), _nuisances(cfg, ids[sl], index[sl]), size=cfg.size,
                         grey=cfg.grey, difficulty=cfg.difficulty)
            wr.add(img, labels[sl], [lfw_key(names[l], n) for l, n in zip(labels[sl], index[sl])])


def _fold_pairs(rng: np.random.Generator, members: range, n: int, count: np.ndarray, first: int, key,
                shortage: str) -> tuple[list[str], list[str]]:
    """One fold of a verification protocol: n matched pairs (two items of one member, drawn from all such pairs)
    then n distinct mismatched pairs (a random item of each of two members). Member k has the items first ..
    first + count[k] - 1, named ``key(k, item)``; ``shortage``, formatted with the number of matched pairs on
    offer, is the error when there are fewer than n."""
    cand = [(k, i, j) for k in members for i in range(first, first + count[k]) for j in range(i + 1, first + count[k])]
    if len(cand) < n:
        raise ValueError(shortage.format(len(cand)))
    matched = [(key(k, i), key(k, j)) for k, i, j in (cand[c] for c in rng.permutation(len(cand))[:n])]
    mismatched: dict[tuple[str, str], None] = {}  # insertion-ordered set
    while len(mismatched) < n:
        a, b = rng.choice(list(members), 2, replace=False)
        mismatched.setdefault((key(a, int(rng.integers(first, first + count[a]))),
                               key(b, int(rng.integers(first, first + count[b])))))
    pairs = matched + list(mismatched)
    return [a for a, _ in pairs], [b for _, b in pairs]


def _lfw_pairs(cfg: SyntheticConfig, counts: np.ndarray) -> PairList:
    """Folds of matched pairs (two images of one person) then mismatched pairs (two people), as pairs.txt."""
    rng = _rng(cfg, 2)
    idents = list(cfg.ranges()["lfw"])
    P, n = cfg.lfw_identities_per_fold, cfg.lfw_pairs_per_fold
    ka, kb, same, folds = [], [], [], []
    for f in range(cfg.lfw_folds):
        a, b = _fold_pairs(rng, range(f * P, (f + 1) * P), n, counts, 1,
                           lambda k, i: lfw_key(identity_name(idents[k]), i),
                           f"SyntheticConfig: LFW fold {f + 1} offers {{}} matched pairs, lfw_pairs_per_fold={n}; "
                           "raise lfw_identities_per_fold or lfw_images_max")
        ka += a
        kb += b
        same += [True] * n + [False] * n
        folds += [f] * (2 * n)
    return PairList.from_pairs(ka, kb, same, folds, source="synthetic LFW")


def _ytf(root: Path, cfg: SyntheticConfig) -> PairList:
    """Pack video frames (key ``Person/number/frame``) and return the split pairs of videos."""
    rng = _rng(cfg, 3)
    idents = list(cfg.ranges()["ytf"])
    nvid = rng.integers(cfg.ytf_videos_min, cfg.ytf_videos_max + 1, len(idents))
    F = cfg.ytf_frames
    videos = [(k, v) for k in range(len(idents)) for v in range(nvid[k])]
    names = [identity_name(i) for i in idents]
    h, w = cfg.size
    with PackedWriter(root, height=h, width=w, channels=1 if cfg.grey else 3, source="synthetic-ytf",
                      version=GENERATOR_VERSION, identities=names, overwrite=True,
                      extra={"synthetic": dataclasses.asdict(cfg), "frames_per_video": F}) as wr:
        step = max(1, _RENDER_CHUNK // F)
        for s in range(0, len(videos), step):
            batch = videos[s:s + step]
            z = np.repeat(_latents(cfg, [idents[k] for k, _ in batch]), F, 0)
            v = np.concatenate([video_nuisance(cfg.seed, idents[k], vid, F) for k, vid in batch])
            img = render(z, v, size=cfg.size, grey=cfg.grey, difficulty=cfg.difficulty)
            keys = [ytf_frame_key(f"{names[k]}/{vid}", t) for k, vid in batch for t in range(F)]
            wr.add(img, np.repeat([k for k, _ in batch], F), keys)
    P, n = cfg.ytf_identities_per_split, cfg.ytf_pairs_per_split
    ka, kb, same, folds = [], [], [], []
    for sp in range(cfg.ytf_splits):
        a, b = _fold_pairs(rng, range(sp * P, (sp + 1) * P), n, nvid, 0, lambda k, v: f"{names[k]}/{v}",
                           f"SyntheticConfig: YTF split {sp + 1} offers {{}} same-person video pairs, "
                           f"ytf_pairs_per_split={n}; raise ytf_identities_per_split or ytf_videos_max")
        ka += a
        kb += b
        same += [True] * n + [False] * n
        folds += [sp] * (2 * n)
    return PairList.from_pairs(ka, kb, same, folds, source="synthetic YTF")


def _resolve(size: str | SyntheticConfig, overrides: dict) -> SyntheticConfig:
    if isinstance(size, SyntheticConfig):
        cfg = size
    elif size in SIZES:
        cfg = SIZES[size]
    else:
        raise ValueError(f"size={size!r}: use one of {sorted(SIZES)} or a SyntheticConfig")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def synthetic_benchmark(cache_dir: str | os.PathLike, size: str | SyntheticConfig = "default",
                        **overrides) -> SyntheticBenchmark:
    """Train, LFW (+ pairs.txt), YTF (+ ytf_splits.csv), MegaFace probe and distractors, generated once.

    ``size`` is a preset name (:data:`SIZES`) or a :class:`SyntheticConfig`; keyword ``overrides`` replace
    fields (``difficulty=1.3``, ``height=28, width=24``). The result lives in
    ``cache_dir/synthetic-<cache_key>/`` and is reused while the generator version and parameters match.
    """
    cfg = _resolve(size, overrides)
    root = Path(cache_dir) / f"synthetic-{cfg.cache_key()}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):  # one builder at a time; others wait, then reuse its work
        r = cfg.ranges()

        def missing(part: str) -> bool:
            return not (root / part / "manifest.json").is_file()

        if missing("train"):
            _pack_stills(root / "train", cfg, "synthetic-train", list(r["train"]), train_counts(cfg))
        lfw_counts = _rng(cfg, 4).integers(cfg.lfw_images_min, cfg.lfw_images_max + 1, len(r["lfw"]))
        if missing("lfw"):
            _pack_stills(root / "lfw", cfg, "synthetic-lfw", list(r["lfw"]), lfw_counts)
        if not (root / "pairs.txt").is_file():
            write_lfw_pairs(root / "pairs.txt", _lfw_pairs(cfg, lfw_counts), view=2)
        if missing("ytf") or not (root / "ytf_splits.csv").is_file():
            write_ytf_splits(root / "ytf_splits.csv", _ytf(root / "ytf", cfg))
        if missing("megaface_probe"):
            counts = np.full(len(r["megaface_probe"]), cfg.megaface_probe_images)
            _pack_stills(root / "megaface_probe", cfg, "synthetic-megaface-probe", list(r["megaface_probe"]),
                         counts)
        distractors = SyntheticDistractors(cfg, cfg.megaface_distractors)
        if missing("megaface_distractors"):
            h, w = cfg.size
            names = [identity_name(DISTRACTOR_OFFSET + i) for i in range(len(distractors))]
            with PackedWriter(root / "megaface_distractors", height=h, width=w, channels=1 if cfg.grey else 3,
                              source="synthetic-megaface-distractors", version=GENERATOR_VERSION, identities=names,
                              overwrite=True, extra={"synthetic": dataclasses.asdict(cfg)}) as wr:
                start = 0
                for img, keys in distractors.chunks():
                    wr.add(img, np.arange(start, start + len(img)), keys)
                    start += len(img)
        cfg_path = root / "config.json"
        if not cfg_path.is_file():
            atomic_write_text(cfg_path, json.dumps({"generator": GENERATOR_VERSION,
                                                    "config": dataclasses.asdict(cfg)}, indent=2))
    return SyntheticBenchmark(
        root=root, config=cfg, train=PackedDataset(root / "train"), lfw=PackedDataset(root / "lfw"),
        lfw_pairs=root / "pairs.txt", ytf=PackedDataset(root / "ytf"), ytf_splits=root / "ytf_splits.csv",
        megaface_probe=PackedDataset(root / "megaface_probe"),
        megaface_distractors=PackedDataset(root / "megaface_distractors"), distractors=distractors)
