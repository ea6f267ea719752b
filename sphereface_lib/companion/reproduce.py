"""The runner behind ``make reproduce``: every notebook under one profile, its parameters validated, executed on
the pinned kernel; what it leaves for a reader (pages, index, summary, README, the check against the committed
reports) is written by :mod:`.report`, the claims themselves are :mod:`.claims`.

Conventions every notebook ``notebooks/NN_name.ipynb`` follows (see :data:`NOTEBOOKS`):

* one cell tagged ``parameters``, one ``name: type = literal  # help`` line each (papermill's
  ``--help-notebook`` reads them); a profile is ``profiles/<profile>/<stem>.yaml`` holding values for some
  of those names. Unknown names and values of the wrong type are rejected before anything runs, and again
  inside the notebook (:func:`sphereface_lib.companion.parameters.check_parameters`).
  Real data enters only through a parameter named ``data`` (``--data`` / ``make reproduce DATA=...``).
* the notebook ends with :func:`~.claims.record_claims`: each claim with the paper's value and its source, ours,
  the effect with its interval, its design and its outcome (:data:`~.statistics.VERDICTS`), stored in the
  output's metadata; the runner reads them back from the executed notebook.

Each notebook is executed by papermill on the ``sphereface`` kernel into a temporary file that replaces
``reports/<profile>/<stem>.ipynb`` only on success, then rendered to ``reports/<profile>/html/`` (formulas
by a bundled MathJax, offline). A notebook whose executed copy carries the same fingerprint (notebook cells
+ parameters + library source) is skipped, so an interrupted run continues where it stopped. The kernels of
the smoke and default profiles run with the CPU dispatch pinned (:mod:`.provenance`), and every executed
notebook records where it ran, with the run's ``--data`` path and ``--param`` overrides, in
``metadata.sphereface.provenance``.

A run holds the writer lock of its reports folder (:mod:`sphereface_lib.locking`, the training run folder's) from
its first write to its last: a second run into the same folder stops with one line naming the first. A stored
report made with other ``--data``/``--param`` than this run's is listed without its claims, never mixed into
this run's summary. A full disk while writing any report is one ``disk full while writing <path>`` line, and
nothing partial stays.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .project import project_root
from ..data.packed import write_fault
from ..errors import UserError, run_command
from ..fingerprint import library_fingerprint, sha256_of_parts
from ..locking import writer_lock
from . import parameters as parameter_types
from .claims import Claim, ClaimError, read_claims
from .report import (
    CUSTOM_SUFFIX, REPORT_WRITE_FIX, NotebookRun, committed_claims, render_html, reproduce_command,
    README_PROFILES, reproduction_table, summary_markdown, summary_text, update_readme, write_index, write_report,
)
from .provenance import (
    COMMIT_VARIABLE, PROFILE_VARIABLE, dispatch_environment, library_commit, run_settings_environment,
)

PROJECT_ROOT = project_root()
KERNEL_NAME = "sphereface"
PROFILES: tuple[str, ...] = ("smoke", "quick", "default", "paper", "real", "lfw")
NOTEBOOKS: tuple[str, ...] = (
    "01_binary_example_and_margin_bounds",
    "02_exploratory_2d_features",
    "03_3d_features_on_sphere",
    "04_effect_of_m",
    "05_effect_of_depth",
    "06_lfw_ytf_comparison",
    "07_megaface",
)
HEARTBEAT_S = 30.0
#: the writer lock of a reports folder (and its owner record), inside the folder
LOCK_NAME = ".writer.lock"


class ReproduceError(UserError):
    """Bad input to the runner (profile, parameters, notebook layout); the message names the fix."""


# ----------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Layout:
    """Where notebooks, profiles and reports live (the project's folders unless a test says otherwise)."""

    notebooks_dir: Path = PROJECT_ROOT / "notebooks"
    profiles_dir: Path = PROJECT_ROOT / "profiles"
    reports_root: Path = PROJECT_ROOT / "reports"
    readme: Path = PROJECT_ROOT / "README.md"

    def notebook(self, stem: str) -> Path:
        return self.notebooks_dir / f"{stem}.ipynb"

    def profile_file(self, profile: str, stem: str) -> Path:
        return self.profiles_dir / profile / f"{stem}.yaml"

    def reports_dir(self, reports_name: str) -> Path:
        """``reports/<profile>`` (or ``reports/<profile>-custom`` for runs with ``--param``)."""
        return self.reports_root / reports_name


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The names, declared types and defaults of the notebook's ``parameters`` cell (papermill inspection)."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ReproduceError(
            f"{notebook}: no code cell tagged 'parameters' (or it is empty); tag the cell holding the "
            "notebook's parameters with 'parameters'"
        )
    return declared


def _default_value(spec: dict[str, Any]) -> tuple[bool, Any]:
    """(True, value) when the parameter's default is a Python literal, else (False, None)."""
    try:
        return True, ast.literal_eval(spec["default"])
    except (ValueError, SyntaxError, TypeError):
        return False, None


def _type_matches(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _declared_type(spec: dict[str, Any]) -> str | None:
    """The parameter's annotation as papermill read it, or None when the line has none."""
    name = spec.get("inferred_type_name")
    return name if name and name != "None" else None


def validate_parameters(values: dict[str, Any], declared: dict[str, dict[str, Any]], source: str) -> None:
    """Reject names the notebook does not declare and values of the wrong type.

    The type is the parameter's annotation when it has one (list elements and ``Optional`` included),
    else the type of its default. ``source`` names where the values came from, for the error message.
    """
    problems = []
    for name, value in values.items():
        if name not in declared:
            problems.append(f"unknown parameter {name!r}; the notebook declares: {', '.join(sorted(declared))}")
            continue
        annotation = _declared_type(declared[name])
        if annotation is not None:
            try:
                ok = parameter_types.matches(value, annotation)
            except parameter_types.ParameterError as err:
                raise ReproduceError(f"parameter {name!r} of the notebook: {err}") from None
            if not ok:
                problems.append(f"parameter {name!r} = {value!r} ({type(value).__name__}) but the notebook "
                                f"declares {annotation}; give a {annotation}")
            continue
        literal, default = _default_value(declared[name])
        if literal and not _type_matches(value, default):
            problems.append(
                f"parameter {name!r} = {value!r} ({type(value).__name__}) but the notebook's default is "
                f"{declared[name]['default']} ({type(default).__name__}); give a {type(default).__name__}"
            )
    if problems:
        raise ReproduceError(f"{source}:\n  " + "\n  ".join(problems))


def load_profile(layout: Layout, profile: str, stem: str) -> dict[str, Any]:
    """The parameter values of ``profiles/<profile>/<stem>.yaml`` (a YAML mapping; empty file = defaults)."""
    import yaml

    path = layout.profile_file(profile, stem)
    if not path.is_file():
        raise ReproduceError(
            f"{path}: missing; every notebook needs one parameters file per profile ({', '.join(PROFILES)}) "
            "— create it (an empty file keeps the notebook's defaults)"
        )
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ReproduceError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ReproduceError(f"{path}: must be a mapping 'name: value', one parameter a line")
    return values


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` items (several may share one string: ``"iterations=200 seeds=[0, 1]"``), VALUE in YAML."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        for part in re.split(r"\s+(?=[A-Za-z_]\w*=)", item.strip()):
            name, sep, text = part.partition("=")
            if not sep or not name.isidentifier():
                raise ReproduceError(f"--param {part!r}: write NAME=VALUE, e.g. iterations=200 or seeds=[0,1]")
            try:
                overrides[name] = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ReproduceError(f"--param {part!r}: the value is not valid YAML ({err})") from None
    return overrides


def data_parameter(layout: Layout, data: str | Path) -> str:
    """``--data`` as the notebooks receive it: as experiments.resolve_path reads it, relative to the project root
    inside the project (no absolute path of this machine in the reports), else absolute (links resolved)."""
    path = Path(data).resolve()
    if not path.exists():
        raise ReproduceError(f"--data {path}: no such file or folder; give a packed dataset from data_prep/")
    root = layout.notebooks_dir.resolve().parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def resolve_parameters(
    layout: Layout, profile: str, stem: str, data: str | None = None, overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile's values for one notebook, then ``overrides`` and ``data`` where declared, all validated."""
    declared = declared_parameters(layout.notebook(stem))
    values = load_profile(layout, profile, stem)
    validate_parameters(values, declared, str(layout.profile_file(profile, stem)))
    extra = {k: v for k, v in (overrides or {}).items() if k in declared}
    if data is not None and "data" in declared:
        extra["data"] = data
    if extra:
        validate_parameters(extra, declared, f"{stem}: --param/--data")
        values.update(extra)
    return values


# --------------------------------------------------------------------------------------- fingerprints


def source_fingerprint(notebook: Path, parameters: dict[str, Any]) -> str:
    """Hash of the notebook's cells (type, source, tags; not outputs) and the parameter values."""
    nb = json.loads(notebook.read_text())
    cells = [(c["cell_type"], "".join(c["source"]), sorted(c.get("metadata", {}).get("tags", []))) for c in nb["cells"]]
    return sha256_of_parts([json.dumps(cells).encode(), json.dumps(parameters, sort_keys=True).encode()])


# ----------------------------------------------------------------------------------------- execution


def _stored_metadata(executed: Path) -> dict[str, Any]:
    if not executed.is_file():
        return {}
    try:
        return json.loads(executed.read_text()).get("metadata", {}).get("sphereface", {})
    except (json.JSONDecodeError, OSError):
        return {}


def _same_settings(stored: dict[str, Any], data: str | None, overrides: dict[str, Any]) -> bool:
    """Whether a stored report was made with this run's ``--data`` and ``--param``; a report from before the
    runner recorded them counts as made with neither."""
    if "overrides" not in stored:
        return data is None and not overrides
    return stored.get("data") == data and stored["overrides"] == overrides


def check_kernel(kernel_name: str) -> None:
    """Fail with the fix when the Jupyter kernel the notebooks run on is not installed."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ReproduceError(
            f"Jupyter kernel {kernel_name!r} is not installed; run `make venv` (it installs the kernel into .venv)"
        ) from None


def quiet_kernel_manager(env: dict[str, str], console_log: Path) -> type:
    """A kernel manager whose kernel gets ``env`` on top of ours and writes its console (the transport
    warning, worker processes' tracebacks at shutdown) to ``console_log`` instead of the user's terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            kw["env"] = {**(kw.get("env") or os.environ), **env}
            with open(console_log, "ab") as log:
                kw["stdout"] = kw["stderr"] = log
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def _heartbeat(partial: Path, stem: str, start: float, stop: threading.Event, log: Callable[[str], None],
               every_s: float) -> None:
    """Every ``every_s`` seconds, one line naming the cell papermill is running (it saves at each cell start)."""
    while not stop.wait(every_s):
        try:
            cells = json.loads(partial.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            continue  # not written yet, or caught mid-write
        running = [i for i, c in enumerate(cells) if c.get("metadata", {}).get("papermill", {}).get("status") == "running"]
        if running:
            log(f"  {stem}: cell {running[0] + 1}/{len(cells)} running, {time.perf_counter() - start:.0f} s")


def kernel_provenance(env: dict[str, str]) -> dict[str, Any]:
    """The provenance block as a kernel with ``env`` sees it (torch, MKL and oneDNN read the pins at load)."""
    out = subprocess.run(
        [sys.executable, "-m", "sphereface_lib.companion.provenance"], env={**os.environ, **env},
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT, timeout=300,
    ).stdout
    return json.loads(out)


def execute_notebook(
    layout: Layout, reports_name: str, stem: str, parameters: dict[str, Any], library: str,
    kernel_name: str = KERNEL_NAME, env: dict[str, str] | None = None, provenance: dict[str, Any] | None = None,
    log: Callable[[str], None] = print, heartbeat_s: float = HEARTBEAT_S,
) -> NotebookRun:
    """Run one notebook with papermill into ``reports/<reports_name>/<stem>.ipynb`` (atomically) and render it.

    ``library`` is the :func:`library_fingerprint` taken before the run; ``env`` is added to the kernel's
    environment; ``provenance`` (plus the wall time) goes to ``metadata.sphereface.provenance``.
    On failure the partial notebook is kept as ``<stem>.failed.ipynb`` (and the kernel's console as
    ``<stem>.failed.log``) and the previous result is untouched.
    """
    import nbformat
    import papermill

    reports = layout.reports_dir(reports_name)
    reports.mkdir(parents=True, exist_ok=True)
    final = reports / f"{stem}.ipynb"
    tmp = reports / f".{stem}.partial.ipynb"
    fd, console_name = tempfile.mkstemp(prefix=f"{stem}.", suffix=".kernel.log")
    os.close(fd)
    console = Path(console_name)
    start = time.perf_counter()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(tmp, stem, start, stop, log, heartbeat_s), daemon=True)
    beat.start()
    try:
        try:
            papermill.execute_notebook(
                str(layout.notebook(stem)), str(tmp), parameters=parameters, kernel_name=kernel_name,
                cwd=str(layout.notebooks_dir), progress_bar=False,
                kernel_manager_class=quiet_kernel_manager(env or {}, console),
            )
        except papermill.PapermillExecutionError as err:
            os.replace(tmp, reports / f"{stem}.failed.ipynb")
            shutil.move(console, reports / f"{stem}.failed.log")
            return NotebookRun(stem, "failed", time.perf_counter() - start, error=f"{err.ename}: {err.evalue}")
        finally:
            stop.set()
            beat.join()
        console.unlink(missing_ok=True)
        wall_s = round(time.perf_counter() - start, 1)  # as stored: a later pass reads this value back
        nb = nbformat.read(str(tmp), as_version=4)
        nb.metadata.papermill["input_path"] = f"notebooks/{stem}.ipynb"
        nb.metadata.papermill["output_path"] = f"reports/{reports_name}/{stem}.ipynb"
        block = {**(provenance or {}), "wall_s": wall_s}
        nb.metadata["sphereface"] = {
            "profile": reports_name,
            "source_fingerprint": source_fingerprint(layout.notebook(stem), parameters),
            "library_fingerprint": library,
            "data": (provenance or {}).get("data"),
            "overrides": (provenance or {}).get("overrides", {}),
            "wall_s": wall_s,
            "provenance": block,
        }
        nbformat.write(nb, str(tmp))
        os.replace(tmp, final)
    except Exception as exc:  # a full disk while papermill or we write the notebook: nothing partial stays
        fault = write_fault(final, exc, REPORT_WRITE_FIX)
        if fault is None:
            raise
        tmp.unlink(missing_ok=True)
        console.unlink(missing_ok=True)
        raise fault from exc
    leaks = absolute_path_cells(nb, [layout.notebooks_dir.resolve().parent, PROJECT_ROOT, Path.home()])
    if leaks:
        log(f"note: {stem}: cells {', '.join(map(str, leaks))} print an absolute path of this machine; "
            "print paths relative to the project instead")
    (reports / f"{stem}.failed.ipynb").unlink(missing_ok=True)
    (reports / f"{stem}.failed.log").unlink(missing_ok=True)
    render_html(final, reports / "html" / f"{stem}.html")
    return NotebookRun(stem, "executed", wall_s, read_claims(json.loads(final.read_text())), provenance=block)


def absolute_path_cells(nb: Any, roots: Sequence[Path]) -> list[int]:
    """Numbers (1-based) of the cells whose source or outputs contain one of ``roots`` as an absolute path."""
    needles = {str(r) for r in roots if str(r) not in ("/", "")}
    return [i + 1 for i, cell in enumerate(nb.cells)
            if any(n in json.dumps({"s": cell.get("source"), "o": cell.get("outputs", [])}) for n in needles)]


# ------------------------------------------------------------------------------------------- running


def reproduce(
    profile: str,
    *,
    layout: Layout = Layout(),
    stems: Sequence[str] = NOTEBOOKS,
    data: Path | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    kernel_name: str = KERNEL_NAME,
    readme: bool | None = None,
    log: Callable[[str], None] = print,
    heartbeat_s: float = HEARTBEAT_S,
) -> list[NotebookRun]:
    """Run (or skip when up to date) every notebook of ``stems`` under ``profile``; write index and summary.

    All parameters are validated before the first notebook runs. With ``overrides`` (``--param``) the
    results go to ``reports/<profile>-custom/`` and never replace the profile's own reports. ``readme``
    (default: only for the profiles of ``README_PROFILES``, default and lfw, without overrides) rewrites that
    profile's results block of the README.
    After running, the claims are compared with the committed reports of the profile (logged).
    """
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == "real" and data is None:
        raise ReproduceError("profile 'real' needs a real-data folder: build one with `python -m data_prep.openset "
                             "--src <folder of identities> --out data/att_real --size 56x48 --test-identities 20 "
                             "--megaface-probe 6 --megaface-distractors 4` and pass DATA=data/att_real")
    if profile == "lfw" and data is None:
        raise ReproduceError("profile 'lfw' needs the real-faces folder (CelebA training pack, LFW with pairs.txt, "
                             "the LFW MegaFace-like packs at 56x48): build it as data_prep/README.md says under "
                             "'Real faces: CelebA -> LFW' and pass DATA=data/real-56x48")
    data_param = None if data is None else data_parameter(layout, data)
    overrides = dict(overrides or {})
    reports_name = profile + CUSTOM_SUFFIX if overrides else profile
    present = [s for s in stems if layout.notebook(s).is_file()]
    parameters = {s: resolve_parameters(layout, profile, s, data_param, overrides) for s in present}
    if data is not None and not any("data" in p for p in parameters.values()):
        log(f"note: no notebook run here declares a 'data' parameter; --data {data} is unused")
    unused = sorted(set(overrides) - {n for s in present for n in declared_parameters(layout.notebook(s))})
    if unused:
        raise ReproduceError(f"--param {', '.join(unused)}: no notebook run here declares it")
    check_kernel(kernel_name)
    reports = layout.reports_dir(reports_name)
    try:
        reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fault = write_fault(reports, exc, REPORT_WRITE_FIX)
        if fault is None:
            raise
        raise fault from exc
    with writer_lock(reports / LOCK_NAME, reports / f"{LOCK_NAME}.owner", f"reports folder {reports}",
                     "two runs into one reports folder would mix their results: wait for that run to end "
                     "(or stop it), then run again"):
        library = library_fingerprint()
        env = {**dispatch_environment(profile), PROFILE_VARIABLE: reports_name, COMMIT_VARIABLE: library_commit(),
               **run_settings_environment(data_param, overrides)}
        provenance: dict[str, Any] | None = None
        committed: dict[str, list[Claim] | None] = {}
        runs: list[NotebookRun] = []
        for stem in sorted(set(stems) | {p.stem for p in layout.notebooks_dir.glob("*.ipynb")}):
            if not layout.notebook(stem).is_file():
                runs.append(NotebookRun(stem, "not written yet"))
                continue
            executed = layout.reports_dir(reports_name) / f"{stem}.ipynb"
            stored = _stored_metadata(executed)
            if stem not in parameters:  # not asked for this time: its last results stay in the summary
                if executed.is_file() and not _same_settings(stored, data_param, overrides):
                    runs.append(NotebookRun(stem, "made with other --data/--param (not listed; re-run it)"))
                elif executed.is_file():
                    now = resolve_parameters(layout, profile, stem, data_param, overrides)
                    fresh = (stored.get("library_fingerprint") == library
                             and stored.get("source_fingerprint") == source_fingerprint(layout.notebook(stem), now))
                    try:
                        claims = read_claims(json.loads(executed.read_text()))
                    except ClaimError:  # written by an older runner: listed, its claims left out
                        runs.append(NotebookRun(stem, "old report (re-run it)", stored.get("wall_s")))
                        continue
                    runs.append(NotebookRun(stem, "up to date" if fresh else "stale (not re-run)",
                                            stored.get("wall_s"), claims, provenance=stored.get("provenance")))
                else:
                    runs.append(NotebookRun(stem, "not run yet"))
                continue
            current = source_fingerprint(layout.notebook(stem), parameters[stem])
            if (not force and stored.get("source_fingerprint") == current
                    and stored.get("library_fingerprint") == library and _same_settings(stored, data_param, overrides)):
                html_path = layout.reports_dir(reports_name) / "html" / f"{stem}.html"
                if not html_path.is_file():
                    render_html(executed, html_path)
                run = NotebookRun(stem, "up to date", stored.get("wall_s"),
                                  read_claims(json.loads(executed.read_text())), provenance=stored.get("provenance"))
                log(f"{stem}: up to date" + (f" (ran in {run.wall_s:.1f} s)" if run.wall_s is not None else ""))
            else:
                committed[stem] = committed_claims(layout.reports_dir(profile) / f"{stem}.ipynb")
                if provenance is None:
                    provenance = kernel_provenance(env)
                log(f"{stem}: running ({reports_name})")
                run = execute_notebook(layout, reports_name, stem, parameters[stem], library, kernel_name, env,
                                       provenance, log, heartbeat_s)
                log(f"{stem}: {run.status} in {run.wall_s:.1f} s" + (f" — {run.error}" if run.error else ""))
            runs.append(run)
        write_index(layout, reports_name, runs)
        write_report(reports / "summary.md", summary_markdown(reports_name, runs, link_root=""))
        if readme if readme is not None else reports_name in README_PROFILES:
            update_readme(layout.readme, summary_markdown(reports_name, runs, link_root=f"reports/{reports_name}/"),
                          reports_name)
        if committed:
            log("\nreproduction check against the committed reports/" + profile + "/:\n"
                + reproduction_table(runs, committed))
        else:
            log(f"\nnothing was re-run: every report is up to date with its notebook, parameters and the library; "
                f"to run them again: {reproduce_command(profile)} FORCE=1")
    return runs


def update_test_copies(layout: Layout, stems: Sequence[str], target: Path) -> list[Path]:
    """Copy the smoke-executed notebooks into ``target`` (tests/notebooks/), where nbval re-runs them."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for stem in stems:
        executed = layout.reports_dir("smoke") / f"{stem}.ipynb"
        if executed.is_file():
            shutil.copyfile(executed, target / f"{stem}.ipynb")
            copied.append(target / f"{stem}.ipynb")
    return copied


def _select(prefixes: Sequence[str] | None) -> list[str]:
    if not prefixes:
        return list(NOTEBOOKS)
    chosen = [s for s in NOTEBOOKS if any(s.startswith(p) for p in prefixes)]
    unknown = [p for p in prefixes if not any(s.startswith(p) for s in NOTEBOOKS)]
    if unknown:
        raise ReproduceError(f"--notebooks {' '.join(unknown)}: no such notebook; choose among {', '.join(NOTEBOOKS)}")
    return chosen


EPILOG = """\
Make targets: make reproduce [PROFILE=smoke|default|paper] [FORCE=1] [DATA=<pack>] [PARAMS="NAME=VALUE ..."].
Overrides (--param / PARAMS) are validated like profile values and apply to every notebook that declares
the name; their results go to reports/<profile>-custom/, never over the profile's own (committed) reports,
and the README is not touched. After running, each claim is compared with the committed report of the
same profile (git HEAD): same outcome, and (effect by effect) one run's effect inside the other's interval.
The smoke and default profiles run their kernels with the CPU dispatch pinned (ATEN_CPU_CAPABILITY=avx2,
MKL_CBWR=AVX2, ONEDNN_MAX_CPU_ISA=AVX2) so that x86-64 machines with AVX2 compute the same numbers; the
thread count also changes the last bits (reductions are split per thread): to match a committed report
exactly, run with OMP_NUM_THREADS set to the intra-op thread count its provenance block names."""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``make reproduce``."""
    parser = argparse.ArgumentParser(prog="python -m sphereface_lib.companion.reproduce",
                                     description=__doc__.split("\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--data", type=Path, help="real packed dataset, passed as the 'data' parameter")
    parser.add_argument("--notebooks", nargs="+", metavar="PREFIX", help="run only these (e.g. 01 04)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter (YAML value; repeat, or several in one quoted string); "
                             "results go to reports/<profile>-custom/")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when up to date")
    parser.add_argument("--kernel", default=KERNEL_NAME, help="Jupyter kernel (installed by `make venv`)")
    parser.add_argument(
        "--update-test-copies", action="store_true",
        help="(smoke profile) copy the executed notebooks into tests/notebooks/ for nbval",
    )
    args = parser.parse_args(argv)
    if args.update_test_copies and (args.profile != "smoke" or args.param):
        raise ReproduceError("--update-test-copies needs --profile smoke and no --param")
    stems = _select(args.notebooks)
    runs = reproduce(args.profile, stems=stems, data=args.data, overrides=parse_overrides(args.param),
                     force=args.force, kernel_name=args.kernel)
    name = args.profile + (CUSTOM_SUFFIX if args.param else "")
    print()
    print(summary_text(runs))
    print(f"\nreports: reports/{name}/html/index.html")
    if args.update_test_copies:
        for path in update_test_copies(Layout(), stems, PROJECT_ROOT / "tests" / "notebooks"):
            print(f"updated {path.relative_to(PROJECT_ROOT)}")
    return 1 if any(r.status == "failed" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(run_command(main))
