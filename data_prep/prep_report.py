"""A timed preparation run and its JSON report: MTCNN throughput, counts, misses and partial faces.

:func:`timed_prepare` runs :func:`data_prep.pipeline.prepare` and measures the detector's throughput over the
images detected in this run (shards reused from an interrupted run are counted apart, not as detected);
:func:`write_report` stores the counts and lists in ``<pack>/prep_report.json`` atomically and prints them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sphereface_lib.data.packed import atomic_write_text

from .pipeline import Item, PrepConfig, PrepResult, _shard_is_complete, _shard_name, prepare, printable

#: a crop with more than this fraction outside its photo is listed as a partial face
PARTIAL_ABOVE = 0.10
REPORT_NAME = "prep_report.json"


@dataclass(frozen=True)
class Throughput:
    """Images detected and aligned in this run, images whose shards an earlier run had finished, wall time."""

    detected: int
    reused: int
    seconds: float
    workers: int

    @property
    def images_per_s(self) -> float:
        return self.detected / self.seconds if self.seconds > 0 else float("nan")


def reused_images(items: Sequence[Item], config: PrepConfig) -> int:
    """How many of ``items`` lie in shards an earlier (interrupted) run of the same command already finished."""
    size = config.shard_size
    shards = [list(items[i:i + size]) for i in range(0, len(items), size)]
    done = 0
    for index, shard in enumerate(shards):
        path = config.work / _shard_name(index, shard, config)
        if path.is_file() and _shard_is_complete(path, len(shard), config.channels):
            done += len(shard)
    return done


def timed_prepare(items: Sequence[Item], config: PrepConfig, **kwargs: Any) -> tuple[PrepResult, Throughput]:
    """:func:`~data_prep.pipeline.prepare` with its wall time and the number of images it detected itself."""
    reused = reused_images(items, config)
    start = time.perf_counter()
    result = prepare(items, config, **kwargs)
    return result, Throughput(len(items) - reused, reused, time.perf_counter() - start, config.workers)


def partial_faces(result: PrepResult) -> list[tuple[str, float]]:
    """``(key, fraction)`` of every crop with more than :data:`PARTIAL_ABOVE` of its area outside its photo."""
    outside = np.load(result.dataset.root / "outside.npy")
    return [(result.dataset.keys[i], round(float(outside[i]), 4)) for i in np.flatnonzero(outside > PARTIAL_ABOVE)]


def write_report(result: PrepResult, speed: Throughput, extra: dict[str, Any] | None = None,
                 stream=None) -> dict[str, Any]:
    """Write ``<pack>/prep_report.json`` (counts, throughput, misses, partial faces, ``extra``) and print a summary."""
    stream = sys.stderr if stream is None else stream
    misses = [printable(p.path) for p in result.problems if p.kind == "no_face"]
    partial = partial_faces(result)
    report = {
        "counts": {**result.counts, "missed": len(misses), "partial": len(partial)},
        "failures_by_kind": result.dataset.manifest.extra.get("failures_by_kind", {}),
        "throughput": {**asdict(speed), "images_per_s": round(speed.images_per_s, 2)},
        "partial_above": PARTIAL_ABOVE,
        "missed": misses,
        "partial_faces": [{"key": k, "outside": f} for k, f in partial],
        **(extra or {}),
        "command": result.dataset.manifest.extra.get("command", ""),
    }
    path = Path(result.dataset.root) / REPORT_NAME
    atomic_write_text(path, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"  MTCNN throughput: {speed.detected} images detected and aligned in {speed.seconds:.1f} s = "
          f"{speed.images_per_s:.1f} images/s with {speed.workers} worker(s)"
          + (f"; {speed.reused} images reused from an interrupted run" if speed.reused else ""), file=stream)
    print(f"  missed (no face): {len(misses)}; partial faces (over {PARTIAL_ABOVE:.0%} of the crop outside the "
          f"photo): {len(partial)}; report: {path}", file=stream)
    return report
