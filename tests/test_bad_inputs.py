"""A corpus of a user's mistakes against the training command line and the data readers, built here (nothing from
../shared): each must give one ``error:`` line that names the file, key or parameter and the fix, exit status 2,
before any training starts. Most cases run ``run_command(main, argv)`` in this process (what ``python -m
sphereface_lib.train`` runs); a few go through a real subprocess to hold the entry point to the same rule."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from sphereface_lib.backbones import create_backbone
from sphereface_lib.data import PackedDataset, PackedFormatError, ProtocolFormatError, read_lfw_pairs
from sphereface_lib.errors import run_command
from sphereface_lib.train import main
from sphereface_lib.training import RunFileError, train_cached
from test_training_data import make_patterns, tiny_config

PROJECT = Path(__file__).resolve().parents[1]
RESUME_FIX = "--no-resume"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pack, its config file, one finished 2-iteration run and doctored copies of the pack."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = make_patterns(root / "data").root
    config = root / "base.yaml"
    config.write_text(tiny_config(data, root / "unused", optim__iterations=2).to_yaml())
    real = root / "real"
    assert run_command(main, ["--config", str(config), f"run.out_dir={real}"]) == 0
    few_names = root / "few_names"
    shutil.copytree(data, few_names)
    (few_names / "identities.txt").write_text("".join(f"p{i}\n" for i in range(5)))
    bad_labels = root / "bad_labels"
    shutil.copytree(data, bad_labels)
    labels = np.load(bad_labels / "labels.npy")
    labels[7] = 10  # the pack has identities 0..9
    np.save(bad_labels / "labels.npy", labels)
    not_pack = root / "not_pack"
    not_pack.mkdir()
    return {"root": root, "data": data, "config": config, "real": real, "few_names": few_names,
            "bad_labels": bad_labels, "not_pack": not_pack}


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _checkpoint(content: Callable[[dict[str, Path]], bytes]) -> Callable[[Path, dict[str, Path]], None]:
    def prep(out: Path, w: dict[str, Path]) -> None:
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(content(w))
    return prep


def _real_bytes(w: dict[str, Path]) -> bytes:
    return (w["real"] / "checkpoint.pt").read_bytes()


def _copy_real(edit: Callable[[str], str]) -> Callable[[Path, dict[str, Path]], None]:
    def prep(out: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w["real"], out)
        (out / "metrics.jsonl").write_text(edit((out / "metrics.jsonl").read_text()))
    return prep


def _non_utf8_config(out: Path, w: dict[str, Path]) -> None:
    (w["root"] / "latin1.yaml").write_bytes(w["config"].read_bytes() + "# caf\xe9\n".encode("latin-1"))


def _text_config(name: str, text: str) -> Callable[[Path, dict[str, Path]], None]:
    def prep(out: Path, w: dict[str, Path]) -> None:
        (w["root"] / name).write_text(text)
    return prep


# (case id, extra argv, preparation of run.out_dir, config file name (None: the base), words the message must hold)
CASES: list[tuple[str, list[str], Callable | None, str | None, list[str]]] = [
    ("bad_m", ["head.kwargs.m=5"], None, None, ["head 'asoftmax'", "m must be an integer", "got 5"]),
    ("unknown_backbone", ["model.backbone=resnet50"], None, None, ["model.backbone 'resnet50' is unknown", "sphereface20"]),
    ("unknown_head", ["head.name=magface"], None, None, ["head.name 'magface' is unknown", "asoftmax"]),
    ("unknown_sampler", ["data.sampler=balanced"], None, None, ["data.sampler 'balanced' is unknown", "pk, random"]),
    ("negative_lambda_base", ["head.kwargs.lambda_schedule.base=-1"], None, None,
     ["head.kwargs.lambda_schedule", "base", ">= 0"]),
    ("unknown_sampler_kwargs", ["data.sampler_kwargs={{k: 4}}"], None, None, ["data.sampler_kwargs", "no argument 'k'"]),
    ("pk_batch_not_multiple_of_k", ["data.sampler=pk", "data.sampler_kwargs={{k: 3}}"], None, None,
     ["data.sampler 'pk'", "multiple of k (3)"]),
    ("head_kwargs_unknown", ["head.kwargs.s=30"], None, None, ["head 'asoftmax'", "'s'"]),
    ("feat_dim_zero", ["model.feat_dim=0"], None, None, ["model.feat_dim must be >= 1, got 0", "base.yaml"]),
    ("feat_dim_negative", ["model.feat_dim=-3"], None, None, ["model.feat_dim must be >= 1, got -3"]),
    ("width_nan", ["model.width=.nan"], None, None, ["model.width must be a finite number, got nan"]),
    ("lr_inf", ["optim.lr=.inf"], None, None, ["optim.lr must be a finite number, got inf"]),
    ("lr_negative", ["optim.lr=-0.1"], None, None, ["optim.lr must be > 0"]),
    ("iterations_not_int", ["optim.iterations=abc"], None, None, ["optim.iterations must be int", "'abc'"]),
    ("unknown_key", ["optim.learning_rate=0.1"], None, None, ["unknown key 'optim.learning_rate'", "lr"]),
    ("override_syntax", ["optim.lr"], None, None, ["override 'optim.lr' must look like key=value"]),
    ("data_missing", ["data.path={root}/nowhere"], None, None, ["nowhere is not a packed dataset", "no such folder"]),
    ("data_not_a_pack", ["data.path={not_pack}"], None, None, ["not_pack is not a packed dataset", "manifest.json"]),
    ("data_is_a_file", ["data.path={config}"], None, None, ["base.yaml is not a packed dataset"]),
    ("synthetic_unknown_size", ["data.path=synthetic:huge"], None, None, ["unknown synthetic size 'huge'", "smoke"]),
    ("pack_too_few_names", ["data.path={few_names}"], None, None,
     ["few_names/identities.txt: 5 names for the manifest's 10 identities", "pack it again"]),
    ("pack_label_out_of_range", ["data.path={bad_labels}"], None, None,
     ["bad_labels/labels.npy: label 10 at row 7 lies outside [0, 10)", "pack it again"]),
    ("out_dir_is_a_file", [], lambda out, w: out.write_text("x"), None, ["run.out_dir", "is a file, not a folder"]),
    ("device_unavailable", ["run.device=cuda:0"], None, None, ["run.device is 'cuda:0'", "run.device=cpu"])
    if not torch.cuda.is_available() else ("device_bad", ["run.device=tpu"], None, None, ["run.device", "'tpu'"]),
    ("amp_unknown", ["run.amp=fp8"], None, None, ["run.amp must be 'auto', 'bf16' or 'none'"]),
    ("config_not_utf8", [], _non_utf8_config, "latin1.yaml", ["latin1.yaml: not UTF-8 text", "save it as UTF-8"]),
    ("config_not_yaml", [], _text_config("broken.yaml", "optim: [1, 2\n"), "broken.yaml",
     ["broken.yaml, line 2, column 1: not valid YAML (expected ',' or ']'"]),
    ("config_a_list", [], _text_config("list.yaml", "- 1\n- 2\n"), "list.yaml",
     ["list.yaml: the top level must be a mapping"]),
    ("config_missing", [], None, "absent.yaml", ["config file", "absent.yaml does not exist"]),
    ("checkpoint_truncated", [], _checkpoint(lambda w: _real_bytes(w)[:len(_real_bytes(w)) // 2]), None,
     ["checkpoint.pt is not a readable checkpoint", RESUME_FIX, "another run.out_dir"]),
    ("checkpoint_zero_bytes", [], _checkpoint(lambda w: b""), None,
     ["checkpoint.pt is not a readable checkpoint (EOFError)", RESUME_FIX]),
    ("checkpoint_random_bytes", [], _checkpoint(lambda w: np.random.default_rng(0).bytes(4096)), None,
     ["checkpoint.pt is not a readable checkpoint", RESUME_FIX]),
    ("checkpoint_a_list", [], _checkpoint(lambda w: _torch_bytes([1, 2, 3])), None,
     ["checkpoint.pt holds a list, not a checkpoint of this library", RESUME_FIX]),
    ("checkpoint_foreign_format", [], _checkpoint(lambda w: _torch_bytes({"state_dict": {}, "epoch": 3})), None,
     ["checkpoint.pt: not a checkpoint this library reads", "missing format", RESUME_FIX]),
    ("checkpoint_other_config", ["optim.lr=0.3"], _checkpoint(_real_bytes), None,
     ["checkpoint.pt was written by a different configuration", RESUME_FIX]),
    ("metrics_corrupt_line", ["optim.iterations=4"], _copy_real(lambda t: "garbage\n" + t), None,
     ["metrics.jsonl, line 1: not a metrics row", RESUME_FIX]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_one_error_line_and_exit_2_before_training(case, world, capsys) -> None:
    name, extra, prep, config_name, words = case
    out = world["root"] / f"run_{name}"
    if prep is not None:
        prep(out, world)
    config = world["root"] / config_name if config_name else world["config"]
    argv = ["--config", str(config), f"run.out_dir={out}", *(a.format(**world) for a in extra)]
    csv_before = (out / "metrics.csv").read_bytes() if (out / "metrics.csv").is_file() else None
    capsys.readouterr()
    assert run_command(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    csv_after = (out / "metrics.csv").read_bytes() if (out / "metrics.csv").is_file() else None
    assert csv_after == csv_before, "training started before the mistake was found"


def test_a_torn_last_metrics_row_is_dropped_on_resume_with_a_note(world, caplog) -> None:
    out = world["root"] / "run_torn"
    _copy_real(lambda t: t + '{"iteration": 3, "lo')(out, world)
    with caplog.at_level(logging.WARNING):
        assert run_command(main, ["--config", str(world["config"]), f"run.out_dir={out}", "optim.iterations=4"]) == 0
    assert "metrics.jsonl, line 2: dropped a torn last row" in caplog.text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4]  # the torn row is gone, the resumed run logged 4
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + the same two rows


@pytest.mark.parametrize("argv_extra,words", [
    (["head.kwargs.m=5"], ["m must be an integer"]),
    (["data.path=/nonexistent/pack"], ["/nonexistent/pack is not a packed dataset"]),
], ids=["bad_m", "data_missing"])
def test_the_real_command_line_prints_the_same_single_line(world, argv_extra, words) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sphereface_lib.train", "--config", str(world["config"]),
         f"run.out_dir={world['root'] / 'run_subprocess'}", *argv_extra],
        cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(w in last for w in words), done.stderr


# --- the library's own readers and factories ---------------------------------------------------------

@pytest.mark.parametrize("kwargs,words", [
    ({"feat_dim": 0}, "feat_dim must be a positive integer, got 0"),
    ({"feat_dim": -3}, "feat_dim must be a positive integer, got -3"),
    ({"width": float("nan")}, "width must be a positive finite number, got nan"),
    ({"width": float("inf")}, "width must be a positive finite number, got inf"),
])
def test_create_backbone_names_a_bad_argument(kwargs, words) -> None:
    with pytest.raises(ValueError, match=words):
        create_backbone("sphereface4", input_size=(28, 24), **kwargs)


@pytest.mark.parametrize("text,words", [
    ("-1\t-1\n", r"pairs\.txt, line 1: expected the number of folds >= 1, got -1"),
    ("2\t0\n", r"pairs\.txt, line 1: expected the number of pairs of each kind per fold >= 1, got 0"),
    ("1\nAl\t1\t2\nAl\t1\tBo\t0\n", r"pairs\.txt, line 3: expected an image number >= 1, got 0"),
])
def test_pairs_headers_and_numbers_out_of_range_are_named(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(ProtocolFormatError, match=words):
        read_lfw_pairs(tmp_path / "pairs.txt")


def test_a_pairs_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_bytes(b"1\nAl\t1\t2\nJos\xe9\t1\tBo\t1\n")
    with pytest.raises(ProtocolFormatError, match=r"pairs\.txt, line 3: not UTF-8 text \(byte 0xe9\)"):
        read_lfw_pairs(tmp_path / "pairs.txt")


def test_packed_dataset_checks_names_and_labels_on_open(world) -> None:
    with pytest.raises(PackedFormatError, match="5 names for the manifest's 10 identities"):
        PackedDataset(world["few_names"])
    with pytest.raises(PackedFormatError, match=r"label 10 at row 7 lies outside \[0, 10\)"):
        PackedDataset(world["bad_labels"])


def test_the_cache_sets_an_unreadable_entry_aside_and_retrains_it(world, tmp_path: Path, caplog) -> None:
    config = tiny_config(world["data"], tmp_path / "unused", optim__iterations=2)
    first = train_cached(config, tmp_path / "cache")
    entry = first.checkpoint.parent
    (entry / "checkpoint.pt").write_bytes((entry / "checkpoint.pt").read_bytes()[:100])  # truncated after done.json
    with pytest.raises(RunFileError):
        from sphereface_lib.training import load_checkpoint
        load_checkpoint(entry)
    with caplog.at_level(logging.WARNING):
        again = train_cached(config, tmp_path / "cache")
    assert (entry.parent / f"{entry.name}.corrupt-1" / "checkpoint.pt").is_file()
    assert f"{entry} cannot be read" in caplog.text and "corrupt-1" in caplog.text
    for a, b in zip(first.backbone.state_dict().values(), again.backbone.state_dict().values()):
        assert torch.equal(a, b)
