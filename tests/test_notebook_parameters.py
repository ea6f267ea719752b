"""Notebook-side parameter checks (sphereface_lib.companion.parameters), alone and under papermill's CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sphereface_lib.companion.parameters import ParameterError, check_parameters, injected_names, matches
from sphereface_lib.errors import UserError

PARAMETERS = ("iterations: int = 500  # training iterations\nseeds: list[int] = [0, 1]  # one model per seed\n"
              "data: 'Optional[str]' = None  # a pack, or None for synthetic faces\nlr: float = 0.1")


@pytest.mark.parametrize("value, annotation, ok", [
    (1, "int", True), (True, "int", False), (1.5, "int", False), (1, "float", True), (True, "float", False),
    (True, bool, True), (0, bool, False), ("a", str, True), ([1, 2], "list[int]", True), ([1, "a"], "list[int]", False),
    ([1, True], list[int], False), ((1, 2.0), "tuple[float, ...]", True), ([1, 2], "tuple[int, str]", False),
    ({"a": 1}, "dict[str, int]", True), ({"a": "b"}, "dict[str, int]", False), (None, "Optional[str]", True),
    ("x", Optional[str], True), (3, "Optional[str]", False), (None, str | None, True), (3, "str | None", False),
    (None, "None", True), ([[1], [2]], "list[list[int]]", True), (object(), "Any", True),
])
def test_types(value: object, annotation: object, ok: bool) -> None:
    assert matches(value, annotation) is ok


def test_unsupported_types_are_named() -> None:
    with pytest.raises(ParameterError, match="type 'set\\[int\\]' is not supported"):
        matches({1}, "set[int]")
    with pytest.raises(ParameterError, match="not a Python type expression"):
        matches(1, "int (")


def test_check_parameters_names_unknown_and_mistyped() -> None:
    history = ["", PARAMETERS, "# Parameters\niterations = 'abc'\nunknown = 1\n"]
    namespace = {"__annotations__": {"iterations": int, "seeds": list[int], "data": "Optional[str]"},
                 "iterations": "abc", "seeds": [0, 1.5], "data": None, "In": history}
    assert injected_names(history) == ["iterations", "unknown"]
    with pytest.raises(UserError) as err:
        check_parameters(namespace)
    message = str(err.value)
    assert "unknown parameter 'unknown'; this notebook declares: data, iterations, seeds" in message
    assert "parameter 'iterations' = 'abc' (str) does not match its declared type int" in message
    assert "parameter 'seeds' = [0, 1.5] (list) does not match its declared type list[int]" in message
    check_parameters({**namespace, "iterations": 3, "seeds": [2], "In": history[:2]})
    with pytest.raises(ParameterError, match="declares no types"):
        check_parameters({"In": []})


@pytest.mark.slow
def test_papermill_cli_fails_at_once_naming_the_parameter(tmp_path: Path) -> None:
    nb = new_notebook(cells=[
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell("from sphereface_lib.companion.parameters import check_parameters\ncheck_parameters(globals())"),
        new_code_cell("print('trained', iterations)"),
    ])
    nb.metadata["kernelspec"] = {"name": "sphereface", "display_name": "Python (sphereface)", "language": "python"}
    source = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(source))

    def papermill(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "papermill", str(source), str(tmp_path / "out.ipynb"), *args],
                              capture_output=True, text=True, timeout=300)

    for args, expected in ((["-p", "unknown", "1"], "unknown parameter 'unknown'"),
                           (["-p", "iterations", "abc"], "parameter 'iterations' = 'abc' (str)"),
                           (["-y", "seeds: [0, x]"], "parameter 'seeds' = [0, 'x']")):
        result = papermill(*args)
        assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
        assert not nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells[-1].get("outputs")  # stopped there
    result = papermill("-p", "iterations", "7", "-y", "data: pack")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained 7" in nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells[-1].outputs[0].text


LFW_VERIFICATION = ("04_effect_of_m", "05_effect_of_depth", "06_lfw_ytf_comparison")
LFW_RECIPE = ("width", "iterations", "lr", "lambda_min_at")


def test_lfw_profile_validates_and_states_real_data_limits() -> None:
    """The lfw profile (real faces: CelebA -> LFW) validates against every notebook's declared parameters, runs no
    YTF (no real frames), puts three seeds behind every claim, asks for no more distractors than LFW has (4,069),
    anneals at the official 5.9% and trains 07's models with 06's recipe (so 07 reads 06's cached models)."""
    from sphereface_lib.companion import experiments, reproduce

    layout = reproduce.Layout()
    assert "lfw" in reproduce.PROFILES
    values = {stem: reproduce.resolve_parameters(layout, "lfw", stem) for stem in reproduce.NOTEBOOKS}
    for stem in LFW_VERIFICATION:
        assert values[stem]["protocols"] == ["lfw"], stem
        assert "YTF has no real frames" in layout.profile_file("lfw", stem).read_text(), stem
    for stem in (*LFW_VERIFICATION, "07_megaface"):
        assert len(values[stem]["seeds"]) >= 3, stem
        official = experiments.OFFICIAL_LAMBDA_MIN_AT / experiments.OFFICIAL_ITERATIONS
        assert round(values[stem]["lambda_min_at"], 3) == round(official, 3), stem
    assert max(values["07_megaface"]["distractor_counts"]) <= 4069
    assert ({k: values["06_lfw_ytf_comparison"][k] for k in ("backbone", *LFW_RECIPE)}
            == {k: values["07_megaface"][k] for k in ("backbone", *LFW_RECIPE)})
    assert all(values[s][k] == values["04_effect_of_m"][k] for s in LFW_VERIFICATION for k in LFW_RECIPE)
