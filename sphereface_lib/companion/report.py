"""What a profile's run leaves for a reader: each notebook as an offline HTML page, the index page, the summary,
the README's results block, and the check of this run's claims against the committed reports.

The runner (:mod:`.reproduce`) executes the notebooks and hands each one's :class:`NotebookRun` here; the claims
themselves are :class:`~.claims.Claim` (:mod:`.claims`).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..data.packed import atomic_write_bytes, atomic_write_text, write_fault
from ..errors import OutputWriteError, UserError
from .claims import Claim, ClaimError, markdown_cell, outcome_counts, read_claims
from .provenance import provenance_lines, provenance_markdown

if TYPE_CHECKING:
    from .reproduce import Layout

MATHJAX_DIR = Path(__file__).resolve().parent / "assets" / "mathjax"
MATHJAX_SCRIPT = "tex-svg-full.js"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
#: the profiles whose claims table the README carries, each with the heading of its section
README_PROFILES = {"default": "Results", "lfw": "Results on real faces (the lfw profile)"}
CUSTOM_SUFFIX = "-custom"
#: the fix after a storage fault while writing a report
REPORT_WRITE_FIX = ("the previous version is intact and nothing partial was left behind; free space there (or fix "
                    "the permissions), then run the same command again")


class ReportError(UserError):
    """A report cannot be written as asked (e.g. the README's results markers); the message names the fix."""


@dataclass
class NotebookRun:
    """What happened to one notebook: executed, up to date (skipped), failed or not written yet."""

    stem: str
    status: str
    wall_s: float | None = None
    claims: list[Claim] = field(default_factory=list)
    error: str | None = None
    provenance: dict[str, Any] | None = None


def write_report(path: Path, content: str | bytes) -> None:
    """Write one report file atomically; a full disk (or the like) is "disk full while writing <path> ..."."""
    try:
        if isinstance(content, str):
            atomic_write_text(path, content)
        else:
            atomic_write_bytes(path, content)
    except OutputWriteError as exc:
        fault = write_fault(path, exc, REPORT_WRITE_FIX)
        if fault is None:
            raise
        raise fault from exc


def _install_mathjax(html_dir: Path) -> None:
    """Copy the bundled MathJax next to the pages (once; again when the bundle changed)."""
    for name in (MATHJAX_SCRIPT, "LICENSE"):
        src, dst = MATHJAX_DIR / name, html_dir / "mathjax" / name
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            write_report(dst, src.read_bytes())


#: MathJax 3 reads this before it loads: $...$ inline as in Jupyter, SVG output (no font files needed)
MATHJAX_CONFIG = (
    "<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], "
    "['\\\\[', '\\\\]']], processEscapes: true, processEnvironments: true}, svg: {fontCache: 'global'}};</script>"
)


def render_html(executed: Path, html_path: Path) -> None:
    """The executed notebook as an HTML page (figures embedded, formulas by the bundled MathJax, no network),
    written atomically. The parameters are shown once: the values papermill injected, when it did."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    if any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells):
        nb.cells = [c for c in nb.cells if "parameters" not in c.metadata.get("tags", [])]
    url = f"mathjax/{MATHJAX_SCRIPT}"
    exporter = HTMLExporter(embed_images=True, mathjax_url=url)
    body, _ = exporter.from_notebook_node(nb)
    for cdn, local in ((f'<script src="{exporter.require_js_url}"></script>', ""),
                       (f'<script src="{url}"> </script>', f'{MATHJAX_CONFIG}\n<script src="{url}"></script>')):
        if cdn not in body:
            raise RuntimeError(f"nbconvert's template changed: {cdn!r} not found in the page")
        body = body.replace(cdn, local)
    _install_mathjax(html_path.parent)
    write_report(html_path, body)


# ------------------------------------------------------------------------------- committed comparison


def committed_claims(executed: Path) -> list[Claim] | None:
    """The claims of ``executed`` as committed at git ``HEAD`` (None: no git, not committed, unreadable)."""
    folder = executed.parent
    while not folder.is_dir():
        folder = folder.parent
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
        relative = executed.resolve().relative_to(Path(top).resolve()).as_posix()
        text = subprocess.run(["git", "-C", top, "show", f"HEAD:{relative}"], capture_output=True, text=True,
                              check=True, timeout=60).stdout
        return read_claims(json.loads(text))
    except (OSError, subprocess.SubprocessError, ValueError, ClaimError):
        return None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_effect(effect: str) -> tuple[float | None, tuple[float, float] | None]:
    """(point, (low, high)) from an effect such as ``"+1.23 pts [+0.40, +2.06]"`` (None where absent); the point
    is the last number before the interval, so a name in front of it (``"SF-4 +0.53 [...]"``) is skipped."""
    _, point, interval = _parse_part(effect)
    return point, interval


def _parse_part(effect: str) -> tuple[str, float | None, tuple[float, float] | None]:
    """(name, point, interval) of one effect: ``"SF-4 +0.53 [+0.10, +0.96]"`` -> ("SF-4", 0.53, (0.10, 0.96))."""
    text = effect.replace("\u2212", "-")
    head, _, tail = text.partition("[")
    numbers = list(re.finditer(rf"(?<![\w.-]){_NUMBER}", head)) or list(re.finditer(_NUMBER, head))
    bounds = re.findall(_NUMBER, tail.split("]")[0]) if tail else []
    interval = (float(bounds[0]), float(bounds[1])) if len(bounds) >= 2 else None
    if not numbers:
        return head.strip(), None, interval
    last = numbers[-1]
    return head[:last.start()].strip(), float(last.group()), interval


def _parts_agree(old: tuple[float | None, tuple[float, float] | None],
                 new: tuple[float | None, tuple[float, float] | None]) -> bool:
    (p_old, i_old), (p_new, i_new) = old, new
    if i_old is None and i_new is None:
        return p_old is not None and p_old == p_new
    return any(p is not None and i is not None and i[0] <= p <= i[1] for p, i in ((p_new, i_old), (p_old, i_new)))


def claims_agree(committed: Claim, ours: Claim) -> bool:
    """Same outcome, and effect by effect (a claim over several comparisons lists them joined by "; ") one
    run's effect inside the other's interval (equal effects where neither gives an interval)."""
    if committed.outcome != ours.outcome:
        return False
    if committed.effect == ours.effect:
        return True
    old = {name: (point, interval) for name, point, interval in map(_parse_part, committed.effect.split(";"))}
    new = {name: (point, interval) for name, point, interval in map(_parse_part, ours.effect.split(";"))}
    return old.keys() == new.keys() and all(_parts_agree(old[name], new[name]) for name in old)


def reproduction_table(runs: Sequence[NotebookRun], committed: dict[str, list[Claim] | None]) -> str:
    """This run's claims beside the committed reports': claim | committed | this run | agree (effect by effect).
    One line instead when no notebook run here has a committed report to compare with."""
    executed = [run for run in runs if run.status == "executed"]
    if not any(committed.get(run.stem) is not None for run in executed):
        return ("no committed reports to compare with (none of the notebooks run here has a report of this profile "
                "committed at git HEAD)")
    lines = ["claim | committed: outcome, effect | this run: outcome, effect | agree"]
    agreed = compared = 0
    for run in executed:
        old = {c.claim: c for c in committed.get(run.stem) or []}
        for c in run.claims:
            before = old.get(c.claim)
            if before is None:
                verdict = "no committed claim" if committed.get(run.stem) is not None else "no committed report"
                lines.append(f"[{run.stem[:2]}] {c.claim} | - | {c.outcome}, {c.effect} | {verdict}")
                continue
            same = claims_agree(before, c)
            agreed, compared = agreed + same, compared + 1
            lines.append(f"[{run.stem[:2]}] {c.claim} | {before.outcome}, {before.effect} | {c.outcome}, {c.effect} | "
                         f"{'yes' if same else 'NO'}")
    lines.append(f"{agreed} of {compared} compared claims agree with the committed reports "
                 "(same outcome, and effect by effect one run's effect inside the other's interval)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- reports


#: profiles that run on a real-data folder (``DATA=``)
DATA_PROFILES = ("paper", "real", "lfw")


def reproduce_command(profile: str) -> str:
    """The command that regenerates a profile's results."""
    if profile == "default":
        return "make reproduce"
    return f"make reproduce PROFILE={profile}" + (" DATA=<folder>" if profile in DATA_PROFILES else "")


def _provenance_groups(runs: Sequence[NotebookRun]) -> list[tuple[list[str], dict[str, Any]]]:
    """The distinct provenance blocks (wall time aside) and the notebooks each one covers."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for run in runs:
        if run.provenance:
            block = {k: v for k, v in run.provenance.items() if k != "wall_s"}
            groups.setdefault(json.dumps(block, sort_keys=True), ([], block))[0].append(run.stem[:2])
    return list(groups.values())


def summary_markdown(reports_name: str, runs: Sequence[NotebookRun], link_root: str) -> str:
    """Outcome counts, the results table (notebook | claim | paper (source) | ours | effect | outcome),
    wall times and where the reports were made."""
    claims = [c for r in runs for c in r.claims]
    profile = reports_name.removesuffix(CUSTOM_SUFFIX)
    lines = [
        f"Produced by `{reproduce_command(profile)}` (profile `{reports_name}`); regenerated on every run, "
        "not edited by hand.",
        "",
        outcome_counts(claims),
        "",
        "| notebook | claim | paper | ours | effect [interval] | outcome |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        link = f"[{run.stem[:2]}]({link_root}html/{run.stem}.html)"
        if not run.claims:
            lines.append(f"| {run.stem[:2]} | {run.stem} | | | | {run.status} |")
        for c in run.claims:
            lines.append(f"| {link} | " + " | ".join(markdown_cell(v) for v in (c.claim, c.paper_cited, c.ours,
                                                                                   c.effect, c.outcome)) + " |")
    walls = [f"{r.stem[:2]} {r.wall_s:.0f} s" for r in runs if r.wall_s is not None]
    if walls:
        lines += ["", "Wall time per notebook: " + ", ".join(walls) + "."]
    for stems, block in _provenance_groups(runs):
        lines += ["", f"Provenance of notebooks {', '.join(stems)}:", "", provenance_markdown(block)]
    return "\n".join(lines)


def summary_text(runs: Sequence[NotebookRun]) -> str:
    """Plain-text outcome counts and claims, for the terminal."""
    claims = [c for r in runs for c in r.claims]
    lines = [outcome_counts(claims), "", "claim | paper | ours | effect [interval] | outcome"]
    lines += [f"[{r.stem[:2]}] {c.claim} | {c.paper_cited} | {c.ours} | {c.effect} | {c.outcome}"
              for r in runs for c in r.claims]
    lines += [f"[{r.stem[:2]}] {r.stem}: {r.status}" for r in runs if r.status not in ("executed", "up to date")]
    return "\n".join(lines)


def write_index(layout: Layout, reports_name: str, runs: Sequence[NotebookRun]) -> None:
    """``reports/<name>/html/index.html``: a link per rendered notebook, the claims table and the provenance."""
    esc = html.escape
    rows = []
    for run in runs:
        page = layout.reports_dir(reports_name) / "html" / f"{run.stem}.html"
        name = f'<a href="{run.stem}.html">{esc(run.stem)}</a>' if page.is_file() else esc(run.stem)
        wall = f"{run.wall_s:.1f} s" if run.wall_s is not None else ""
        status = "executed" if run.status == "up to date" else run.status  # the report's state, not this pass's
        rows.append(f"<tr><td>{name}</td><td>{esc(status)}</td><td>{wall}</td></tr>")
    claim_rows = [
        f"<tr><td>{run.stem[:2]}</td>" + "".join(f"<td>{esc(v)}</td>" for v in (c.claim, c.paper_cited, c.ours, c.effect))
        + f'<td class="{c.outcome}">{c.outcome}</td></tr>'
        for run in runs
        for c in run.claims
    ]
    provenance = "".join(
        f"<p>Notebooks {', '.join(stems)}:</p><ul>"
        + "".join(f"<li>{esc(line.replace('`', ''))}</li>" for line in provenance_lines(block)) + "</ul>"
        for stems, block in _provenance_groups(runs)
    ) or "<p>No notebook has run yet.</p>"
    profile = reports_name.removesuffix(CUSTOM_SUFFIX)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SphereFace companion: {esc(reports_name)} profile</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.reproduced{{color:#1a7f37}}
.contradicted{{color:#cf222e}}.inconclusive{{color:#6e7781}}</style></head>
<body><h1>SphereFace companion: {esc(reports_name)} profile</h1>
<p>Produced by <code>{esc(reproduce_command(profile))}</code>.</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>wall time</th></tr>
{chr(10).join(rows)}
</table>
<h2>Claims</h2>
<p>{esc(outcome_counts([c for r in runs for c in r.claims]))}</p>
<table><tr><th>notebook</th><th>claim</th><th>paper</th><th>ours</th><th>effect [interval]</th><th>outcome</th></tr>
{chr(10).join(claim_rows)}
</table>
<h2>Provenance</h2>
{provenance}
</body></html>
"""
    write_report(layout.reports_dir(reports_name) / "html" / "index.html", page)


def results_markers(profile: str = "default") -> tuple[str, str]:
    """The README markers around ``profile``'s results block."""
    if profile == "default":
        return RESULTS_START, RESULTS_END
    return f"<!-- results:{profile}:start -->", f"<!-- results:{profile}:end -->"


def update_readme(readme: Path, table: str, profile: str = "default") -> None:
    """Replace the block between ``profile``'s results markers of the README (appended once, under the heading of
    :data:`README_PROFILES`, if absent)."""
    first, last = results_markers(profile)
    text = readme.read_text() if readme.is_file() else ""
    block = f"{first}\n{table}\n{last}"
    if first not in text and last not in text:
        text = text.rstrip("\n") + f"\n\n## {README_PROFILES.get(profile, f'Results ({profile})')}\n\n{block}\n"
    else:
        start, end = text.find(first), text.find(last)
        if start < 0 or end < start or text.count(first) != 1 or text.count(last) != 1:
            raise ReportError(f"{readme}: the markers {first} and {last} must each appear once, start first")
        text = text[:start] + block + text[end + len(last):]
    write_report(readme, text)
