"""The runner behind ``make reproduce``: every notebook under one profile, then one table of claims.

Conventions every notebook ``notebooks/NN_name.ipynb`` follows (see :data:`NOTEBOOKS`):

* one literal cell tagged ``parameters``; a profile is ``profiles/<profile>/<stem>.yaml`` holding values
  for some of those names. Unknown names and values of the wrong type are rejected before anything runs.
  Real data enters only through a parameter named ``data`` (``--data`` / ``make reproduce DATA=...``).
* the notebook ends with :func:`record_claims`, which displays the claims (claim, paper, ours, verdict)
  and stores them in the output's metadata; the runner reads them back from the executed notebook.

Each notebook is executed by papermill on the ``sphereface`` kernel into a temporary file that replaces
``reports/<profile>/<stem>.ipynb`` only on success, then rendered to ``reports/<profile>/html/``. A
notebook whose executed copy carries the same fingerprint (notebook cells + parameters + library source)
is skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import html
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.packed import atomic_write_text
from ..errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = Path(__file__).resolve().parents[1]
KERNEL_NAME = "sphereface"
PROFILES: tuple[str, ...] = ("smoke", "default", "paper")
NOTEBOOKS: tuple[str, ...] = (
    "01_binary_example_and_margin_bounds",
    "02_exploratory_2d_features",
    "03_3d_features_on_sphere",
    "04_effect_of_m",
    "05_effect_of_depth",
    "06_lfw_ytf_comparison",
    "07_megaface",
)
CLAIMS_METADATA_KEY = "sphereface_claims"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


class ReproduceError(UserError):
    """Bad input to the runner (profile, parameters, notebook layout); the message names the fix."""


# --------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """One row of the results table: the paper's statement, its value (typed from the paper), ours, the test.

    ``holds`` must be computed from the data; ``evidence`` says how (e.g. the margin against the spread).
    """

    claim: str
    paper: str
    ours: str
    holds: bool
    evidence: str

    @property
    def verdict(self) -> str:
        """'yes' or 'no', then the evidence it rests on."""
        return f"{'yes' if self.holds else 'no'} ({self.evidence})"


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims as a Markdown table: claim | paper | ours | verdict."""
    rows = ["| claim | paper | ours | verdict |", "| --- | --- | --- | --- |"]
    rows += [
        f"| {_markdown_cell(c.claim)} | {_markdown_cell(c.paper)} | {_markdown_cell(c.ours)} | "
        f"{_markdown_cell(c.verdict)} |"
        for c in claims
    ]
    return "\n".join(rows)


def record_claims(claims: Sequence[Claim]) -> None:
    """Display the notebook's claims and store them, machine-readable, in the output's metadata.

    Call once, in the last cell of a notebook; the runner collects the claims from the executed notebook.
    """
    from IPython.display import display

    claims = list(claims)
    if not claims or not all(isinstance(c, Claim) for c in claims):
        raise TypeError("record_claims: pass a non-empty list of sphereface_lib.companion.reproduce.Claim")
    table = claims_markdown(claims)
    display(
        {"text/markdown": table, "text/plain": table},
        raw=True,
        metadata={CLAIMS_METADATA_KEY: [asdict(c) for c in claims]},
    )


def read_claims(notebook: dict[str, Any]) -> list[Claim]:
    """The claims an executed notebook recorded with :func:`record_claims` (empty if none)."""
    claims: list[Claim] = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            for raw in output.get("metadata", {}).get(CLAIMS_METADATA_KEY, []):
                claims.append(Claim(**raw))
    return claims


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

    def reports_dir(self, profile: str) -> Path:
        return self.reports_root / profile


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The names, inferred types and defaults of the notebook's ``parameters`` cell (papermill inspection)."""
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


def validate_parameters(values: dict[str, Any], declared: dict[str, dict[str, Any]], source: str) -> None:
    """Reject names the notebook does not declare and values whose type differs from the default's.

    ``source`` names where the values came from (a profile file, ``--data``) for the error message.
    """
    problems = []
    for name, value in values.items():
        if name not in declared:
            problems.append(f"unknown parameter {name!r}; the notebook declares: {', '.join(sorted(declared))}")
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


def resolve_parameters(layout: Layout, profile: str, stem: str, data: Path | None = None) -> dict[str, Any]:
    """The profile's values for one notebook, plus ``data`` when given and declared, all validated."""
    declared = declared_parameters(layout.notebook(stem))
    values = load_profile(layout, profile, stem)
    validate_parameters(values, declared, str(layout.profile_file(profile, stem)))
    if data is not None and "data" in declared:
        values["data"] = str(data)
        validate_parameters({"data": values["data"]}, declared, f"--data {data}")
    return values


# --------------------------------------------------------------------------------------- fingerprints


def _sha256(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def library_fingerprint(library_dir: Path = LIBRARY_DIR) -> str:
    """Hash of the library's Python sources (any change to sphereface_lib re-runs the notebooks)."""
    files = sorted(library_dir.rglob("*.py"))
    return _sha256(p.relative_to(library_dir).as_posix().encode() + b"\0" + p.read_bytes() for p in files)


def source_fingerprint(notebook: Path, parameters: dict[str, Any]) -> str:
    """Hash of the notebook's cells (type, source, tags; not outputs) and the parameter values."""
    nb = json.loads(notebook.read_text())
    cells = [(c["cell_type"], "".join(c["source"]), sorted(c.get("metadata", {}).get("tags", []))) for c in nb["cells"]]
    return _sha256([json.dumps(cells).encode(), json.dumps(parameters, sort_keys=True).encode()])


# ----------------------------------------------------------------------------------------- execution


@dataclass
class NotebookRun:
    """What happened to one notebook: executed, up to date (skipped), failed or not written yet."""

    stem: str
    status: str
    wall_s: float | None = None
    claims: list[Claim] = field(default_factory=list)
    error: str | None = None


def _stored_metadata(executed: Path) -> dict[str, Any]:
    if not executed.is_file():
        return {}
    try:
        return json.loads(executed.read_text()).get("metadata", {}).get("sphereface", {})
    except (json.JSONDecodeError, OSError):
        return {}


def render_html(executed: Path, html_path: Path) -> None:
    """The executed notebook as one self-contained HTML page (figures embedded), written atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(str(executed), as_version=4))
    atomic_write_text(html_path, body)


def check_kernel(kernel_name: str) -> None:
    """Fail with the fix when the Jupyter kernel the notebooks run on is not installed."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ReproduceError(
            f"Jupyter kernel {kernel_name!r} is not installed; run `make venv` (it installs the kernel into .venv)"
        ) from None


def execute_notebook(
    layout: Layout, profile: str, stem: str, parameters: dict[str, Any], library: str,
    kernel_name: str = KERNEL_NAME,
) -> NotebookRun:
    """Run one notebook with papermill into ``reports/<profile>/<stem>.ipynb`` (atomically) and render it.
    ``library`` is the :func:`library_fingerprint` taken before the run, stored with the result.

    On failure the partial notebook is kept as ``<stem>.failed.ipynb`` and the previous result is untouched.
    """
    import nbformat
    import papermill

    reports = layout.reports_dir(profile)
    reports.mkdir(parents=True, exist_ok=True)
    final = reports / f"{stem}.ipynb"
    tmp = reports / f".{stem}.partial.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(layout.notebook(stem)), str(tmp), parameters=parameters, kernel_name=kernel_name,
            cwd=str(layout.notebooks_dir), progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        os.replace(tmp, reports / f"{stem}.failed.ipynb")
        return NotebookRun(stem, "failed", time.perf_counter() - start, error=f"{err.ename}: {err.evalue}")
    wall_s = time.perf_counter() - start
    nb = nbformat.read(str(tmp), as_version=4)
    nb.metadata.papermill["input_path"] = f"notebooks/{stem}.ipynb"
    nb.metadata.papermill["output_path"] = f"reports/{profile}/{stem}.ipynb"
    nb.metadata["sphereface"] = {
        "profile": profile,
        "source_fingerprint": source_fingerprint(layout.notebook(stem), parameters),
        "library_fingerprint": library,
        "wall_s": round(wall_s, 1),
    }
    nbformat.write(nb, str(tmp))
    os.replace(tmp, final)
    (reports / f"{stem}.failed.ipynb").unlink(missing_ok=True)
    render_html(final, reports / "html" / f"{stem}.html")
    return NotebookRun(stem, "executed", wall_s, read_claims(json.loads(final.read_text())))


def reproduce(
    profile: str,
    *,
    layout: Layout = Layout(),
    stems: Sequence[str] = NOTEBOOKS,
    data: Path | None = None,
    force: bool = False,
    kernel_name: str = KERNEL_NAME,
    readme: bool | None = None,
    log=print,
) -> list[NotebookRun]:
    """Run (or skip when up to date) every notebook of ``stems`` under ``profile``; write index and summary.

    All parameters are validated before the first notebook runs. ``readme`` (default: only for the
    ``default`` profile) rewrites the results block of the README.
    """
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if data is not None:
        data = Path(data).resolve()
        if not data.exists():
            raise ReproduceError(f"--data {data}: no such file or folder; give a packed dataset from data_prep/")
    present = [s for s in stems if layout.notebook(s).is_file()]
    parameters = {s: resolve_parameters(layout, profile, s, data) for s in present}
    if data is not None and not any("data" in p for p in parameters.values()):
        log(f"note: no notebook run here declares a 'data' parameter; --data {data} is unused")
    check_kernel(kernel_name)
    library = library_fingerprint()
    runs: list[NotebookRun] = []
    for stem in sorted(set(stems) | {p.stem for p in layout.notebooks_dir.glob("*.ipynb")}):
        if not layout.notebook(stem).is_file():
            runs.append(NotebookRun(stem, "not written yet"))
            continue
        executed = layout.reports_dir(profile) / f"{stem}.ipynb"
        stored = _stored_metadata(executed)
        if stem not in parameters:  # not asked for this time: its last results stay in the summary
            if executed.is_file():
                fresh = stored.get("library_fingerprint") == library and stored.get("source_fingerprint") == (
                    source_fingerprint(layout.notebook(stem), resolve_parameters(layout, profile, stem, data)))
                runs.append(NotebookRun(stem, "up to date" if fresh else "stale (not re-run)", stored.get("wall_s"),
                                        read_claims(json.loads(executed.read_text()))))
            else:
                runs.append(NotebookRun(stem, "not run yet"))
            continue
        current = source_fingerprint(layout.notebook(stem), parameters[stem])
        if not force and stored.get("source_fingerprint") == current and stored.get("library_fingerprint") == library:
            html_path = layout.reports_dir(profile) / "html" / f"{stem}.html"
            if not html_path.is_file():
                render_html(executed, html_path)
            run = NotebookRun(stem, "up to date", stored.get("wall_s"), read_claims(json.loads(executed.read_text())))
        else:
            log(f"running {stem} ({profile}) ...")
            run = execute_notebook(layout, profile, stem, parameters[stem], library, kernel_name)
        log(f"  {stem}: {run.status}" + (f", {run.wall_s:.1f} s" if run.wall_s is not None else "")
            + (f" — {run.error}" if run.error else ""))
        runs.append(run)
    write_index(layout, profile, runs)
    atomic_write_text(layout.reports_dir(profile) / "summary.md", summary_markdown(profile, runs, link_root=""))
    if readme if readme is not None else profile == "default":
        update_readme(layout.readme, summary_markdown(profile, runs, link_root=f"reports/{profile}/"))
    return runs


# ------------------------------------------------------------------------------------------- reports


def reproduce_command(profile: str) -> str:
    """The command that regenerates a profile's results."""
    return "make reproduce" if profile == "default" else f"make reproduce PROFILE={profile}"


def summary_markdown(profile: str, runs: Sequence[NotebookRun], link_root: str) -> str:
    """The results table of every notebook's claims (notebook | claim | paper | ours | verdict)."""
    lines = [
        f"Produced by `{reproduce_command(profile)}` (profile `{profile}`); regenerated on every run, "
        "not edited by hand.",
        "",
        "| notebook | claim | paper | ours | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        link = f"[{run.stem[:2]}]({link_root}html/{run.stem}.html)"
        if not run.claims:
            lines.append(f"| {run.stem[:2]} | {run.stem} | | | {run.status} |")
        for c in run.claims:
            lines.append(
                f"| {link} | {_markdown_cell(c.claim)} | {_markdown_cell(c.paper)} | {_markdown_cell(c.ours)} | "
                f"{_markdown_cell(c.verdict)} |"
            )
    return "\n".join(lines)


def summary_text(runs: Sequence[NotebookRun]) -> str:
    """Plain-text wall times and claims, for the terminal."""
    width = max(len(r.stem) for r in runs)
    lines = ["notebook".ljust(width) + "  status            wall time"]
    for r in runs:
        wall = f"{r.wall_s:8.1f} s" if r.wall_s is not None else "       -"
        lines.append(f"{r.stem.ljust(width)}  {r.status:<16}  {wall}")
    lines += ["", "claim | paper | ours | verdict"]
    lines += [f"[{r.stem[:2]}] {c.claim} | {c.paper} | {c.ours} | {c.verdict}" for r in runs for c in r.claims]
    return "\n".join(lines)


def write_index(layout: Layout, profile: str, runs: Sequence[NotebookRun]) -> None:
    """``reports/<profile>/html/index.html``: a link per rendered notebook and the table of claims."""
    rows = []
    for run in runs:
        page = layout.reports_dir(profile) / "html" / f"{run.stem}.html"
        name = f'<a href="{run.stem}.html">{html.escape(run.stem)}</a>' if page.is_file() else html.escape(run.stem)
        wall = f"{run.wall_s:.1f} s" if run.wall_s is not None else ""
        rows.append(f"<tr><td>{name}</td><td>{html.escape(run.status)}</td><td>{wall}</td></tr>")
    claim_rows = [
        f"<tr><td>{run.stem[:2]}</td><td>{html.escape(c.claim)}</td><td>{html.escape(c.paper)}</td>"
        f"<td>{html.escape(c.ours)}</td><td>{html.escape(c.verdict)}</td></tr>"
        for run in runs
        for c in run.claims
    ]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SphereFace companion: {profile} profile</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head>
<body><h1>SphereFace companion: {profile} profile</h1>
<p>Produced by <code>{html.escape(reproduce_command(profile))}</code>.</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>wall time</th></tr>
{chr(10).join(rows)}
</table>
<h2>Claims</h2>
<table><tr><th>notebook</th><th>claim</th><th>paper</th><th>ours</th><th>verdict</th></tr>
{chr(10).join(claim_rows)}
</table></body></html>
"""
    atomic_write_text(layout.reports_dir(profile) / "html" / "index.html", page)


def update_readme(readme: Path, table: str) -> None:
    """Replace the block between the results markers of the README (appended once if absent)."""
    text = readme.read_text() if readme.is_file() else ""
    block = f"{RESULTS_START}\n{table}\n{RESULTS_END}"
    if RESULTS_START not in text and RESULTS_END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{block}\n"
    else:
        start, end = text.find(RESULTS_START), text.find(RESULTS_END)
        if start < 0 or end < start or text.count(RESULTS_START) != 1 or text.count(RESULTS_END) != 1:
            raise ReproduceError(
                f"{readme}: the markers {RESULTS_START} and {RESULTS_END} must each appear once, start first"
            )
        text = text[:start] + block + text[end + len(RESULTS_END):]
    atomic_write_text(readme, text)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``make reproduce``."""
    parser = argparse.ArgumentParser(prog="python -m sphereface_lib.companion.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--data", type=Path, help="real packed dataset, passed as the 'data' parameter")
    parser.add_argument("--notebooks", nargs="+", metavar="PREFIX", help="run only these (e.g. 01 04)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when up to date")
    parser.add_argument("--kernel", default=KERNEL_NAME, help="Jupyter kernel (installed by `make venv`)")
    parser.add_argument(
        "--update-test-copies", action="store_true",
        help="(smoke profile) copy the executed notebooks into tests/notebooks/ for nbval",
    )
    args = parser.parse_args(argv)
    try:
        if args.update_test_copies and args.profile != "smoke":
            raise ReproduceError("--update-test-copies needs --profile smoke")
        stems = _select(args.notebooks)
        runs = reproduce(args.profile, stems=stems, data=args.data, force=args.force, kernel_name=args.kernel)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(summary_text(runs))
    print(f"\nreports: {Layout().reports_dir(args.profile)}/html/index.html")
    if args.update_test_copies:
        for path in update_test_copies(Layout(), stems, PROJECT_ROOT / "tests" / "notebooks"):
            print(f"updated {path.relative_to(PROJECT_ROOT)}")
    return 1 if any(r.status == "failed" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
