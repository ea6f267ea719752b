"""Shared fixtures. Real data lives in ../shared beside the project; tests using it skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def att_faces() -> Path:
    """The AT&T (ORL) faces: 40 people x 10 grey 92x112 images (Olivetti Research Laboratory)."""
    path = SHARED_DATA / "att_faces"
    if not (path / "s1" / "1.pgm").is_file():
        pytest.skip(f"real faces not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def protocols_dir() -> Path:
    """Real LFW and YTF protocol files (pairs.txt, ytf_splits.csv, ...)."""
    path = SHARED_DATA / "protocols"
    if not (path / "pairs.txt").is_file():
        pytest.skip(f"real protocol files not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def mtcnn_weights() -> Path:
    """The MTCNN weight folder; absent weights fail (the Makefile installs them), never skip."""
    from data_prep.mtcnn import MissingWeightsError, weights_dir

    try:
        return weights_dir()
    except MissingWeightsError as exc:
        pytest.fail(f"{exc} -- the Makefile installs it; a missing install step must not pass as a skip")


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
