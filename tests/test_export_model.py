"""The route from a profile's trained models to the evaluation CLI: export_model reads a model from the model cache
(never trains one) and writes the model.pt2 that ``evaluate lfw --model`` scores to the notebooks' accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sphereface_lib import evaluate
from sphereface_lib.companion import experiments as E
from sphereface_lib.companion import export_model as X
from sphereface_lib.errors import run_command


def test_a_profile_model_exports_and_scores_as_the_notebooks_score_it(tmp_path: Path, capsys) -> None:
    args = ["--profile", "smoke", "--param", f"cache_dir={tmp_path / 'cache'}", "--row", "softmax", "--seed", "0",
            "--out", str(tmp_path / "out" / "model.pt2")]
    assert run_command(X.main, args) == 2
    assert "profile 'smoke' has not trained this model" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.pt2").exists()

    p = X.notebook_parameters("smoke", None, {"cache_dir": str(tmp_path / "cache")})
    recipe = X.recipe_of(p)
    bench = E.open_benchmark(None, p["cache_dir"], ("train", "lfw"), p["size"])
    trained = E.train_row(bench, "softmax", recipe, 0, p["cache_dir"])  # what notebook 06 trains under smoke
    assert run_command(X.main, args) == 0
    assert "score it with" in capsys.readouterr().out

    out = tmp_path / "result.json"
    assert evaluate.main(["lfw", "--images", str(bench.lfw.root), "--model", str(tmp_path / "out" / "model.pt2"),
                          "--pairs", bench.lfw_pairs.source, "--out", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["accuracy"] == pytest.approx(E.lfw_accuracy(trained, bench).mean, abs=1e-9)
