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
from test_training_data import finished_run, tiny_config

PROJECT = Path(__file__).resolve().parents[1]
RESUME_FIX = "--no-resume"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pack, its config file, one finished 2-iteration run and doctored copies of the pack."""
    made = finished_run(tmp_path_factory.mktemp("bad_inputs"))
    root, data, config, real = made["root"], made["data"], made["config"], made["real"]
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


# --- the evaluate command line: degenerate features and mistaken inputs ----------------------------------------

PEOPLE = [f"P{i}" for i in range(8)]
PAIRS_TXT = ("2\t2\n"  # 2 folds of 2 matched + 2 mismatched pairs
             "P0\t1\t2\nP1\t1\t2\nP2\t1\tP3\t1\nP4\t1\tP5\t1\n"
             "P2\t1\t2\nP3\t1\t2\nP0\t1\tP6\t1\nP1\t1\tP7\t1\n")
LFW_KEYS = [f"{p}/{n:04d}" for p in PEOPLE for n in (1, 2)]


def _lfw_world(root: Path, feats: np.ndarray | None = None) -> list[str]:
    """pairs.txt and f.npz (random 32-d features of every key) in ``root``; the argv of a plain LFW run."""
    (root / "pairs.txt").write_text(PAIRS_TXT)
    if feats is None:
        feats = np.random.default_rng(0).standard_normal((len(LFW_KEYS), 32)).astype(np.float32)
    np.savez(root / "f.npz", features=feats, keys=np.array(LFW_KEYS))
    return ["lfw", "--features", str(root / "f.npz"), "--pairs", str(root / "pairs.txt"), "--out",
            str(root / "r.json")]


def _megaface_world(root: Path, probes: np.ndarray | None = None, distractors: np.ndarray | None = None) -> list[str]:
    """p.npz (4 identities x 3 images, 32-d) and d.npy (40 distractors) in ``root``; the argv of a plain run."""
    rng = np.random.default_rng(1)
    keys = [f"id{i}/{j}.jpg" for i in range(4) for j in range(3)]
    probes = rng.standard_normal((12, 32)).astype(np.float32) if probes is None else probes
    distractors = rng.standard_normal((40, 32)).astype(np.float32) if distractors is None else distractors
    np.savez(root / "p.npz", features=probes, keys=np.array(keys))
    np.save(root / "d.npy", distractors)
    return ["megaface", "--probes", str(root / "p.npz"), "--distractors", str(root / "d.npy"), "--out",
            str(root / "m.json")]


def _zeroed(rows: list[int], n: int = len(LFW_KEYS)) -> np.ndarray:
    feats = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    feats[rows] = 0
    return feats


class _Constant(torch.nn.Module):
    """A 'model' whose features are constant (zero: a broken or untrained model) or read one pixel."""

    def __init__(self, zero: bool) -> None:
        super().__init__()
        self.zero = zero
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)[:, :, 0, 0] + 1.0
        return f * 0.0 if self.zero else f


def _export(path: Path, zero: bool) -> Path:
    x = torch.zeros(2, 3, 4, 4)
    torch.export.save(torch.export.export(_Constant(zero), (x,), dynamic_shapes=({0: torch.export.Dim("b")},)), path)
    return path


def _pack(root: Path, channels: int) -> Path:
    from sphereface_lib.data import PackedWriter

    images = np.random.default_rng(2).integers(0, 255, (len(LFW_KEYS), 4, 4, channels), dtype=np.uint8)
    with PackedWriter(root / "pack", height=4, width=4, channels=channels, source="test") as writer:
        writer.add(images, [PEOPLE.index(k.split("/")[0]) for k in LFW_KEYS], LFW_KEYS)
    return root / "pack"


def _model_run(root: Path, channels: int, zero: bool) -> list[str]:
    (root / "pairs.txt").write_text(PAIRS_TXT)
    return ["lfw", "--images", str(_pack(root, channels)), "--model", str(_export(root / "m.pt2", zero)),
            "--pairs", str(root / "pairs.txt"), "--out", str(root / "r.json")]


def _replace(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def _zero_byte_npy(root: Path) -> list[str]:
    argv = _lfw_world(root)
    (root / "f.npy").write_bytes(b"")
    (root / "k.txt").write_text("\n".join(LFW_KEYS))
    return _replace(argv, "--features", str(root / "f.npy")) + ["--keys", str(root / "k.txt")]


def _keys_not_utf8(root: Path) -> list[str]:
    argv = _lfw_world(root)
    np.save(root / "f.npy", np.ones((len(LFW_KEYS), 4), np.float32))
    (root / "k.txt").write_bytes(("\n".join(LFW_KEYS[:3]) + "\nJos\xe9/0001\n").encode("latin-1"))
    return _replace(argv, "--features", str(root / "f.npy")) + ["--keys", str(root / "k.txt")]


def _random_pt2(root: Path) -> list[str]:
    argv = _model_run(root, 3, zero=False)
    (root / "m.pt2").write_bytes(np.random.default_rng(0).bytes(4096))
    return argv


def _out_is_a_folder(root: Path) -> list[str]:
    (root / "results").mkdir()
    return _replace(_lfw_world(root), "--out", str(root / "results"))


def _mismatched_one_person(root: Path) -> list[str]:
    argv = _lfw_world(root)
    (root / "pairs.txt").write_text(PAIRS_TXT.replace("P4\t1\tP5\t1", "P4\t1\tP4\t2"))
    return argv


def _pairs_naming_an_absent_image(root: Path) -> list[str]:
    argv = _lfw_world(root)
    (root / "pairs.txt").write_text(PAIRS_TXT.replace("P7\t1", "P9\t1"))
    return argv


def _zero_byte_distractors(root: Path) -> list[str]:
    (root / "empty.npy").write_bytes(b"")
    return _replace(_megaface_world(root), "--distractors", str(root / "empty.npy"))


EVALUATE_CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("lfw_all_zero_features", lambda r: _lfw_world(r, np.zeros((len(LFW_KEYS), 32), np.float32)),
     ["--features", "f.npz: 12 feature rows needed here are all zero", "'P0/0001'", "check the model"]),
    ("lfw_one_zero_row", lambda r: _lfw_world(r, _zeroed([5])),
     ["f.npz: 1 feature row needed here is all zero ('P2/0002')"]),
    ("lfw_model_outputs_zeros", lambda r: _model_run(r, 3, zero=True),
     ["--model", "m.pt2: its features of 12 images of --images", "are all zero", "'P0/0001'"]),
    ("lfw_one_channel_pack_three_channel_model", lambda r: _model_run(r, 1, zero=False),
     ["--model", "cannot compute features of --images", "1-channel 4x4 crops", "give a model made for these crops"]),
    ("lfw_random_bytes_pt2", _random_pt2, ["--model", "m.pt2: not a torch.export .pt2 file", "torch.export.save"]),
    ("lfw_zero_byte_npy", _zero_byte_npy, ["--features", "f.npy is empty (0 bytes)"]),
    ("lfw_keys_not_utf8", _keys_not_utf8, ["--keys", "k.txt, line 4: not UTF-8 text (byte 0xe9)", "save it as UTF-8"]),
    ("lfw_out_is_a_folder", _out_is_a_folder, ["--out", "results is a folder", "give a file name"]),
    ("lfw_out_folder_missing", lambda r: _replace(_lfw_world(r), "--out", str(r / "nowhere" / "r.json")),
     ["--out", "the folder", "nowhere does not exist"]),
    ("lfw_pairs_is_a_folder", lambda r: _replace(_lfw_world(r), "--pairs", str(r)),
     ["--pairs", "is a folder, not a protocol file"]),
    ("lfw_mismatched_pair_one_person", _mismatched_one_person,
     ["pairs.txt, line 5: a mismatched pair names one person twice ('P4')"]),
    ("lfw_missing_images_name_the_option", _pairs_naming_an_absent_image,
     ["--features", "lacks 1 of the 12 keys", "'P9/0001'", "--missing skip"]),
    ("megaface_all_zero_distractors", lambda r: _megaface_world(r, distractors=np.zeros((40, 32), np.float32)),
     ["--distractors", "d.npy: 40 feature rows needed here are all zero", "'0', '1'"]),
    ("megaface_one_zero_distractor", lambda r: _megaface_world(r, distractors=_zeroed([17], 40)),
     ["d.npy: 1 feature row needed here is all zero ('17')"]),
    ("megaface_one_zero_probe", lambda r: _megaface_world(r, probes=_zeroed([4], 12)),
     ["p.npz: 1 feature row needed here is all zero ('id1/1.jpg')"]),
    ("megaface_16d_distractors_32d_probes",
     lambda r: _megaface_world(r, distractors=np.ones((40, 16), np.float32)),
     ["d.npy holds 16-d features", "p.npz 32-d ones", "from one model"]),
    ("megaface_zero_distractors", lambda r: _megaface_world(r, distractors=np.zeros((0, 32), np.float32)),
     ["--distractors", "d.npy holds no features (shape (0, 32))"]),
    ("megaface_zero_byte_distractors", _zero_byte_distractors, ["--distractors", "empty.npy is empty (0 bytes)"]),
]
if not torch.cuda.is_available():
    EVALUATE_CASES.append(("lfw_device_cuda_without_cuda",
                           lambda r: _model_run(r, 3, zero=False) + ["--device", "cuda"],
                           ["--device cuda: CUDA is not available on this machine", "--device cpu"]))


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_an_evaluate_mistake_is_one_error_line_and_exit_2(case, tmp_path: Path, capsys) -> None:
    from sphereface_lib.evaluate import main as evaluate_main

    name, prep, words = case
    argv = prep(tmp_path)
    capsys.readouterr()
    assert run_command(evaluate_main, argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + out, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("prep,words", [
    (_random_pt2, ["--model", "not a torch.export .pt2 file"]),
    (_mismatched_one_person, ["pairs.txt, line 5", "names one person twice"]),
], ids=["random_pt2", "mismatched_one_person"])
def test_the_real_evaluate_command_prints_one_line_and_no_traceback(tmp_path: Path, prep, words) -> None:
    done = subprocess.run([sys.executable, "-m", "sphereface_lib.evaluate", *prep(tmp_path)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), done.stderr


def test_a_megaface_list_whose_id_is_not_a_list_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    (tmp_path / "list.json").write_text(json.dumps({"path": ["a/1.jpg"], "id": 5}))
    done = subprocess.run([sys.executable, "-m", "data_prep.megaface", "--set", "probe", "--root",
                           str(tmp_path / "faces"), "--list", str(tmp_path / "list.json"), "--out",
                           str(tmp_path / "out")], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --list ") and '"id" must be a list' in lines[0], done.stderr


def test_a_zip_that_is_not_an_exported_program_is_one_error_line(tmp_path: Path, capsys) -> None:
    from sphereface_lib.evaluate import main as evaluate_main

    argv = _model_run(tmp_path, 3, zero=False)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "m.pt2")  # a zip archive, but not torch.export's
    assert run_command(evaluate_main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.pt2: a zip archive that torch.export cannot read" in err, err
