"""The provenance block (sphereface_lib.companion.provenance): commit, dispatch pins, the Markdown lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sphereface_lib.companion import provenance
from sphereface_lib.companion.provenance import DISPATCH_PINS


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def test_library_commit_clean_dirty_and_unknown(tmp_path: Path) -> None:
    assert provenance.library_commit(tmp_path) == "unknown"  # not a repository
    _git(tmp_path, "init", "-q")
    (tmp_path / "lib.py").write_text("x = 1\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "01.ipynb").write_text("{}")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    commit = provenance.library_commit(tmp_path)
    assert len(commit) >= 7 and "+" not in commit
    (tmp_path / "reports" / "01.ipynb").write_text('{"new": 1}')  # the runner's own output: still clean
    (tmp_path / "untracked.txt").write_text("")
    assert provenance.library_commit(tmp_path) == commit
    (tmp_path / "lib.py").write_text("x = 2\n")
    assert provenance.library_commit(tmp_path) == commit + "+dirty"


def test_block_lines_and_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert provenance.dispatch_environment("default") == DISPATCH_PINS == provenance.dispatch_environment("smoke")
    assert provenance.dispatch_environment("paper") == {}
    for key in DISPATCH_PINS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    for key in (provenance.DATA_VARIABLE, provenance.OVERRIDES_VARIABLE):
        monkeypatch.delenv(key, raising=False)
    block = provenance.collect_provenance("default", wall_s=12.34, commit="abc1234")
    assert "data" not in block and "overrides" not in block  # outside a run: not claimed
    assert block["dispatch_pins"] == {"MKL_CBWR": "AVX2"} and block["wall_s"] == 12.3
    assert block["profile"] == "default" and block["commit"] == "abc1234" and block["threads"]["intra_op"] >= 1
    text = provenance.provenance_markdown(block)
    assert text.count("\n- ") == 4 and "`MKL_CBWR=AVX2` (pinned)" in text and "wall time 12.3 s" in text
    assert f"torch {block['torch_cpu_capability']}, MKL {block['mkl']}, oneDNN {block['onednn']}" in text
    assert str(Path.cwd()) not in text and str(Path.home()) + "/" not in text
    assert "not pinned" in provenance.provenance_markdown({**block, "dispatch_pins": {}})


def test_versions_parsed_from_the_build_configuration() -> None:
    config = ("  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
              "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)\n")
    assert provenance._library_versions(config) == {"mkl": "2024.2", "onednn": "3.12.0"}
    assert provenance._library_versions("") == {"mkl": "not built in", "onednn": "not built in"}


def test_show_provenance_displays_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    monkeypatch.setenv(provenance.PROFILE_VARIABLE, "smoke")
    block = provenance.show_provenance()
    assert block["profile"] == "smoke" and "profile: smoke" in shown[0].data and shown[0].data.startswith("**Provenance**")


def test_the_block_records_the_runs_data_path_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in provenance.run_settings_environment("data/att_real", {"seeds": [0, 1], "lr": 0.05}).items():
        monkeypatch.setenv(key, value)
    block = provenance.collect_provenance("default-custom", commit="abc1234")
    assert block["data"] == "data/att_real" and block["overrides"] == {"seeds": [0, 1], "lr": 0.05}
    lines = provenance.provenance_lines(block)
    assert lines[-1] == "data: `data/att_real`; overrides (--param): `lr=0.05`, `seeds=[0, 1]`"
    for key, value in provenance.run_settings_environment(None, {}).items():
        monkeypatch.setenv(key, value)
    block = provenance.collect_provenance("default", commit="abc1234")
    assert block["data"] is None and block["overrides"] == {}
    assert provenance.provenance_lines(block)[-1] == "data: none (the profile's own); overrides (--param): none"
