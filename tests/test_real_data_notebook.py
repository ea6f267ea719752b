"""Real data enters a notebook through its ``data`` parameter only: notebooks 06 and 02 on the AT&T faces.

A small real-data folder is built from the AT&T / ORL faces (Olivetti Research Laboratory): 30 people train,
the other 10 form an LFW-like set whose ``pairs.txt`` (10 folds of matched and mismatched pairs) is written with
``write_lfw_pairs``; the crops are packed by the library (resized, grey), the MTCNN alignment of data_prep not
being needed for this check. Notebooks 06 and 02 run under papermill with the same ``data=<folder>`` (as
``make reproduce DATA=<folder>`` passes it to every notebook) and tiny parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sphereface_lib.companion import reproduce
from sphereface_lib.data.packed import PackedWriter
from sphereface_lib.data.protocols import PairList, lfw_key, write_lfw_pairs

FOLDS, PAIRS_PER_FOLD = 10, 5


def _pack(folder: Path, people: list[Path], source: str) -> None:
    with PackedWriter(folder, height=28, width=24, channels=1, source=source,
                      identities=[p.name for p in people]) as w:
        for label, person in enumerate(people):
            files = sorted(person.glob("*.pgm"), key=lambda f: int(f.stem))
            crops = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (24, 28),
                                         interpolation=cv2.INTER_AREA) for f in files])
            w.add(crops, [label] * len(files), [lfw_key(person.name, int(f.stem)) for f in files])


def _pairs(people: list[Path], seed: int = 0) -> PairList:
    rng = np.random.default_rng(seed)
    names = [p.name for p in people]
    ka, kb, same, folds = [], [], [], []
    for fold in range(FOLDS):
        for _ in range(PAIRS_PER_FOLD):
            i, j = rng.choice(10, 2, replace=False) + 1
            name = str(rng.choice(names))
            ka.append(lfw_key(name, i)), kb.append(lfw_key(name, j))
        for _ in range(PAIRS_PER_FOLD):
            a, b = rng.choice(names, 2, replace=False)
            ka.append(lfw_key(a, int(rng.integers(1, 11)))), kb.append(lfw_key(b, int(rng.integers(1, 11))))
        same += [True] * PAIRS_PER_FOLD + [False] * PAIRS_PER_FOLD
        folds += [fold] * (2 * PAIRS_PER_FOLD)
    return PairList.from_pairs(ka, kb, same, folds, source="AT&T LFW-like")


@pytest.fixture(scope="module")
def att_real(att_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-data folder as data_prep lays it out: train/ (30 people), lfw/ (10 people) and pairs.txt."""
    people = sorted((p for p in Path(att_faces).iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    assert len(people) == 40
    data = tmp_path_factory.mktemp("att") / "att_real"
    _pack(data / "train", people[:30], "att-train")
    _pack(data / "lfw", people[30:], "att-lfw")
    write_lfw_pairs(data / "pairs.txt", _pairs(people[30:]), view=2)
    return data


def _run(stem: str, parameters: dict, out: Path) -> dict:
    import papermill

    layout = reproduce.Layout()
    papermill.execute_notebook(str(layout.notebook(stem)), str(out), kernel_name=reproduce.KERNEL_NAME,
                               cwd=str(layout.notebooks_dir), progress_bar=False, parameters=parameters)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_notebook_06_runs_on_real_data_by_parameter_only(att_real: Path, tmp_path: Path) -> None:
    executed = _run("06_lfw_ytf_comparison", {
        "data": str(att_real), "cache_dir": str(tmp_path / "cache"), "rows": ["softmax", "asoftmax_m4"],
        "protocols": ["lfw"], "backbone": "sphereface4", "width": 0.125, "feat_dim": 16, "iterations": 8,
        "batch_size": 16, "seeds": [0], "reference_rows": []}, tmp_path / "06_real.ipynb")
    claims = reproduce.read_claims(executed)
    assert len(claims) == 1 and "LFW" in claims[0].claim
    text = json.dumps(executed)
    assert f"real data ({att_real})" in text and "synthetic (" not in text  # no synthetic benchmark was opened
    assert not (tmp_path / "cache" / "synthetic").exists()  # no synthetic data was generated


@pytest.mark.slow
def test_notebook_02_reads_the_same_real_data_folder(att_real: Path, tmp_path: Path) -> None:
    """``make reproduce DATA=<folder>`` gives every notebook the same folder: 02 takes its train/ pack."""
    executed = _run("02_exploratory_2d_features", {
        "data": str(att_real), "cache_dir": str(tmp_path / "cache"), "identities": 4, "iterations": 8,
        "batch_size": 16, "resamples": 200}, tmp_path / "02_real.ipynb")
    assert reproduce.read_claims(executed)
    assert "4 identities" in json.dumps(executed)
    assert not (tmp_path / "cache" / "synthetic").exists()  # no synthetic data was generated


@pytest.fixture(scope="module")
def att_openset(att_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's route: ``python -m data_prep.openset`` on the AT&T folder (28x24 here, for speed)."""
    from data_prep.openset import run

    out = tmp_path_factory.mktemp("openset") / "att_real"
    run(["--src", str(att_faces), "--out", str(out), "--size", "28x24", "--channels", "1", "--test-identities", "20",
         "--megaface-probe", "6", "--megaface-distractors", "4", "--seed", "0", "--workers", "2"])
    return out


@pytest.mark.slow
def test_the_real_profile_runs_on_an_openset_folder(att_openset: Path, tmp_path: Path) -> None:
    """``make reproduce PROFILE=real DATA=<folder>`` at smoke size: notebooks 02, 06 and 07 on the AT&T faces."""
    layout = reproduce.Layout(reports_root=tmp_path / "reports", readme=tmp_path / "README.md")
    stems = ["02_exploratory_2d_features", "06_lfw_ytf_comparison", "07_megaface"]
    tiny = {"cache_dir": str(tmp_path / "cache"), "iterations": 8, "batch_size": 16, "seeds": [0],
            "rows": ["softmax", "asoftmax_m4"], "identities": 4}
    runs = reproduce.reproduce("real", layout=layout, stems=stems, data=att_openset, overrides=tiny, readme=False,
                               log=lambda line: None)
    ran = {r.stem: r for r in runs if r.stem in stems}
    assert all(r.status == "executed" and r.claims for r in ran.values()), {s: r.error for s, r in ran.items()}
    assert not (tmp_path / "cache" / "synthetic").exists()  # real data only


def test_the_real_profile_needs_a_data_folder() -> None:
    with pytest.raises(reproduce.ReproduceError, match="data_prep.openset"):
        reproduce.reproduce("real", stems=["02_exploratory_2d_features"], log=lambda line: None)
