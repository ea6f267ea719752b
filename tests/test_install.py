"""Install routes: a non-editable wheel install finds the project folder (companion.project), and
environment.yml and pyproject.toml agree with the pins of requirements.txt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sphereface_lib.companion.project import ENV_VAR, project_root
from sphereface_lib.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name, where they differ


def pins(lines: list[str]) -> dict[str, str]:
    """name -> pinned version of ``name==version`` requirement lines."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = spec.version
    return out


@pytest.fixture(scope="module")
def requirements() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


def test_environment_yml_pins_the_requirements(requirements):
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "sphereface" and env["channels"][0] == "conda-forge"
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            name, _, version = dep.partition("=")
            conda[canonicalize_name(CONDA_NAMES.get(name, name))] = version
    assert conda.pop("python") == "3.11" and conda.pop("pip") == ""
    listed = conda | pins(pip)
    assert set(conda).isdisjoint(pins(pip))
    missing = set(requirements) - set(listed)
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    for name, version in requirements.items():
        assert listed[name] == version, f"{name}: environment.yml {listed[name]}, requirements.txt {version}"


def test_pyproject_ranges_hold_the_pinned_versions(requirements):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    torch = next(r for r in reqs if r.name == "torch")
    assert "==" not in str(torch.specifier) and "<" in str(torch.specifier)
    for r in reqs:
        name = canonicalize_name(r.name)
        if name in requirements:  # lazy-loader comes with scikit-image
            assert r.specifier.contains(requirements[name]), f"{r} excludes the pinned {requirements[name]}"


def test_project_root_of_a_checkout_and_its_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert project_root() == ROOT
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(UserError, match=f"{ENV_VAR}=.*holds no notebooks/ and profiles/"):
        project_root()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "profiles").mkdir()
    assert project_root() == tmp_path.resolve()


@pytest.mark.slow
def test_a_wheel_install_finds_the_project_folder(tmp_path):
    """Build the wheel from a copy of the sources, install it into a bare folder, run from elsewhere."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("sphereface_lib", "data_prep"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("sphereface_lib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sphereface_lib/evaluate.py" in names and "sphereface_lib/companion/project.py" in names
    assert not any(n.startswith(("notebooks/", "profiles/", "tests/")) for n in names)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)

    def where(cwd: Path, **env: str) -> subprocess.CompletedProcess:
        code = ("import sphereface_lib, sys; from sphereface_lib.companion.project import project_root\n"
                f"assert sphereface_lib.__file__.startswith({str(site)!r}), sphereface_lib.__file__\n"
                "from sphereface_lib.errors import run_command\n"
                "sys.exit(run_command(lambda argv: print(project_root()) or 0))")
        environ = {k: v for k, v in os.environ.items() if k != ENV_VAR} | {"PYTHONPATH": str(site)} | env
        return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    lost = where(outside)
    assert lost.returncode == 2 and lost.stderr.startswith("error: the companion's notebooks/ and profiles/")
    assert ENV_VAR in lost.stderr
    assert where(ROOT / "notebooks").stdout.strip() == str(ROOT)  # a parent of the current directory
    assert where(outside, **{ENV_VAR: str(ROOT)}).stdout.strip() == str(ROOT)
