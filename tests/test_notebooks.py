"""The notebooks: conventions, profiles, nbval on the committed smoke copies, and the rendered HTML in a browser.

How it works: ``tests/notebooks/<stem>.ipynb`` are the notebooks executed under the smoke profile, committed
(refresh with ``.venv/bin/python -m sphereface_lib.companion.reproduce --profile smoke --update-test-copies``). nbval
re-executes them on the ``sphereface`` kernel and compares every output but images and cells marked
``# NBVAL_IGNORE_OUTPUT``, after ``tests/notebooks/nbval_sanitize.cfg``; a test checks the copies are up to
date with ``notebooks/`` and ``profiles/smoke/``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sphereface_lib.companion import reproduce
from sphereface_lib.companion.provenance import dispatch_environment

PROJECT = Path(__file__).resolve().parents[1]
COPIES = PROJECT / "tests" / "notebooks"
LAYOUT = reproduce.Layout()
STEMS = [s for s in reproduce.NOTEBOOKS if LAYOUT.notebook(s).is_file()]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000", "--dump-dom",
    # the network off: every host unresolvable and a proxy that does not exist
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
]
# Appended to each page: once loaded and typeset by MathJax, writes what the test checks into the DOM that
# --dump-dom prints (formulas: MathJax output elements; merror: formulas MathJax could not typeset).
CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var typeset = window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise : Promise.resolve();
  typeset.then(function () {
    var imgs = Array.prototype.slice.call(document.images);
    var bad = /(Traceback|\\w+Error\\b|\\w+Exception\\b)/;
    var stderr = document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]');
    var out = document.createElement('pre'); out.id = 'sphereface-check';
    out.textContent = JSON.stringify({ready: document.readyState, images: imgs.length,
      broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
      errors: Array.prototype.slice.call(stderr).filter(function (e) { return bad.test(e.textContent); }).length,
      formulas: document.querySelectorAll('mjx-container').length,
      merror: document.querySelectorAll('mjx-merror, [data-mjx-error]').length});
    document.body.appendChild(out);
  });
});</script>"""


def _code_cells(stem: str) -> list[dict]:
    nb = json.loads(LAYOUT.notebook(stem).read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_first_notebook_exists() -> None:
    assert STEMS and STEMS[0] == reproduce.NOTEBOOKS[0]


@pytest.mark.parametrize("stem", STEMS)
def test_profiles_are_valid(stem: str) -> None:
    for profile in reproduce.PROFILES:
        reproduce.resolve_parameters(LAYOUT, profile, stem)


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_conventions(stem: str) -> None:
    """One literal parameters cell (checked in the next), no classes or functions defined, claims, discussion, provenance."""
    cells = _code_cells(stem)
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{stem}: exactly one cell must be tagged 'parameters'"
    for stmt in ast.parse("".join(tagged[0]["source"])).body:  # papermill's --help-notebook reads annotations
        assert isinstance(stmt, (ast.Assign, ast.AnnAssign)), f"{stem}: parameters cell holds only 'name: type = literal' lines"
        ast.literal_eval(stmt.value)
    for cell in cells:
        source = "\n".join(l for l in "".join(cell["source"]).splitlines() if not l.startswith("%"))
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, (ast.ClassDef, ast.FunctionDef)), f"{stem}: put {node.name} in sphereface_lib"
    sources = ["".join(c["source"]) for c in cells]
    assert sum("record_claims(" in s for s in sources) == 1, f"{stem}: exactly one cell must call record_claims"
    assert "show_discussion(claims" in sources[-2] and "show_provenance()" in sources[-1], (
        f"{stem}: the claims are followed by the generated discussion and the provenance block")
    for call in ("show_discussion(", "show_provenance("):
        assert sum(call in s for s in sources) == 1, f"{stem}: exactly one cell must call {call[:-1]}"
    assert "check_parameters(globals())" in sources[1], f"{stem}: the cell after the parameters checks them"
    assert json.loads(LAYOUT.notebook(stem).read_text())["metadata"]["kernelspec"]["name"] == reproduce.KERNEL_NAME


@pytest.mark.parametrize("stem", STEMS)
def test_smoke_copy_is_up_to_date(stem: str) -> None:
    copy = COPIES / f"{stem}.ipynb"
    fix = "run `.venv/bin/python -m sphereface_lib.companion.reproduce --profile smoke --update-test-copies`"
    assert copy.is_file(), f"{copy} is missing; {fix}"
    stored = json.loads(copy.read_text())["metadata"]["sphereface"]["source_fingerprint"]
    params = reproduce.resolve_parameters(LAYOUT, "smoke", stem)
    assert stored == reproduce.source_fingerprint(LAYOUT.notebook(stem), params), f"{copy} is stale; {fix}"
    assert reproduce.read_claims(json.loads(copy.read_text())), f"{copy} records no claims"


@pytest.mark.slow
def test_nbval_reexecutes_the_smoke_copies() -> None:
    copies = [str(COPIES / f"{s}.ipynb") for s in STEMS]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", *copies, "--nbval-kernel-name", reproduce.KERNEL_NAME,
         "--nbval-sanitize-with", str(COPIES / "nbval_sanitize.cfg"), "-p", "no:cacheprovider", "-q"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **dispatch_environment("smoke")},  # the CPU dispatch the runner made the copies with
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _has_formulas(notebook: Path) -> bool:
    """Whether a notebook's Markdown cells hold a ``$...$`` formula."""
    nb = json.loads(notebook.read_text())
    return any("$" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


#: profiles whose rendered reports are committed (reports/<profile>/html/)
COMMITTED_PROFILES = ("default", "lfw")


def _pages(tmp_path: Path) -> list[tuple[Path, bool]]:
    """The smoke copies rendered by the runner's own renderer and index, plus the committed default and lfw pages;
    each with whether its notebook has formulas."""
    html_dir = tmp_path / "smoke" / "html"
    for stem in STEMS:
        reproduce.render_html(COPIES / f"{stem}.ipynb", html_dir / f"{stem}.html")
    runs = [reproduce.NotebookRun(s, "executed", 1.0, reproduce.read_claims(json.loads((COPIES / f"{s}.ipynb").read_text())))
            for s in STEMS]
    reproduce.write_index(reproduce.Layout(reports_root=tmp_path), "smoke", runs)
    committed = [LAYOUT.reports_dir(profile) for profile in COMMITTED_PROFILES]
    return ([(p, p.stem != "index" and _has_formulas(COPIES / f"{p.stem}.ipynb")) for p in sorted(html_dir.glob("*.html"))]
            + [(p, p.stem != "index" and _has_formulas(folder / f"{p.stem}.ipynb"))
               for folder in committed for p in sorted((folder / "html").glob("*.html"))])


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: apt-get update && apt-get install -y chromium")
    return chromium


def _check_in_chromium(chromium: str, page: Path, tmp_path: Path) -> dict:
    """Load ``page`` (a copy beside it, with :data:`CHECK_SCRIPT`) in headless chromium, network off."""
    checked = page.with_name(f".checked.{page.name}")
    text = page.read_text()
    checked.write_text(text[: text.rindex("</body>")] + CHECK_SCRIPT + text[text.rindex("</body>"):])
    try:
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", checked.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
    finally:
        checked.unlink()
    marker = '<pre id="sphereface-check">'
    assert marker in dom, f"{page}: page did not load in chromium"
    return json.loads(dom.split(marker, 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))


@pytest.mark.slow
def test_rendered_html_in_a_headless_browser(tmp_path: Path) -> None:
    chromium = _chromium()
    for page, formulas in _pages(tmp_path):
        if page.parent.parent.name in COMMITTED_PROFILES:  # committed pages: checked on a copy
            copy = tmp_path / page.parent.parent.name / "html" / page.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page, copy)
            if (page.parent / "mathjax").is_dir() and not (copy.parent / "mathjax").is_dir():
                shutil.copytree(page.parent / "mathjax", copy.parent / "mathjax")
            page = copy
        result = _check_in_chromium(chromium, page, tmp_path)
        assert result["ready"] == "complete", f"{page}: {result}"
        assert result["broken"] == 0 and result["errors"] == 0 and result["merror"] == 0, f"{page}: {result}"
        if page.name != "index.html":
            assert result["images"] > 0, f"{page}: no figure"
        if formulas:
            assert result["formulas"] > 0, f"{page}: formulas not typeset offline: {result}"


@pytest.mark.slow
def test_formulas_render_offline_and_error_cells_are_seen(tmp_path: Path) -> None:
    """A tiny executed notebook: formulas typeset by the bundled MathJax with the network off (and not by
    nbconvert's CDN default), and an error output is detected."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    chromium = _chromium()
    ok = new_code_cell("1 + 1", outputs=[new_output("execute_result", {"text/plain": "2"}, execution_count=1)])
    nb = new_notebook(cells=[new_markdown_cell("Eq. 6: $\\psi(\\theta) = (-1)^k \\cos(m\\theta) - 2k$ and\n\n"
                                               "$$\\|x\\| \\cos\\theta_1 > \\|x\\| \\cos(m\\theta_2)$$"), ok])
    executed = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(executed))
    reproduce.render_html(executed, tmp_path / "html" / "good.html")
    result = _check_in_chromium(chromium, tmp_path / "html" / "good.html", tmp_path)
    assert result["formulas"] == 2 and result["merror"] == 0 and result["errors"] == 0, result

    cdn, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)  # MathJax from the CDN: nothing offline
    (tmp_path / "html" / "cdn.html").write_text(cdn)
    assert _check_in_chromium(chromium, tmp_path / "html" / "cdn.html", tmp_path)["formulas"] == 0

    nb.cells.append(new_code_cell("1 / 0", outputs=[new_output(
        "error", ename="ZeroDivisionError", evalue="division by zero", traceback=["ZeroDivisionError: division by zero"])]))
    nbformat.write(nb, str(executed))
    reproduce.render_html(executed, tmp_path / "html" / "bad.html")
    assert _check_in_chromium(chromium, tmp_path / "html" / "bad.html", tmp_path)["errors"] == 1
