"""The model cache's key covers what changes a trained model and no more (an edit to an evaluator or a figure
keeps every entry; an edit to a loss or the trainer retrains), and an entry is checked against the config asked
for before it is returned."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sphereface_lib import fingerprint
from sphereface_lib.data.sources import open_packed
from sphereface_lib.training import train_cached
from sphereface_lib.training.cache import CACHE_THREADS, cache_key, cache_plan
from test_training import same_state
from test_training_data import make_patterns, tiny_config


@pytest.fixture(scope="module")
def library_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("library") / "sphereface_lib"
    shutil.copytree(fingerprint.LIBRARY_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edited(library: Path, relative: str) -> tuple[str, str]:
    """(training, library) fingerprints of ``library`` with a comment appended to ``relative``, then undone."""
    path = library / relative
    before = path.read_bytes()
    path.write_bytes(before + b"\n# an edit\n")
    try:
        return fingerprint.training_fingerprint(library), fingerprint.library_fingerprint(library)
    finally:
        path.write_bytes(before)


def test_an_edit_outside_training_keeps_the_training_fingerprint(library_copy: Path) -> None:
    training, library = fingerprint.training_fingerprint(library_copy), fingerprint.library_fingerprint(library_copy)
    assert training == fingerprint.training_fingerprint() and library == fingerprint.library_fingerprint()
    for outside in ("evaluation/megaface.py", "companion/figures.py", "companion/reproduce.py", "training/cache.py",
                    "training/parallel.py", "data/protocols.py"):
        edited_training, edited_library = _edited(library_copy, outside)
        assert edited_library != library, outside  # the notebook runner still sees every edit
        assert edited_training == training, f"an edit to {outside} would retrain the cached models"


def test_an_edit_to_what_training_runs_changes_the_training_fingerprint(library_copy: Path) -> None:
    training = fingerprint.training_fingerprint(library_copy)
    for inside in ("losses/angular.py", "training/trainer.py", "backbones.py", "data/samplers.py",
                   "data/synthetic/faces.py", "training/config.py"):
        assert _edited(library_copy, inside)[0] != training, inside


IMPORTED = """
import sys
from sphereface_lib.backbones import create_backbone, list_backbones
from sphereface_lib.data.samplers import list_samplers
from sphereface_lib.losses import list_heads
from sphereface_lib.training import trainer
trainer._library_version()
print("\\n".join(m.__file__ for n, m in list(sys.modules.items()) if n.startswith("sphereface_lib")))
"""
#: imported by the trainer but unable to change a model: the top package's lazy re-exports (and version string),
#: and the evaluation package's names, which the top package reads without loading a module
NEUTRAL = {"__init__.py", "evaluation/__init__.py",
           "locking.py"}  # who may write a run folder, never what is trained there


def test_the_training_sources_cover_every_module_the_trainer_imports() -> None:
    library = fingerprint.LIBRARY_DIR
    done = subprocess.run([sys.executable, "-c", IMPORTED], capture_output=True, text=True, timeout=120,
                          cwd=library.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {Path(f).resolve().relative_to(library).as_posix() for f in done.stdout.split()}
    covered = {p.relative_to(library).as_posix() for p in fingerprint.training_files(library)}
    assert imported - covered - NEUTRAL == set(), "add them to fingerprint.TRAINING_SOURCES"
    assert {"losses/angular.py", "training/trainer.py", "backbones.py"} <= imported & covered


def test_the_key_names_the_thread_count(tmp_path: Path) -> None:
    data = make_patterns(tmp_path / "p", identities=4, per_identity=8)
    config = tiny_config(data.root, tmp_path / "unused")
    manifest = open_packed(str(data.root)).manifest
    keys = {cache_key(config, manifest, 1, threads) for threads in (None, 1, 2)}
    assert len(keys) == 3
    assert cache_plan(config).key == cache_key(config, manifest, 1, CACHE_THREADS)


def test_an_entry_holding_another_configs_model_is_set_aside_and_retrained(tmp_path: Path, caplog) -> None:
    data = make_patterns(tmp_path / "p", identities=4, per_identity=8)
    asked = tiny_config(data.root, tmp_path / "unused", optim__iterations=4, optim__lr_steps="[3]")
    other = asked.replace("optim.lr=0.01")
    cache = tmp_path / "cache"
    first, foreign = train_cached(asked, cache), train_cached(other, cache)
    entry = first.checkpoint.parent
    stored = json.loads((entry / "done.json").read_text())
    assert stored["key"] == entry.name and stored["threads"] == CACHE_THREADS
    assert stored["library"] == fingerprint.training_fingerprint() and stored["config"]["optim"]["lr"] == 0.05
    shutil.copyfile(foreign.checkpoint, entry / "checkpoint.pt")  # the entry now holds lr 0.01's model

    with caplog.at_level(logging.WARNING):
        again = train_cached(asked, cache)
    assert "optim.lr: 0.01 (asked: 0.05)" in caplog.text and "corrupt-1" in caplog.text
    aside = cache / f"{entry.name}.corrupt-1" / "checkpoint.pt"
    assert torch.equal(torch.load(aside, weights_only=True)["head"]["weight"], foreign.head.weight.detach())
    assert again.config.optim.lr == 0.05
    assert same_state(again.backbone.state_dict(), first.backbone.state_dict())
