"""``import sphereface_lib`` loads no heavy module; each public name still resolves, from the package and its
subpackages alike (the lazy exports of the ``__init__`` files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "sklearn", "scipy", "pandas", "cv2", "numba", "matplotlib", "seaborn", "yaml", "tqdm"]
SUBPACKAGES = ["data", "evaluation", "losses", "training"]


def loaded_after(code: str, **env: str) -> list[str]:
    """The modules of ``HEAVY`` in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    environ = {k: v for k, v in os.environ.items() if k != "EAGER_IMPORT"} | env
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=environ,
                         check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_loads_no_heavy_module():
    assert loaded_after("import sphereface_lib, sphereface_lib.data, sphereface_lib.evaluation, "
                        "sphereface_lib.losses, sphereface_lib.training") == []


def test_eager_import_loads_them(tmp_path):
    """The probe can fail: lazy_loader's EAGER_IMPORT=1 resolves every name at import, torch included."""
    assert "torch" in loaded_after("import sphereface_lib", EAGER_IMPORT="1")


def test_a_name_loads_only_its_own_dependencies():
    assert loaded_after("from sphereface_lib import PackedDataset, read_lfw_pairs, ConfigError") == ["yaml"]
    assert "sklearn" not in loaded_after("from sphereface_lib import create_head, megaface_evaluate, train")


def test_every_public_name_resolves_and_matches_its_subpackage():
    import importlib

    import sphereface_lib

    names = set()
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"sphereface_lib.{sub}")
        for name in module.__all__:
            if name == "train" and isinstance(sphereface_lib.train, type(sphereface_lib)):
                continue  # once imported, the callable module sphereface_lib.train stands for the function
            assert getattr(sphereface_lib, name) is getattr(module, name), name
        names |= set(module.__all__)
    assert set(sphereface_lib.__all__) == names | {
        "SphereFaceNet", "count_parameters", "create_backbone", "list_backbones", "sphereface"}
    assert len(sphereface_lib.__all__) == len(set(sphereface_lib.__all__))


def test_the_first_loss_name_registers_every_head():
    code = ("from sphereface_lib.losses import create_head, list_heads\n"
            "print(list_heads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    for head in ("asoftmax", "arcface", "cosface", "lsoftmax", "triplet", "softmax_contrastive", "softmax_center"):
        assert head in out


def test_unknown_names_raise_attribute_error():
    import sphereface_lib

    with pytest.raises(AttributeError):
        sphereface_lib.no_such_name  # noqa: B018
    from sphereface_lib import losses

    with pytest.raises(AttributeError):
        losses.no_such_head  # noqa: B018
