"""Where the companion's notebooks and profiles are, for an editable and for a non-editable install alike.

The library installs as a package (``pip install .`` puts it in site-packages), but the notebooks, profiles
and reports stay in the project folder (a clone of the repository). :func:`project_root` finds that folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

ENV_VAR = "SPHEREFACE_PROJECT"
MARKERS = ("notebooks", "profiles")


def is_project(path: Path) -> bool:
    """Whether ``path`` holds the companion's ``notebooks/`` and ``profiles/`` folders."""
    return all((path / name).is_dir() for name in MARKERS)


def project_root(cwd: Path | None = None) -> Path:
    """The project folder: ``$SPHEREFACE_PROJECT``; else the checkout this package lives in (an editable
    install or a source tree); else ``cwd`` (default: the current directory) or the nearest parent of it
    holding ``notebooks/`` and ``profiles/``; else a :class:`UserError` saying where they must be."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured).expanduser().resolve()
        if not is_project(path):
            raise UserError(f"{ENV_VAR}={configured}: {path} holds no notebooks/ and profiles/ folders; point it "
                            "at a clone of the SphereFace companion repository")
        return path
    checkout = Path(__file__).resolve().parents[2]
    if is_project(checkout):
        return checkout
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_project(folder):
            return folder
    raise UserError(
        f"the companion's notebooks/ and profiles/ folders were not found: the package is installed in "
        f"{checkout} and neither {here} nor a parent of it holds them; run from a clone of the repository "
        f"or set {ENV_VAR}=/path/to/the/clone")
