"""Issue 27's training and data mistakes: each is one ``error:`` line naming the file or option and the fix, exit
status 2, no traceback, before training starts. The packs are built here (nothing from ../shared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from PIL import Image

from sphereface_lib.data import sources
from sphereface_lib.data.packed import write_shards
from sphereface_lib.errors import UserError, run_command
from sphereface_lib.train import main
from sphereface_lib.training import train
from test_training_data import finished_run, make_patterns, tiny_config

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny 1-channel pack, its config file and one finished 2-iteration run on it."""
    return finished_run(tmp_path_factory.mktemp("bad_training"))


def _one_error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert run_command(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _doctored_pack(world: dict[str, Path], name: str) -> Path:
    pack = world["root"] / name
    shutil.rmtree(pack, ignore_errors=True)
    shutil.copytree(world["data"], pack)
    return pack


@pytest.mark.parametrize("field,value,words", [
    ("height", "28", "manifest.json: height is '28' (str), expected an integer >= 1"),
    ("channels", 2, "manifest.json: channels is 2, expected 1 or 3"),
    ("num_images", 2.5, "manifest.json: num_images is 2.5 (float), expected an integer >= 0"),
    ("extra", [], "manifest.json: extra is [], expected a mapping"),
])
def test_a_manifest_field_of_the_wrong_type_is_named(world, capsys, field, value, words) -> None:
    pack = _doctored_pack(world, f"manifest_{field}")
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest[field] = value
    (pack / "manifest.json").write_text(json.dumps(manifest))
    err = _one_error_line(["--config", str(world["config"]), f"data.path={pack}",
                           f"run.out_dir={world['root'] / ('run_' + field)}"], capsys)
    assert words in err and str(pack) in err and "pack it again" in err, err
    assert not (world["root"] / ("run_" + field) / "metrics.csv").exists()


@pytest.mark.parametrize("name,words", [
    ("labels.npy", "labels.npy: unreadable labels"),
    ("images.u8", "images.u8: 0 bytes, the manifest implies 13440"),
])
def test_an_empty_pack_file_is_named(world, capsys, name, words) -> None:
    pack = _doctored_pack(world, f"empty_{name}")
    (pack / name).write_bytes(b"")
    err = _one_error_line(["--config", str(world["config"]), f"data.path={pack}",
                           f"run.out_dir={world['root'] / 'run_empty'}"], capsys)
    assert words in err and "pack it again" in err, err


def test_resuming_a_checkpoint_with_nan_weights_says_so_and_how_to_go_on(world, capsys) -> None:
    run = world["root"] / "run_nan"
    shutil.copytree(world["real"], run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["head"]["weight"] = torch.full_like(state["head"]["weight"], float("nan"))
    torch.save(state, run / "checkpoint.pt")
    err = _one_error_line(["--config", str(world["config"]), f"run.out_dir={run}", "optim.iterations=4"], capsys)
    assert f"{run / 'checkpoint.pt'} holds non-finite weights (NaN or infinity in head.weight)" in err, err
    assert "earlier copy" in err and "--no-resume" in err and "diverged" not in err, err


def test_resuming_on_a_pack_of_another_channel_count_names_both_shapes(world, capsys) -> None:
    """The checkpoint's model takes 1-channel images; the pack at the same data.path now holds 3 channels."""
    root = world["root"] / "rgb_case"
    data = make_patterns(root / "data").root
    run = root / "run"
    config = tiny_config(data, run, optim__iterations=2)
    (root / "c.yaml").write_text(config.to_yaml())
    assert run_command(main, ["--config", str(root / "c.yaml")]) == 0
    shutil.rmtree(data)
    make_patterns(data, channels=3)
    err = _one_error_line(["--config", str(root / "c.yaml"), "optim.iterations=4"], capsys)
    assert f"{run / 'checkpoint.pt'} was trained on 28x24x1 images of 10 identities" in err, err
    assert f"data.path {data} now holds 28x24x3 images of 10 identities" in err and "--no-resume" in err, err


def test_a_shard_of_another_pack_is_named_before_training(tmp_path: Path) -> None:
    whole = make_patterns(tmp_path / "whole")
    other = make_patterns(tmp_path / "other", identities=12, seed=1)
    root = write_shards(whole, tmp_path / "shards", 2)
    write_shards(other, tmp_path / "other_shards", 2)
    shutil.rmtree(root / "shard-1-of-2")
    shutil.copytree(tmp_path / "other_shards" / "shard-1-of-2", root / "shard-1-of-2")
    assert sources.open_packed(root, 0, 2).num_identities == 10
    with pytest.raises(UserError, match=r"shard-1-of-2 is not shard 1 of 2 of the set .*shards \(written from "
                                        r".*whole.*a shard of another pack or split was copied in"):
        sources.open_packed(root, 1, 2)


def test_a_shard_count_unlike_the_process_count_stops_before_the_process_group(tmp_path: Path, monkeypatch) -> None:
    """Checked from WORLD_SIZE before init_process_group: no gloo (or NCCL) group is ever started."""
    root = write_shards(make_patterns(tmp_path / "whole"), tmp_path / "shards", 3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("the process group was started"))
    with pytest.raises(UserError, match="holds 3 shards, one per process, but the run has 2 processes; start 3 "
                                        "processes with torchrun or write 2 shards with write_shards"):
        train(tiny_config(root, tmp_path / "run"))


def test_grid_of_a_missing_pack_is_one_error_line(tmp_path: Path) -> None:
    for pack, words in ((tmp_path / "nowhere", "--pack"), (tmp_path, "is not a packed dataset")):
        done = subprocess.run([sys.executable, "-m", "data_prep.grid", "--pack", str(pack), "--out",
                               str(tmp_path / "grid.png")], cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(pack) in lines[0], done.stderr
        assert words in lines[0]
    assert not (tmp_path / "grid.png").exists()


def test_grid_writes_its_png_atomically(tmp_path: Path) -> None:
    from data_prep.grid import main as grid_main
    pack = make_patterns(tmp_path / "data")
    out = grid_main(["--pack", str(pack.root), "--out", str(tmp_path / "g.png"), "--rows", "2", "--per-row", "3"])
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "g.png"]
    with Image.open(out) as image:
        assert image.size == (3 * 26, 2 * 30)


@pytest.mark.slow
def test_torchrun_on_a_shard_count_unlike_its_processes_prints_the_line_and_no_rank_traceback(tmp_path: Path) -> None:
    """Each rank prints the one line and exits 2 before any gloo group exists; what follows is torchrun's own
    summary of failed children (its ChildFailedError), the only traceback left."""
    root = write_shards(make_patterns(tmp_path / "whole"), tmp_path / "shards", 3)
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config(root, tmp_path / "run").to_yaml())
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "sphereface_lib.train", "--config", str(config)], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors and all("holds 3 shards, one per process, but the run has 2 processes" in e for e in errors), out
    assert "gloo" not in out.lower() and out.count("Traceback") <= 1, out
    assert "Traceback" not in out or "ChildFailedError" in out.split("Traceback", 1)[1], out


def test_profile_real_on_a_plain_pack_or_without_megaface_parts_points_to_data_prep_openset(world, tmp_path) -> None:
    from sphereface_lib.companion.experiments import ExperimentError, open_benchmark

    with pytest.raises(ExperimentError, match=r"is one packed dataset, not a real-data folder .*python -m "
                                              r"data_prep\.openset --src <folder of identities> --out <new folder>"):
        open_benchmark(str(world["data"]), tmp_path / "cache", parts=("train", "lfw"))
    folder = tmp_path / "real"
    shutil.copytree(world["data"], folder / "train")
    with pytest.raises(ExperimentError, match=r"megaface_probe/ is missing or not a packed dataset; from a "
                                              r"folder-per-identity set, .*data_prep\.openset .*--megaface-probe 6"):
        open_benchmark(str(folder), tmp_path / "cache", parts=("train", "megaface_probe"))
