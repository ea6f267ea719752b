"""The notebook runner (sphereface_lib.companion.reproduce) on a tiny notebook in a temporary project layout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sphereface_lib.companion import claims as claims_module
from sphereface_lib.companion import report, reproduce
from sphereface_lib.companion.claims import Claim, ClaimError
from sphereface_lib.companion.reproduce import Layout, ReproduceError
from sphereface_lib.errors import run_command

STEM = "01_tiny"
PARAMETERS = "n: int = 3  # values\nscale: float = 1.5\nlabel: str = 'x'\ndata: 'Optional[str]' = None"


def _write_notebook(path: Path, body: str, parameters: str = PARAMETERS) -> None:
    nb = new_notebook(
        cells=[
            new_code_cell(parameters, metadata={"tags": ["parameters"]}),
            new_markdown_cell("The target logit $\\|x\\| \\psi(\\theta)$ (Eq. 6)."),
            new_code_cell(body),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "sphereface", "display_name": "Python (sphereface)", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


# What record_claims displays, written out so that the kernel need not import torch (seconds per run).
CLAIMS_BODY = (
    "from IPython.display import display\n"
    "total = n * scale\n"
    "claim = dict(claim='sum is n*scale', paper='4.5', paper_source='Table 1', ours=f'{total:.1f}',\n"
    "             outcome='reproduced' if total == 4.5 else 'contradicted', effect=f'{total - 4.5:+.1f} [-0.5, +0.5]',\n"
    "             evidence=label)\n"
    "display({'text/plain': 'claims'}, raw=True, metadata={'sphereface_claims': [claim]})"
)


def make_layout(tmp_path: Path) -> Layout:
    """A project layout under ``tmp_path``: the tiny notebook, its profile files and a README."""
    layout = Layout(tmp_path / "notebooks", tmp_path / "profiles", tmp_path / "reports", tmp_path / "README.md")
    _write_notebook(layout.notebook(STEM), CLAIMS_BODY)
    for profile in reproduce.PROFILES:
        layout.profile_file(profile, STEM).parent.mkdir(parents=True, exist_ok=True)
        layout.profile_file(profile, STEM).write_text("n: 3\n")
    layout.readme.write_text("# Title\n\nintro\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\ntail\n")
    return layout


@pytest.fixture()
def layout(tmp_path: Path) -> Layout:
    return make_layout(tmp_path)


def test_validation_rejects_unknown_and_mistyped_parameters(layout: Layout) -> None:
    layout.profile_file("smoke", STEM).write_text("n: 2.5\nlearning_rate: 0.1\n")
    with pytest.raises(ReproduceError) as err:
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=lambda _: None)
    message = str(err.value)
    assert str(layout.profile_file("smoke", STEM)) in message
    assert "unknown parameter 'learning_rate'" in message and "parameter 'n' = 2.5" in message
    assert not layout.reports_dir("smoke").exists()  # nothing ran
    layout.profile_file("smoke", STEM).write_text("data: 5\n")  # Optional[str] from the annotation
    with pytest.raises(ReproduceError, match="'data' = 5 .* declares Optional\\[str\\]"):
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=lambda _: None)
    layout.profile_file("smoke", STEM).write_text("- n\n")
    with pytest.raises(ReproduceError, match="must be a mapping"):
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=lambda _: None)
    layout.profile_file("smoke", STEM).unlink()
    with pytest.raises(ReproduceError, match="missing; every notebook needs one parameters file"):
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=lambda _: None)
    with pytest.raises(ReproduceError, match="unknown profile"):
        reproduce.reproduce("fast", layout=layout, stems=[STEM])
    with pytest.raises(ReproduceError, match="no such file"):
        reproduce.reproduce("paper", layout=layout, stems=[STEM], data=layout.notebooks_dir / "absent")


def test_overrides_are_parsed_and_validated_like_profile_values(layout: Layout) -> None:
    assert reproduce.parse_overrides(["iterations=200 seeds=[0, 1]", "label=abc", "data=null"]) == {
        "iterations": 200, "seeds": [0, 1], "label": "abc", "data": None}
    with pytest.raises(ReproduceError, match="write NAME=VALUE"):
        reproduce.parse_overrides(["200"])
    with pytest.raises(ReproduceError, match="not valid YAML"):
        reproduce.parse_overrides(["seeds=[0,"])
    with pytest.raises(ReproduceError, match="'n' = 'abc'"):
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], overrides={"n": "abc"}, log=lambda _: None)
    with pytest.raises(ReproduceError, match="--param iterations: no notebook run here declares it"):
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], overrides={"iterations": 1}, log=lambda _: None)
    assert reproduce.resolve_parameters(layout, "smoke", STEM, overrides={"scale": 2, "other": 1}) == {"n": 3, "scale": 2}


def test_type_rules() -> None:
    declared = {"a": {"default": "1"}, "b": {"default": "1.0"}, "c": {"default": "True"}, "d": {"default": "[1]"},
                "e": {"default": "[1]", "inferred_type_name": "list[int]"},
                "f": {"default": "None", "inferred_type_name": "Optional[str]"}}
    reproduce.validate_parameters({"a": 2, "b": 3, "c": False, "d": [2, 3], "e": [4], "f": "x"}, declared, "here")
    reproduce.validate_parameters({"f": None}, declared, "here")
    for bad in ({"a": True}, {"b": "x"}, {"c": 1}, {"d": 5}, {"e": [1.5]}, {"e": [True]}, {"f": 3}):
        with pytest.raises(ReproduceError, match="here"):
            reproduce.validate_parameters(bad, declared, "here")


def test_claims_have_three_outcomes_and_string_fields() -> None:
    Claim("c", "1", "Table 1", "2", "inconclusive", "+1.0 [-0.5, +2.5]", "paired t")
    Claim("c", "1", "Table 1", "2", "not tested: one run", "+1.0 [-0.5, +2.5]", "paired t", "1 run x 10 test folds")
    with pytest.raises(ValueError, match="one of reproduced, inconclusive, contradicted, not tested: one run"):
        Claim("c", "1", "Table 1", "2", "yes", "+1.0", "t")
    with pytest.raises(TypeError, match="Claim.ours must be a str"):
        Claim("c", "1", "Table 1", 2.0, "reproduced", "+1.0", "t")  # type: ignore[arg-type]
    with pytest.raises(ClaimError, match="re-run its notebook"):  # a report written by the old runner
        claims_module.read_claims({"cells": [{"outputs": [{"metadata": {claims_module.CLAIMS_METADATA_KEY: [
            {"claim": "c", "paper": "1", "ours": "2", "holds": True, "evidence": "e"}]}}]}]})
    claims = [Claim("a", "1", "", "1", "reproduced", "+1", "t"), Claim("b", "1", "", "1", "contradicted", "-1", "t"),
              Claim("c", "1", "", "1", "reproduced", "+2", "t")]
    assert claims_module.outcome_counts(claims) == (
        "3 claims: 2 reproduced, 0 inconclusive, 1 contradicted at 95% confidence.")
    untested = [*claims, Claim("d", "1", "", "1", "not tested: one run", "+1", "t")]
    assert claims_module.outcome_counts(untested) == (
        "4 claims: 2 reproduced, 0 inconclusive, 1 contradicted, 1 not tested (fewer than 3 runs) at 95% confidence.")


def test_agreement_uses_outcome_and_intervals() -> None:
    assert report.parse_effect("+1.23 pts [+0.40, +2.06]") == (1.23, (0.40, 2.06))
    assert report.parse_effect("\u22120.5 deg [\u22121.5, 0.5]") == (-0.5, (-1.5, 0.5))
    assert report.parse_effect("n/a") == (None, None)

    def claim(outcome: str, effect: str) -> Claim:
        return Claim("c", "1", "", "1", outcome, effect, "t")

    old = claim("reproduced", "+1.23 pts [+0.40, +2.06]")
    assert report.claims_agree(old, claim("reproduced", "+0.84 pts [+0.10, +1.58]"))
    assert report.claims_agree(old, claim("reproduced", "+2.30 pts [+1.00, +3.60]"))  # old point in new interval
    assert not report.claims_agree(old, claim("reproduced", "+3.50 pts [+3.10, +3.90]"))
    assert not report.claims_agree(old, claim("inconclusive", "+1.20 pts [-0.10, +2.50]"))
    assert report.claims_agree(claim("reproduced", "yes"), claim("reproduced", "yes"))
    assert not report.claims_agree(claim("reproduced", "yes"), claim("reproduced", "no"))
    assert report.parse_effect("SF-4 +0.53 [+0.10, +0.96]") == (0.53, (0.10, 0.96))
    assert report.parse_effect("+0.00499 (exact)") == (0.00499, None)
    # deterministic checks: the old zero-width interval and the new point value agree
    assert report.claims_agree(claim("reproduced", "+0.00499 [+0.00499, +0.00499]"), claim("reproduced", "+0.00499 (exact)"))


def test_multi_effect_claims_agree_effect_by_effect() -> None:
    def claim(effect: str) -> Claim:
        return Claim("c", "1", "", "1", "inconclusive", effect, "t")

    old = claim("SF-4 +0.53 [+0.10, +0.96]; SF-10 -0.20 [-0.70, +0.30]")
    assert report.claims_agree(old, claim("SF-4 +0.60 [+0.20, +1.00]; SF-10 +0.10 [-0.40, +0.60]"))
    assert not report.claims_agree(old, claim("SF-4 +0.60 [+0.20, +1.00]; SF-10 +0.90 [+0.40, +1.40]"))
    assert not report.claims_agree(old, claim("SF-4 +0.60 [+0.20, +1.00]"))  # an effect missing
    # the committed format without intervals: each committed point inside this run's interval
    assert report.claims_agree(claim("softmax +1.20; triplet -0.40"), claim("softmax +1.00 [+0.50, +1.50]; "
                                                                          "triplet -0.30 [-0.90, +0.30]"))


def test_reproduction_table_without_committed_reports_is_one_line() -> None:
    run = reproduce.NotebookRun("05_x", "executed", 1.0, [Claim("c", "1", "", "1", "reproduced", "+1 [+0.5, +1.5]", "t")])
    assert report.reproduction_table([run], {"05_x": None}) == (
        "no committed reports to compare with (none of the notebooks run here has a report of this profile "
        "committed at git HEAD)")
    table = report.reproduction_table([run], {"05_x": [run.claims[0]]})
    assert table.splitlines()[-1].startswith("1 of 1 compared claims agree")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_run_skip_rerun_reports_readme_and_check_against_committed(layout: Layout, tmp_path: Path) -> None:
    logs: list[str] = []
    runs = reproduce.reproduce("default", layout=layout, stems=[STEM, "02_later"], data=layout.readme, log=logs.append)
    assert [r.status for r in runs] == ["executed", "not written yet"]
    assert runs[0].claims == [Claim("sum is n*scale", "4.5", "Table 1", "4.5", "reproduced", "+0.0 [-0.5, +0.5]", "x")]
    assert "no committed reports to compare with" in "\n".join(logs)
    assert "0 of 0" not in "\n".join(logs)
    executed = layout.reports_dir("default") / f"{STEM}.ipynb"
    nb = json.loads(executed.read_text())
    assert nb["metadata"]["papermill"]["parameters"] == {"n": 3, "data": "README.md"}  # relative to the project root
    assert runs[0].wall_s == nb["metadata"]["sphereface"]["wall_s"]  # the value a later pass reads back
    provenance = nb["metadata"]["sphereface"]["provenance"]
    assert provenance["dispatch_pins"] == reproduce.dispatch_environment("default") and provenance["profile"] == "default"
    assert provenance["torch_cpu_capability"] in ("AVX2", "DEFAULT") and provenance["wall_s"] > 0
    assert provenance["data"] == "README.md" and provenance["overrides"] == {}  # the run's --data and --param
    assert nb["metadata"]["sphereface"]["data"] == "README.md" and nb["metadata"]["sphereface"]["overrides"] == {}
    html_dir = layout.reports_dir("default") / "html"
    page = (html_dir / f"{STEM}.html").read_text()
    assert "# values" not in page and page.count("# Parameters") == 1  # the values used, shown once
    assert '<script src="mathjax/tex-svg-full.js">' in page and 'src="http' not in page  # nothing from the network
    assert (html_dir / "mathjax" / "tex-svg-full.js").is_file()
    index = (html_dir / "index.html").read_text()
    assert "sum is n*scale" in index and "1 claims: 1 reproduced" in index and "ATEN_CPU_CAPABILITY=avx2" in index
    for report in [executed, *html_dir.glob("*.html"), layout.reports_dir("default") / "summary.md", layout.readme]:
        assert str(tmp_path) not in report.read_text(), f"{report} holds an absolute path"
    readme = layout.readme.read_text()
    assert readme.startswith("# Title\n\nintro\n\n<!-- results:start -->") and readme.endswith("<!-- results:end -->\n\ntail\n")
    assert "| sum is n\\*scale" not in readme
    assert "| sum is n*scale | 4.5 (Table 1) | 4.5 | +0.0 [-0.5, +0.5] | reproduced |" in readme
    assert "1 claims: 1 reproduced, 0 inconclusive, 0 contradicted" in readme and "Provenance of notebooks 01" in readme
    assert "make reproduce" in readme and "old" not in readme
    assert "data: `README.md`; overrides (--param): none" in readme
    assert not list(layout.reports_dir("default").glob(".*partial*"))

    logs.clear()
    written = {p: p.read_bytes() for p in [*html_dir.glob("*.html"), layout.reports_dir("default") / "summary.md",
                                             layout.readme]}
    again = reproduce.reproduce("default", layout=layout, stems=[STEM, "02_later"], data=layout.readme, log=logs.append)
    assert again[0].status == "up to date" and again[0].claims == runs[0].claims
    assert "nothing was re-run" in logs[-1] and "make reproduce FORCE=1" in logs[-1]
    assert {p: p.read_bytes() for p in written} == written  # a pass that re-runs nothing changes no report file

    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "reports")
    _git(tmp_path, "commit", "-q", "-m", "reports")
    layout.profile_file("default", STEM).write_text("n: 4\n")  # parameters changed: runs again, and disagrees
    logs.clear()
    changed = reproduce.reproduce("default", layout=layout, stems=[STEM], readme=False, log=logs.append)
    assert changed[0].status == "executed" and changed[0].claims[0].ours == "6.0"
    assert "| reproduced, +0.0 [-0.5, +0.5] | contradicted, +1.5 [-0.5, +0.5] | NO" in logs[-1]
    assert "0 of 1 compared claims agree" in logs[-1]

    custom = reproduce.reproduce("default", layout=layout, stems=[STEM], overrides={"n": 3}, log=logs.append)
    assert custom[0].status == "executed" and "1 of 1 compared claims agree" in logs[-1]
    custom_nb = json.loads((layout.reports_dir("default-custom") / f"{STEM}.ipynb").read_text())
    assert custom_nb["metadata"]["sphereface"]["provenance"]["overrides"] == {"n": 3}
    assert "data: none (the profile's own); overrides (--param): `n=3`" in (
        layout.reports_dir("default-custom") / "summary.md").read_text()
    assert reproduce.read_claims(json.loads(executed.read_text()))[0].ours == "6.0"  # the profile's report is kept
    assert "| 4.5 | +1.5" not in layout.readme.read_text() and "default-custom" not in layout.readme.read_text()

    _write_notebook(layout.notebook(STEM), "raise RuntimeError('boom')")  # failure keeps the previous result
    failed = reproduce.reproduce("default", layout=layout, stems=[STEM], readme=False, log=logs.append)
    assert failed[0].status == "failed" and "RuntimeError: boom" in (failed[0].error or "")
    assert reproduce.read_claims(json.loads(executed.read_text()))[0].ours == "6.0"
    assert (layout.reports_dir("default") / f"{STEM}.failed.ipynb").is_file()


@pytest.mark.slow
def test_console_stays_quiet_and_long_cells_get_a_heartbeat(layout: Layout, capfd: pytest.CaptureFixture) -> None:
    _write_notebook(layout.notebook(STEM), "import os, time\ntime.sleep(2.5)\nprint(os.getcwd())\n"
                    "os.write(2, b'KeyboardInterrupt from a worker\\n')\n" + CLAIMS_BODY)
    logs: list[str] = []
    reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=logs.append, heartbeat_s=1.0)
    console = capfd.readouterr()
    assert "IPKernelApp" not in console.err + console.out and "KeyboardInterrupt" not in console.err + console.out
    assert any(line.startswith(f"  {STEM}: cell 4/4 running") for line in logs), logs
    assert sum(line.startswith(f"{STEM}: executed in ") for line in logs) == 1
    assert f"note: {STEM}: cells 4 print an absolute path" in "\n".join(logs)  # the cwd printed


def test_readme_block_is_added_once_and_markers_checked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n")
    report.update_readme(readme, "table 1")
    report.update_readme(readme, "table 2")
    text = readme.read_text()
    assert text.count(report.RESULTS_START) == 1 and "table 2" in text and "table 1" not in text
    report.update_readme(readme, "real 1", "lfw")  # the lfw profile's block: its own section, after the default's
    report.update_readme(readme, "real 2", "lfw")
    text = readme.read_text()
    assert "table 2" in text and "real 2" in text and "real 1" not in text
    assert text.index(report.RESULTS_END) < text.index("## Results on real faces (the lfw profile)") < text.index(
        "<!-- results:lfw:start -->\nreal 2\n<!-- results:lfw:end -->")
    readme.write_text(f"{report.RESULTS_END}\n{report.RESULTS_START}\n")
    with pytest.raises(report.ReportError, match="must each appear once"):
        report.update_readme(readme, "t")


def test_record_claims_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[tuple[dict, dict]] = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw, metadata: shown.append((data, metadata)))
    claims = [Claim("a | b", "1", "SphereFace Table 3", "2", "inconclusive", "+1.0 [-0.2, +2.2]", "paired t")]
    claims_module.record_claims(claims)
    data, metadata = shown[0]
    assert "| a \\| b | 1 (SphereFace Table 3) | 2 | +1.0 [-0.2, +2.2] | inconclusive |  | paired t |" in data["text/markdown"]
    assert data["text/markdown"].startswith("1 claims: 0 reproduced, 1 inconclusive")
    assert claims_module.read_claims({"cells": [{"outputs": [{"metadata": metadata}]}]}) == claims
    with pytest.raises(TypeError, match="non-empty list"):
        claims_module.record_claims([])


def test_a_partial_run_keeps_the_other_notebooks_results(layout: Layout) -> None:
    reproduce.reproduce("default", layout=layout, stems=[STEM], log=lambda _: None)
    _write_notebook(layout.notebook("02_other"), "")
    layout.profile_file("default", "02_other").write_text("")
    runs = reproduce.reproduce("default", layout=layout, stems=["02_other"], log=lambda _: None)
    by_stem = {r.stem: r for r in runs}
    assert by_stem[STEM].status == "up to date" and by_stem[STEM].claims
    assert "| sum is n*scale |" in layout.readme.read_text()
    executed = layout.reports_dir("default") / f"{STEM}.ipynb"  # a report of the previous runner's format
    executed.write_text(executed.read_text().replace('"paper_source": "Table 1"', '"holds": true'))
    runs = reproduce.reproduce("default", layout=layout, stems=["02_other"], log=lambda _: None)
    assert {r.stem: r.status for r in runs}[STEM] == "old report (re-run it)"


def test_command_line_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert run_command(reproduce.main, ["--profile", "smoke", "--param", "7"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --param '7': write NAME=VALUE, e.g. iterations=200 "
                                                            "or seeds=[0,1]"]
    assert run_command(reproduce.main, ["--profile", "default", "--update-test-copies"]) == 2
    capsys.readouterr()
    for profile in ("real", "lfw"):  # real-data profiles never fall back to the synthetic faces
        assert run_command(reproduce.main, ["--profile", profile]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: profile '{profile}' needs") and "DATA=" in err[0]


HOLD_LOCK = """
import sys, time
from pathlib import Path
from sphereface_lib.locking import writer_lock
folder = Path(sys.argv[1])
with writer_lock(folder / ".writer.lock", folder / ".writer.lock.owner", "x", "y"):
    print("held", flush=True)
    time.sleep(60)
"""


def _run_quietly(layout: Layout, **kw) -> int:
    """``reproduce`` as its command line runs it: the exit status (a user error printed as one line)."""
    def main(_: object) -> int:
        reproduce.reproduce(layout=layout, log=lambda _: None, **kw)
        return 0

    return run_command(main, [])


def test_a_second_run_into_one_reports_folder_is_refused_naming_the_first(
        layout: Layout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import os
    import sys

    monkeypatch.setattr(reproduce, "check_kernel", lambda _: None)
    folder = layout.reports_dir("default-custom")
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert _run_quietly(layout, profile="default", stems=[STEM], overrides={"n": 4}) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: reports folder {folder} is in use by process "
                                                       f"{holder.pid} on host "), lines
        assert "two runs into one reports folder would mix their results" in lines[0]
        assert sorted(p.name for p in folder.iterdir()) == [".writer.lock", ".writer.lock.owner"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert _run_quietly(layout, profile="default", stems=[], force=True) == 0  # the lock goes with its holder
    assert _run_quietly(layout, profile="default", stems=[], data=layout.readme) == 0
    assert (layout.reports_dir("default") / "summary.md").is_file()


def _stored_report(layout: Layout, reports_name: str, settings: dict | None) -> None:
    """An executed copy of the tiny notebook, its claim 'ours' = 9.9, made with ``settings`` (data, overrides)."""
    nb = nbformat.read(str(layout.notebook(STEM)), as_version=4)
    claim = {"claim": "sum is n*scale", "paper": "4.5", "paper_source": "Table 1", "ours": "9.9",
             "outcome": "contradicted", "effect": "+5.4 [-0.5, +0.5]", "evidence": "x"}
    nb.cells[-1].outputs = [nbformat.v4.new_output("display_data", {"text/plain": "claims"},
                                                   metadata={claims_module.CLAIMS_METADATA_KEY: [claim]})]
    nb.metadata["sphereface"] = {"profile": reports_name, **(settings or {})}
    layout.reports_dir(reports_name).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(layout.reports_dir(reports_name) / f"{STEM}.ipynb"))


def test_reports_made_with_other_data_or_overrides_are_not_mixed_into_the_summary(
        layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reproduce, "check_kernel", lambda _: None)
    summary = layout.reports_dir("default") / "summary.md"
    _stored_report(layout, "default", {"data": "other/pack", "overrides": {}})
    runs = reproduce.reproduce("default", layout=layout, stems=[], readme=False, log=lambda _: None)
    assert [(r.stem, r.status, r.claims) for r in runs] == [
        (STEM, "made with other --data/--param (not listed; re-run it)", [])]
    assert "9.9" not in summary.read_text() and "made with other --data/--param" in summary.read_text()
    runs = reproduce.reproduce("default", layout=layout, stems=[], data=layout.readme, readme=False, log=lambda _: None)
    assert runs[0].status.startswith("made with other")  # another data path
    _stored_report(layout, "default", {"data": "README.md", "overrides": {}})
    runs = reproduce.reproduce("default", layout=layout, stems=[], data=layout.readme, readme=False, log=lambda _: None)
    assert runs[0].status == "stale (not re-run)" and runs[0].claims[0].ours == "9.9"  # the same settings: listed
    assert "9.9" in summary.read_text()
    _stored_report(layout, "default", None)  # a report from before the runner recorded them: made with neither
    runs = reproduce.reproduce("default", layout=layout, stems=[], readme=False, log=lambda _: None)
    assert runs[0].claims[0].ours == "9.9"
    runs = reproduce.reproduce("default", layout=layout, stems=[], data=layout.readme, readme=False, log=lambda _: None)
    assert runs[0].claims == []


def test_two_params_runs_into_one_custom_folder_do_not_mix(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reproduce, "check_kernel", lambda _: None)
    monkeypatch.setattr(reproduce, "kernel_provenance", lambda env: {})
    monkeypatch.setattr(reproduce, "execute_notebook", lambda layout, name, stem, *a, **kw: reproduce.NotebookRun(
        stem, "executed", 1.0, [Claim("fresh", "1", "", "1", "reproduced", "+1 [+0.5, +1.5]", "t")]))
    other = "02_other"
    _write_notebook(layout.notebook(other), CLAIMS_BODY)
    layout.profile_file("default", other).write_text("")
    _stored_report(layout, "default-custom", {"data": None, "overrides": {"n": 3}})  # a first PARAMS run's report
    custom = layout.reports_dir("default-custom")
    (custom / f"{STEM}.ipynb").rename(custom / f"{other}.ipynb")
    runs = reproduce.reproduce("default", layout=layout, stems=[STEM], overrides={"n": 4}, log=lambda _: None)
    assert [(r.stem, r.status) for r in runs] == [(STEM, "executed"), (other, "made with other --data/--param "
                                                                             "(not listed; re-run it)")]
    summary = (layout.reports_dir("default-custom") / "summary.md").read_text()
    assert "fresh" in summary and "9.9" not in summary and "1 claims: 1 reproduced" in summary
    runs = reproduce.reproduce("default", layout=layout, stems=[STEM], overrides={"n": 3}, log=lambda _: None)
    assert [r.claims[0].ours for r in runs] == ["1", "9.9"]  # the same overrides: both listed
