"""Faults around a run folder: SIGKILL inside a checkpoint write (the run resumes bit for bit and the torn
temporary file is removed), two writers on one run folder (the second is refused, naming the first), a full
disk while writing a checkpoint (one error line, the previous checkpoint intact, no temporary file left), also
when torch.save hides the ENOSPC in a RuntimeError, while packing (nothing partial left), and while the notebook
runner writes a report (an executed notebook, the index, the summary, the README: one error line each, nothing
partial left).
A SIGKILL between checkpoints is tests/test_training_processes.py's."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sphereface_lib.training import TrainConfig, load_checkpoint
from test_training import same_state
from test_training_data import make_patterns, tiny_config

PROJECT = Path(__file__).resolve().parents[1]

# Runs the training command line, but SIGKILLs itself half way through writing the checkpoint of iteration 20.
KILL_IN_WRITE = """
import os, signal, sys, torch
from sphereface_lib.training import trainer
real_save = torch.save
def save(obj, f):
    if isinstance(obj, dict) and obj.get("iteration") == 20:
        f.write(b"PK" + bytes(50_000))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f)
trainer.torch.save = save
from sphereface_lib.errors import run_command
from sphereface_lib.train import main
sys.exit(run_command(main, sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}


def _cli(config: TrainConfig, path: Path, *extra: str) -> list[str]:
    path.write_text(config.to_yaml())
    return [sys.executable, "-m", "sphereface_lib.train", "--config", str(path), *extra]


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def _temporaries(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_resumes_bit_for_bit_and_leaves_no_temporary(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "data").root

    def config(name: str) -> TrainConfig:
        return tiny_config(data, tmp_path / name, optim__iterations=30, run__checkpoint_every=10)

    subprocess.run(_cli(config("reference"), tmp_path / "reference.yaml"), env=_env(), check=True,
                   capture_output=True, timeout=300)
    killed = _cli(config("killed"), tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, *killed[3:]], env=_env(), capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    run = tmp_path / "killed"
    assert _state(run)["iteration"] == 10  # the checkpoint of iteration 10 survived the torn write of 20
    assert len(_temporaries(run)) == 1  # the torn write's temporary file

    resumed = subprocess.run(killed, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed" in resumed.stderr and ".checkpoint.pt." in resumed.stderr
    assert _temporaries(run) == []
    ref, got = _state(tmp_path / "reference"), _state(run)
    assert got["iteration"] == ref["iteration"] == 30
    for part in ("backbone", "head"):
        assert same_state(ref[part], got[part]), f"{part} differs after resume"
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731 (img_per_s last)
    assert strip((run / "metrics.csv").read_text()) == strip((tmp_path / "reference" / "metrics.csv").read_text())


@pytest.mark.slow
def test_a_second_writer_on_one_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "data").root
    run = tmp_path / "run"
    first = subprocess.Popen(_cli(tiny_config(data, run, optim__iterations=100_000), tmp_path / "a.yaml"),
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended early"
        # the same run, shorter: without a lock it would resume from the first's checkpoint and exit 0
        second = subprocess.run(_cli(tiny_config(data, run, optim__iterations=5), tmp_path / "b.yaml"), env=_env(),
                                capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert second.returncode == 2, second.stderr[-2000:]
    err = second.stderr.strip().splitlines()[-1]
    assert err.startswith("error: run.out_dir ") and f"in use by process {first.pid} on host " in err, err
    assert "choose another run.out_dir" in err
    # the lock dies with its holder: a run started after the SIGKILL takes the folder
    third = subprocess.run(_cli(tiny_config(data, run, optim__iterations=100_000), tmp_path / "a.yaml",
                                "optim.iterations=5"), env=_env(), capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root on Linux to mount a small tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_during_a_checkpoint_write_is_one_error_line_with_the_old_checkpoint_intact(
        tmp_path: Path, small_disk: Path) -> None:
    data = make_patterns(tmp_path / "data").root
    run = small_disk / "run"
    config = tiny_config(data, run, optim__iterations=10, run__checkpoint_every=10)
    first = subprocess.run(_cli(config, tmp_path / "c.yaml"), env=_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    size = (run / "checkpoint.pt").stat().st_size
    before = (run / "checkpoint.pt").read_bytes()
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(bytes(max(0, free - size // 2)))  # room for half a checkpoint

    second = subprocess.run(_cli(config, tmp_path / "c.yaml", "optim.iterations=20"), env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    err = second.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot write {run / 'checkpoint.pt'}: No space left on device"), err
    assert "previous version of the file is intact" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(run).iteration == 10
    assert _temporaries(run) == []


def test_a_full_disk_during_a_metrics_append_leaves_whole_rows_in_both_files(small_disk: Path) -> None:
    from sphereface_lib.errors import OutputWriteError
    from sphereface_lib.training.trainer import MetricsLog

    log = MetricsLog(small_disk)
    log.restart([{"iteration": 0, "loss": 2.0}])
    (small_disk / "filler").write_bytes(bytes(shutil.disk_usage(small_disk).free))
    with pytest.raises(OutputWriteError, match=r"cannot write .*metrics\.csv: No space left on device"):
        log.append({"iteration": 1, "loss": 1.0, "note": "x" * 20_000})  # a new column: the csv is rewritten
    with pytest.raises(OutputWriteError, match=r"cannot write .*metrics\.(csv|jsonl): No space left on device"):
        for i in range(1, 10_000):  # until the last pages of the two files are full
            log.append({"iteration": i, "loss": 1.0 / 3})
    jsonl = log.jsonl.read_text().splitlines()
    csv_rows = log.csv.read_text().splitlines()
    assert len(jsonl) > 1 and [json.loads(line)["iteration"] for line in jsonl] == list(range(len(jsonl)))
    assert len(csv_rows) == len(jsonl) + 1 and csv_rows[-1].startswith(f"{len(jsonl) - 1},")
    assert _temporaries(small_disk) == []


class _FullAfter(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does (``OSError(ENOSPC)``)."""

    def __init__(self, f, room: int) -> None:
        super().__init__()
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(bytes(data[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)


def test_a_full_disk_inside_torch_save_is_one_error_line_naming_the_checkpoint_and_the_resume(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """torch.save turns the file's ENOSPC into a RuntimeError of inline_container.cc (the OSError only in its
    chain); the run still stops with one line, the old checkpoint intact and no temporary file, and resumes."""
    from sphereface_lib.errors import run_command
    from sphereface_lib.train import main

    data = make_patterns(tmp_path / "data").root
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config(data, run, optim__iterations=10, run__checkpoint_every=10).to_yaml())
    assert run_command(main, ["--config", str(config)]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        real_save(obj, _FullAfter(f, 2048) if isinstance(obj, dict) and obj.get("iteration") == 20 else f,
                  *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    capsys.readouterr()
    assert run_command(main, ["--config", str(config), "optim.iterations=20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write {run / 'checkpoint.pt'}: No space left on device") and "\n" not in err
    assert "inline_container" not in err and "resumes from the checkpoint of iteration 10" in err, err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert _temporaries(run) == []
    monkeypatch.setattr(torch, "save", real_save)
    assert run_command(main, ["--config", str(config), "optim.iterations=20"]) == 0
    assert load_checkpoint(run).iteration == 20


def test_a_full_disk_while_packing_leaves_no_partial_folder(tmp_path: Path, monkeypatch) -> None:
    from sphereface_lib.data.packed import PackedWriter
    from sphereface_lib.errors import OutputWriteError

    root = tmp_path / "pack"
    writer = PackedWriter(root, height=8, width=6, channels=1, source="test")
    writer.add(np.zeros((4, 8, 6, 1), np.uint8), [0, 0, 1, 1])
    writer._images = _FullAfter(writer._images, 100)
    with pytest.raises(OutputWriteError, match=r"disk full while writing .*pack\.partial \(No space left on device\); "
                                               r"nothing partial was left behind"):
        writer.add(np.zeros((4, 8, 6, 1), np.uint8), [2, 2, 3, 3])
    assert sorted(tmp_path.iterdir()) == []
    writer = PackedWriter(root, height=8, width=6, channels=1, source="test")  # close() writes the labels
    writer.add(np.zeros((2, 8, 6, 1), np.uint8), [0, 1])

    def full_disk(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OutputWriteError, match="disk full while writing"):
        writer.close()
    assert sorted(tmp_path.iterdir()) == []


def _fsync_full_for(name: str, monkeypatch) -> None:
    """Make the fsync of any file whose name contains ``name`` fail as on a full disk."""
    from sphereface_lib.data import packed

    real_fsync = packed.os.fsync

    def fsync(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(packed.os, "fsync", fsync)


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


REPORT_FIX = "the previous version is intact and nothing partial was left behind"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.parametrize("name", ["index.html", "summary.md", "README.md"])
def test_a_full_disk_while_writing_a_report_page_is_one_error_line(name: str, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    from sphereface_lib.companion import reproduce
    from sphereface_lib.errors import run_command
    from test_reproduce import make_layout

    layout = make_layout(tmp_path)
    monkeypatch.setattr(reproduce, "check_kernel", lambda _: None)
    readme = layout.readme.read_text()
    _fsync_full_for(name, monkeypatch)
    assert run_command(lambda _: reproduce.reproduce("default", layout=layout, stems=[], log=lambda _: None), []) == 2
    target = {"index.html": layout.reports_dir("default") / "html" / "index.html",
              "summary.md": layout.reports_dir("default") / "summary.md", "README.md": layout.readme}[name]
    line = _one_error_line(capsys)
    assert line.startswith(f"error: disk full while writing {target} (No space left on device); {REPORT_FIX}"), line
    assert not list(tmp_path.rglob("*.tmp")) and layout.readme.read_text() == readme
    assert target == layout.readme or not target.exists()


def test_a_full_disk_while_papermill_writes_the_notebook_leaves_no_partial(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    import papermill

    from sphereface_lib.companion import reproduce
    from sphereface_lib.errors import run_command
    from test_reproduce import STEM, make_layout

    layout = make_layout(tmp_path)
    monkeypatch.setattr(reproduce, "check_kernel", lambda _: None)
    monkeypatch.setattr(reproduce, "kernel_provenance", lambda env: {})

    def execute_notebook(source: str, output: str, **kwargs) -> None:  # writes 61 KB, then the disk is full
        Path(output).write_bytes(bytes(61_000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    assert run_command(lambda _: reproduce.reproduce("default", layout=layout, stems=[STEM], log=lambda _: None),
                       []) == 2
    final = layout.reports_dir("default") / f"{STEM}.ipynb"
    assert _one_error_line(capsys).startswith(
        f"error: disk full while writing {final} (No space left on device); {REPORT_FIX}")
    assert sorted(p.name for p in layout.reports_dir("default").iterdir()) == [".writer.lock"]
