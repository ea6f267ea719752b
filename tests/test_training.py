"""The training engine: config, recipe (learning-rate steps, lambda stepping, param groups), learning,
divergence guard, resume, model cache, command line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from sphereface_lib.losses import ASoftmax, LambdaSchedule
from sphereface_lib.training import (
    ConfigError, TrainConfig, TrainingDiverged, learning_rate, load_checkpoint, train, train_cached)
from sphereface_lib.training import cache as cache_module
from sphereface_lib.training.trainer import build_model, param_groups
from sphereface_lib.errors import run_command
from sphereface_lib.train import main as cli_main
from test_training_data import make_patterns, tiny_config


@pytest.fixture(scope="module")
def patterns(tmp_path_factory: pytest.TempPathFactory):
    return make_patterns(tmp_path_factory.mktemp("data") / "patterns")


def same_state(a: dict, b: dict) -> bool:
    """Equal state dicts: tensors bit for bit, extra state (plain values) by ==."""
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return same_state(a.state_dict(), b.state_dict())


# --- config -------------------------------------------------------------------------------------------

def test_config_defaults_are_the_paper_recipe() -> None:
    c = TrainConfig()
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (0.1, 0.9, 5e-4)
    assert (c.optim.lr_steps, c.optim.iterations, c.optim.batch_size) == ([16000, 24000], 28000, 512)
    assert (c.model.backbone, c.head.name, c.head.kwargs["m"]) == ("sphereface20", "asoftmax", 4)
    assert TrainConfig.from_yaml("configs/sphereface20_casia_m4.yaml").optim == c.optim
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  lr_stpes: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim\.lr_stpes'.*lr_steps"):
        TrainConfig.from_yaml(bad)
    bad.write_text("optim:\n  iterations: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.iterations must be int.*'many'"):
        TrainConfig.from_yaml(bad)
    bad.write_text("run:\n  progress: 1\n")
    with pytest.raises(ConfigError, match=r"run\.progress must be bool"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="optim.lr_steps must be positive and increasing"):
        TrainConfig().replace("optim.lr_steps=[20, 10]")
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig().replace("optim.lr")
    c = TrainConfig.from_yaml("configs/tiny_cpu.yaml", ["optim.lr=1e-2", "model.width=0.5"])
    assert (c.optim.lr, c.model.width) == (0.01, 0.5)


# --- recipe -------------------------------------------------------------------------------------------

def test_learning_rate_is_divided_by_10_at_the_steps() -> None:
    c = TrainConfig()
    lrs = [learning_rate(c, i) for i in (0, 15999, 16000, 23999, 24000, 27999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_param_groups_follow_the_prototxt() -> None:
    c = TrainConfig().replace("model.width=0.125", "model.feat_dim=16")
    backbone, head = build_model(c, (28, 24, 1), 5)
    groups = param_groups(backbone, head, c)
    regular, biases = groups
    assert (biases["lr_mult"], biases["weight_decay"]) == (2.0, 0.0)
    assert (regular["lr_mult"], regular["weight_decay"]) == (1.0, 5e-4)
    bias_ids = {id(p) for p in biases["params"]}
    stride2 = [stage[0].bias for stage in backbone.stages] + [backbone.fc.bias]
    assert bias_ids == {id(p) for p in stride2}
    trainable = {id(p) for p in [*backbone.parameters(), *head.parameters()] if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    frozen = backbone.stages[0][2].conv1.bias
    assert not frozen.requires_grad and id(frozen) not in trainable
    off = param_groups(backbone, head, c.replace("optim.caffe_bias_mult=false"))
    assert len(off) == 1 and len(off[0]["params"]) == len(trainable)


def test_lambda_and_learning_rate_are_stepped_every_iteration(patterns, tmp_path: Path) -> None:
    c = tiny_config(patterns.root, tmp_path / "run", optim__iterations=20, optim__lr_steps="[8, 16]",
                    run__log_every=1, run__checkpoint_every=100)
    result = train(c)
    schedule = LambdaSchedule(base=1000.0, gamma=0.5, lambda_min=5.0)
    assert [r["iteration"] for r in result.metrics] == list(range(1, 21))
    for row in result.metrics:
        assert row["lambda"] == pytest.approx(schedule(row["iteration"] - 1))
        assert row["lr"] == pytest.approx(learning_rate(c, row["iteration"] - 1))
    assert sorted({r["lr"] for r in result.metrics}) == pytest.approx([0.0005, 0.005, 0.05])
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == result.metrics


# --- learning, checkpoints, resume --------------------------------------------------------------------

def test_tiny_run_learns_and_its_checkpoint_reloads(patterns, tmp_path: Path) -> None:
    c = tiny_config(patterns.root, tmp_path / "run", optim__iterations=60, optim__lr_steps="[40, 50]")
    result = train(c)
    assert result.metrics[0]["acc"] < 0.6
    assert result.metrics[-1]["acc"] >= 0.9, result.metrics
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.iteration == 60 and loaded.config == c and loaded.metrics == result.metrics
    assert _states_equal(loaded.backbone, result.backbone) and _states_equal(loaded.head, result.head)
    assert not loaded.backbone.training and not loaded.head.training
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["config"] == c.to_dict() and state["dataset"]["num_identities"] == 10


def test_in_process_resume_matches_an_uninterrupted_run_bit_for_bit(patterns, tmp_path: Path) -> None:
    full = train(tiny_config(patterns.root, tmp_path / "full", optim__iterations=16, optim__lr_steps="[12]"))
    train(tiny_config(patterns.root, tmp_path / "split", optim__iterations=10, optim__lr_steps="[12]"))
    resumed = train(tiny_config(patterns.root, tmp_path / "split", optim__iterations=16, optim__lr_steps="[12]"))
    assert _states_equal(full.backbone, resumed.backbone) and _states_equal(full.head, resumed.head)
    assert [r["iteration"] for r in resumed.metrics] == [r["iteration"] for r in full.metrics]
    with pytest.raises(ConfigError, match="different configuration"):
        train(tiny_config(patterns.root, tmp_path / "split", optim__lr=0.01))


# --- divergence guard ---------------------------------------------------------------------------------

def test_divergence_stops_the_run_without_saving_nan_weights(patterns, tmp_path: Path, monkeypatch) -> None:
    original = ASoftmax.compute_loss

    def poisoned(self, features, labels):
        loss, logits = original(self, features, labels)
        return (loss * float("nan") if int(self.iteration) >= 23 else loss), logits

    monkeypatch.setattr(ASoftmax, "compute_loss", poisoned)
    c = tiny_config(patterns.root, tmp_path / "run")
    with pytest.raises(TrainingDiverged) as info:
        train(c)
    msg = str(info.value)
    assert "iteration 23" in msg and "learning rate 0.005" in msg and "lambda" in msg
    assert "checkpoint.pt holds the finite weights of iteration 20" in msg and "good checkpoint" not in msg
    assert "repeats the divergence" in msg and "--no-resume" in msg
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 20
    assert all(torch.isfinite(t).all() for t in state["backbone"].values())


def test_absurd_learning_rate_diverges(patterns, tmp_path: Path) -> None:
    c = tiny_config(patterns.root, tmp_path / "run", optim__lr=1e30, head__name="softmax", head__kwargs="{}")
    with pytest.raises(TrainingDiverged, match="non-finite loss at iteration"):
        train(c)


# --- model cache --------------------------------------------------------------------------------------

def test_cache_trains_once_even_when_two_callers_race(patterns, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real_train = cache_module.train
    monkeypatch.setattr(cache_module, "train", lambda cfg: calls.append(cfg) or real_train(cfg))
    c = tiny_config(patterns.root, tmp_path / "ignored", optim__iterations=20)
    results: list = [None, None]

    def worker(i: int) -> None:
        results[i] = train_cached(c, tmp_path / "cache")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    again = train_cached(c, tmp_path / "cache")
    assert len(calls) == 1
    for r in (*results, again):
        assert _states_equal(r.backbone, results[0].backbone) and not r.backbone.training
        assert len(r.metrics) == 4
    train_cached(c.replace("optim.lr=0.01"), tmp_path / "cache")
    assert len(calls) == 2


CACHED_TRAIN = """
import sys
import sphereface_lib
from sphereface_lib.training import TrainConfig, train_cached
assert sphereface_lib.__file__.startswith(sys.argv[3]), sphereface_lib.__file__  # the copy, not the project
result = train_cached(TrainConfig.from_yaml(sys.argv[1]), sys.argv[2])
print(result.checkpoint.parent.name)
"""


@pytest.mark.slow
def test_the_cache_retrains_after_an_edit_to_the_library_source(patterns, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "copy"
    shutil.copytree(Path(cache_module.__file__).resolve().parents[1], copy / "sphereface_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config(patterns.root, tmp_path / "ignored", optim__iterations=2).to_yaml())
    cache = tmp_path / "cache"

    def entry() -> str:
        done = subprocess.run([sys.executable, "-c", CACHED_TRAIN, str(config), str(cache), str(copy)], cwd=copy,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    first = entry()
    assert entry() == first  # unchanged source: the same entry, loaded
    with open(copy / "sphereface_lib" / "training" / "trainer.py", "a") as f:
        f.write("# an edit that could change results\n")
    second = entry()
    assert second != first
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == sorted([first, second])
    assert (cache / second / "done.json").is_file()


# --- command line -------------------------------------------------------------------------------------

def test_cli_reports_bad_configs_clearly(tmp_path: Path, capsys) -> None:
    assert run_command(cli_main, ["--config", "configs/tiny_cpu.yaml", "optim.learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tiny_cpu.yaml" in err and "'optim.learning_rate'" in err
    assert run_command(cli_main, ["--config", str(tmp_path / "missing.yaml")]) == 2


def test_package_level_train_still_trains_after_the_cli_module_is_imported(patterns, tmp_path: Path) -> None:
    import sphereface_lib
    import sphereface_lib.train  # noqa: F401  (rebinds the package attribute to the module)

    result = sphereface_lib.train(tiny_config(patterns.root, tmp_path / "run", optim__iterations=2))
    assert result.iteration == 2
