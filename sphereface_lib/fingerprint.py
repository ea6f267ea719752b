"""Fingerprints of what changes results: the library's Python source, hashed file by file.

The model cache (``training/cache.py``) and the notebook runner (``companion/reproduce.py``) both key on it,
so an edit to any ``.py`` file under ``sphereface_lib/`` retrains cached models and re-runs notebooks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

LIBRARY_DIR = Path(__file__).resolve().parent


def sha256_of_parts(parts: Iterable[bytes]) -> str:
    """Hex SHA-256 over the SHA-256 of each part, in order (parts cannot run into each other)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def library_fingerprint(library_dir: Path = LIBRARY_DIR) -> str:
    """Hash of every ``.py`` file under ``library_dir`` (relative path and bytes), in sorted order."""
    files = sorted(Path(library_dir).rglob("*.py"))
    return sha256_of_parts(p.relative_to(library_dir).as_posix().encode() + b"\0" + p.read_bytes() for p in files)
