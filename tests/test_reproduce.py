"""The notebook runner (sphereface_lib.companion.reproduce) on a tiny notebook in a temporary project layout."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sphereface_lib.companion import reproduce
from sphereface_lib.companion.reproduce import Claim, Layout, ReproduceError

STEM = "01_tiny"


def _write_notebook(path: Path, body: str) -> None:
    nb = new_notebook(
        cells=[
            new_code_cell("n = 3  # values\nscale = 1.5\nlabel = 'x'\ndata = None", metadata={"tags": ["parameters"]}),
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
    "claim = dict(claim='sum is n*scale', paper='4.5', ours=f'{total:.1f}', holds=total == 4.5, evidence=label)\n"
    "display({'text/plain': 'claims'}, raw=True, metadata={'sphereface_claims': [claim]})"
)


@pytest.fixture()
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "notebooks", tmp_path / "profiles", tmp_path / "reports", tmp_path / "README.md")
    _write_notebook(layout.notebook(STEM), CLAIMS_BODY)
    for profile in reproduce.PROFILES:
        layout.profile_file(profile, STEM).parent.mkdir(parents=True, exist_ok=True)
        layout.profile_file(profile, STEM).write_text("n: 3\n")
    layout.readme.write_text("# Title\n\nintro\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\ntail\n")
    return layout


def test_validation_rejects_unknown_and_mistyped_parameters(layout: Layout) -> None:
    layout.profile_file("smoke", STEM).write_text("n: 2.5\nlearning_rate: 0.1\n")
    with pytest.raises(ReproduceError) as err:
        reproduce.reproduce("smoke", layout=layout, stems=[STEM], log=lambda _: None)
    message = str(err.value)
    assert str(layout.profile_file("smoke", STEM)) in message
    assert "unknown parameter 'learning_rate'" in message and "parameter 'n' = 2.5" in message
    assert not layout.reports_dir("smoke").exists()  # nothing ran
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


def test_type_rules() -> None:
    declared = {"a": {"default": "1"}, "b": {"default": "1.0"}, "c": {"default": "True"}, "d": {"default": "[1]"}}
    reproduce.validate_parameters({"a": 2, "b": 3, "c": False, "d": [2, 3]}, declared, "here")
    for bad in ({"a": True}, {"b": "x"}, {"c": 1}, {"d": 5}):
        with pytest.raises(ReproduceError, match="here"):
            reproduce.validate_parameters(bad, declared, "here")


@pytest.mark.slow
def test_run_skip_rerun_reports_and_readme(layout: Layout) -> None:
    logs: list[str] = []
    runs = reproduce.reproduce("default", layout=layout, stems=[STEM, "02_later"], data=layout.readme, log=logs.append)
    assert [r.status for r in runs] == ["executed", "not written yet"]
    assert runs[0].claims == [Claim("sum is n*scale", "4.5", "4.5", True, "x")]
    executed = layout.reports_dir("default") / f"{STEM}.ipynb"
    nb = json.loads(executed.read_text())
    assert nb["metadata"]["papermill"]["parameters"] == {"n": 3, "data": str(layout.readme.resolve())}
    html_dir = layout.reports_dir("default") / "html"
    assert (html_dir / f"{STEM}.html").is_file() and "sum is n*scale" in (html_dir / "index.html").read_text()
    readme = layout.readme.read_text()
    assert readme.startswith("# Title\n\nintro\n\n<!-- results:start -->") and readme.endswith("<!-- results:end -->\n\ntail\n")
    assert "| sum is n\\*scale" not in readme and "| sum is n*scale | 4.5 | 4.5 | yes (x) |" in readme
    assert "make reproduce" in readme and "old" not in readme
    assert not list(layout.reports_dir("default").glob(".*partial*"))

    again = reproduce.reproduce("default", layout=layout, stems=[STEM], data=layout.readme, log=logs.append)
    assert again[0].status == "up to date" and again[0].claims == runs[0].claims

    layout.profile_file("default", STEM).write_text("n: 4\n")  # parameters changed: runs again
    changed = reproduce.reproduce("default", layout=layout, stems=[STEM], readme=False, log=logs.append)
    assert changed[0].status == "executed" and changed[0].claims[0].ours == "6.0" and not changed[0].claims[0].holds

    _write_notebook(layout.notebook(STEM), "raise RuntimeError('boom')")  # failure keeps the previous result
    failed = reproduce.reproduce("default", layout=layout, stems=[STEM], readme=False, log=logs.append)
    assert failed[0].status == "failed" and "RuntimeError: boom" in (failed[0].error or "")
    assert reproduce.read_claims(json.loads(executed.read_text()))[0].ours == "6.0"
    assert (layout.reports_dir("default") / f"{STEM}.failed.ipynb").is_file()


def test_readme_block_is_added_once_and_markers_checked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n")
    reproduce.update_readme(readme, "table 1")
    reproduce.update_readme(readme, "table 2")
    text = readme.read_text()
    assert text.count(reproduce.RESULTS_START) == 1 and "table 2" in text and "table 1" not in text
    readme.write_text(f"{reproduce.RESULTS_END}\n{reproduce.RESULTS_START}\n")
    with pytest.raises(ReproduceError, match="must each appear once"):
        reproduce.update_readme(readme, "t")


def test_record_claims_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[tuple[dict, dict]] = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw, metadata: shown.append((data, metadata)))
    claims = [Claim("a | b", "1", "2", False, "spread 0.1")]
    reproduce.record_claims(claims)
    data, metadata = shown[0]
    assert "| a \\| b | 1 | 2 | no (spread 0.1) |" in data["text/markdown"]
    assert reproduce.read_claims({"cells": [{"outputs": [{"metadata": metadata}]}]}) == claims
    with pytest.raises(TypeError, match="non-empty list"):
        reproduce.record_claims([])


def test_a_partial_run_keeps_the_other_notebooks_results(layout: Layout) -> None:
    reproduce.reproduce("default", layout=layout, stems=[STEM], log=lambda _: None)
    _write_notebook(layout.notebook("02_other"), "")
    layout.profile_file("default", "02_other").write_text("")
    runs = reproduce.reproduce("default", layout=layout, stems=["02_other"], log=lambda _: None)
    by_stem = {r.stem: r for r in runs}
    assert by_stem[STEM].status == "up to date" and by_stem[STEM].claims
    assert "| sum is n*scale |" in layout.readme.read_text()
