"""Where a report came from: the machine, the CPU dispatch in force, the versions and the library commit.

CPU training differs between x86 machines because three libraries pick their kernels by the CPU they find:
torch's own vectorized ATen kernels (AVX2 or AVX-512 code paths), MKL (GEMMs; its dispatch also differs
between Intel and AMD parts) and oneDNN (convolutions). Each has a documented control, and the runner sets
all three (:data:`DISPATCH_PINS`) in the environment of the notebook kernels of the profiles in
:data:`PINNED_PROFILES`, so that two x86-64 CPUs with AVX2 compute the same numbers:

* ``ATEN_CPU_CAPABILITY=avx2``: torch's vectorized kernels use the AVX2 code path (also on AVX-512 CPUs);
* ``MKL_CBWR=AVX2``: MKL's Conditional Numerical Reproducibility, the AVX2 code path on every CPU;
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's just-in-time kernels use at most AVX2.

The thread count changes the last bits as well (reductions are split per thread; the block records the
counts): set ``OMP_NUM_THREADS`` to a report's count to match it exactly. What the pins cannot make
identical: a GPU (other kernels altogether), another architecture (ARM has
neither AVX2 nor MKL), CPUs without AVX2, and other versions of torch, MKL or oneDNN.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from .project import project_root

#: environment variables that pin the CPU dispatch (read when torch, MKL and oneDNN load)
DISPATCH_PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
#: profiles whose notebooks run with :data:`DISPATCH_PINS` (the paper profile runs on GPUs, unpinned)
PINNED_PROFILES: tuple[str, ...] = ("smoke", "quick", "default", "real", "lfw")
#: set by the runner for the kernels, read by :func:`show_provenance` inside a notebook
PROFILE_VARIABLE = "SPHEREFACE_PROFILE"
COMMIT_VARIABLE = "SPHEREFACE_COMMIT"
#: set by the runner for the kernels: the ``--data`` path ("" for none) and the ``--param`` overrides (JSON)
DATA_VARIABLE = "SPHEREFACE_DATA"
OVERRIDES_VARIABLE = "SPHEREFACE_OVERRIDES"
PROJECT_ROOT = project_root()
#: what the runner writes while it runs; a change there does not make the library's tree "dirty"
OUTPUT_PATHS: tuple[str, ...] = ("reports", "README.md", "tests/notebooks")


def dispatch_environment(profile: str) -> dict[str, str]:
    """The variables the runner sets for ``profile``'s kernels (empty for an unpinned profile)."""
    return dict(DISPATCH_PINS) if profile in PINNED_PROFILES else {}


def run_settings_environment(data: str | None, overrides: dict[str, Any]) -> dict[str, str]:
    """The variables that hand a run's data path and overrides to its kernels (read by :func:`run_settings`)."""
    return {DATA_VARIABLE: data or "", OVERRIDES_VARIABLE: json.dumps(overrides, sort_keys=True)}


def run_settings() -> dict[str, Any]:
    """``{"data": path or None, "overrides": {...}}`` as the runner set them for this kernel; empty outside a run."""
    if OVERRIDES_VARIABLE not in os.environ:
        return {}
    return {"data": os.environ.get(DATA_VARIABLE) or None, "overrides": json.loads(os.environ[OVERRIDES_VARIABLE])}


def library_commit(root: Path = PROJECT_ROOT) -> str:
    """``git rev-parse --short HEAD`` of ``root``, ``+dirty`` when tracked files (outside the runner's outputs)
    differ from it; ``unknown`` without git or outside a repository."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in OUTPUT_PATHS))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _library_versions(config: str) -> dict[str, str]:
    """MKL and oneDNN versions from ``torch.__config__.show()`` ("not built in" when absent)."""
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", config)
    return {"mkl": mkl.group(1) if mkl else "not built in", "onednn": onednn.group(1) if onednn else "not built in"}


def collect_provenance(profile: str | None = None, wall_s: float | None = None, commit: str | None = None) -> dict[str, Any]:
    """The provenance block of this process: machine, dispatch, threads, GPU, versions, commit, profile, the run's
    data path and overrides (when the runner set them), wall time.

    ``commit`` defaults to :func:`library_commit` (the runner takes it once, before it writes anything).
    """
    import numpy
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    block: dict[str, Any] = {
        "cpu": cpu_model(),
        "architecture": platform.machine(),
        "os": platform.system(),
        "logical_cpus": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **_library_versions(torch.__config__.show()),
        "dispatch_pins": {k: os.environ[k] for k in DISPATCH_PINS if k in os.environ},
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "gpu": gpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "commit": commit or os.environ.get(COMMIT_VARIABLE) or library_commit(),
        "profile": profile or os.environ.get(PROFILE_VARIABLE) or "interactive",
        **run_settings(),
    }
    if wall_s is not None:
        block["wall_s"] = round(float(wall_s), 1)
    return block


def provenance_lines(block: dict[str, Any]) -> list[str]:
    """The block as short lines (Markdown list items without the bullet)."""
    pins = block.get("dispatch_pins") or {}
    dispatch = (", ".join(f"`{k}={v}`" for k, v in pins.items()) + " (pinned)") if pins else "not pinned"
    lines = [
        f"machine: {block['cpu']} ({block['logical_cpus']} logical CPUs, {block['architecture']}, {block['os']}); "
        f"GPU: {', '.join(block['gpu']) or 'none'}",
        f"CPU dispatch: torch {block['torch_cpu_capability']}, MKL {block['mkl']}, oneDNN {block['onednn']}; {dispatch}",
        f"threads: {block['threads']['intra_op']} intra-op, {block['threads']['inter_op']} inter-op",
        f"software: Python {block['python']}, torch {block['torch']}, numpy {block['numpy']}; "
        f"library commit {block['commit']}",
        f"profile: {block['profile']}" + (f"; wall time {block['wall_s']:.1f} s" if "wall_s" in block else ""),
    ]
    if "overrides" in block:
        overrides = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sorted(block["overrides"].items())) or "none"
        data = f"`{block['data']}`" if block.get("data") else "none (the profile's own)"
        lines.append(f"data: {data}; overrides (--param): {overrides}")
    return lines


def provenance_markdown(block: dict[str, Any]) -> str:
    """The block as a Markdown list."""
    return "\n".join(f"- {line}" for line in provenance_lines(block))


def show_provenance() -> dict[str, Any]:
    """Display this kernel's provenance in a notebook (a short Markdown list) and return the block.

    Seeds and every other parameter are in the notebook's parameters; the runner adds the wall time to the
    notebook's metadata (``metadata.sphereface.provenance``).
    """
    from IPython.display import Markdown, display

    block = collect_provenance()
    display(Markdown("**Provenance**\n\n" + provenance_markdown(block)))
    return block


if __name__ == "__main__":  # the runner's view of a kernel with the pins: the block as JSON
    print(json.dumps(collect_provenance()))
