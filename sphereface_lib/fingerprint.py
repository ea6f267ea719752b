"""Fingerprints of what changes results: the library's Python source, hashed file by file.

The notebook runner (``companion/reproduce.py``) keys on :func:`library_fingerprint` (every ``.py`` file: a
notebook may use any of them). The model cache (``training/cache.py``) keys on :func:`training_fingerprint`, the
source of the modules a trained model depends on (:data:`TRAINING_SOURCES`), so that an edit to an evaluator, a
figure or the notebook runner does not retrain the cached models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

LIBRARY_DIR = Path(__file__).resolve().parent

#: Files and folders (relative to the library folder; a folder means every ``.py`` file under it) whose source
#: decides the weights :func:`~sphereface_lib.training.trainer.train` produces from a config and a dataset.
#: tests/test_cache.py checks that it covers every library module the trainer imports.
TRAINING_SOURCES: dict[str, str] = {
    "losses": "the heads (A-Softmax Eq. 7, L-Softmax, the compared losses): the loss and its gradient",
    "backbones.py": "the SphereFace-N networks (Table 2) and their initialization",
    "training/config.py": "the config's defaults and how its values are parsed",
    "training/trainer.py": "the loop: augmentation, optimizer, lr and lambda steps, the batch split, AMP",
    "training/__init__.py": "the package's names (imported by the trainer)",
    "data/__init__.py": "the package's names (imported by the trainer)",
    "data/packed.py": "how a packed dataset's images and labels are read",
    "data/sources.py": "how a pack or a shard set is opened",
    "data/samplers.py": "which images each batch holds, in which order",
    "data/synthetic": "the built-in benchmark's images (its cache folder is keyed by GENERATOR_VERSION only, so a "
                      "model must not outlive an edit to the generator)",
    "errors.py": "the trainer's error handling (whether a run stops or goes on)",
}
# Not listed: training/cache.py and training/parallel.py decide where a model is stored and with how many
# processes and threads it trains; both counts are part of the cache key itself (cache_key). locking.py decides
# which process may write a run folder, not what is trained there. The evaluation,
# companion, data/protocols, _export and the command-line modules never run during training.


def sha256_of_parts(parts: Iterable[bytes]) -> str:
    """Hex SHA-256 over the SHA-256 of each part, in order (parts cannot run into each other)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _fingerprint(library_dir: Path, files: Iterable[Path]) -> str:
    """Hash of ``files`` (relative path and bytes), in sorted order."""
    return sha256_of_parts(p.relative_to(library_dir).as_posix().encode() + b"\0" + p.read_bytes()
                           for p in sorted(files))


def library_fingerprint(library_dir: Path = LIBRARY_DIR) -> str:
    """Hash of every ``.py`` file under ``library_dir`` (relative path and bytes), in sorted order."""
    library_dir = Path(library_dir)
    return _fingerprint(library_dir, library_dir.rglob("*.py"))


def training_files(library_dir: Path = LIBRARY_DIR) -> list[Path]:
    """The ``.py`` files of :data:`TRAINING_SOURCES` under ``library_dir``; a listed path that is missing is a bug
    (the list went stale) and raises ``FileNotFoundError``."""
    library_dir = Path(library_dir)
    files: set[Path] = set()
    for name in TRAINING_SOURCES:
        path = library_dir / name
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.is_file():
            files.add(path)
        else:
            raise FileNotFoundError(f"fingerprint.TRAINING_SOURCES names {name}, absent from {library_dir}")
    return sorted(files)


def training_fingerprint(library_dir: Path = LIBRARY_DIR) -> str:
    """Hash of the source a trained model depends on (:data:`TRAINING_SOURCES`), like :func:`library_fingerprint`."""
    library_dir = Path(library_dir)
    return _fingerprint(library_dir, training_files(library_dir))
