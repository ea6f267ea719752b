"""A ``torch.export`` program behind an ``nn.Module`` that the library's feature extraction can drive."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .errors import UserError


class ExportedModel(nn.Module):
    """``torch.export.load(path).module()`` as a module whose ``train``/``eval`` leave the graph alone (the
    export fixed its mode, and the graph refuses to switch); ``parameters`` are the graph's (for its device)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "graph", graph)  # not a submodule: Module.train/to must not reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.graph.parameters(recurse)


def read_exported(path: Path, option: str) -> nn.Module:
    """The module of a ``torch.export.save`` file; a :class:`UserError` naming ``option`` and the fix when the file
    is not one (torch's own logged traceback of a failed read is silenced: the one line says it all)."""
    how = "save yours with torch.export.save(torch.export.export(model, (x,), dynamic_shapes=...), 'model.pt2')"
    if not zipfile.is_zipfile(path):
        raise UserError(f"{option} {path}: not a torch.export .pt2 file (not a zip archive); {how}")
    logger = logging.getLogger("torch.export")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises RuntimeError, KeyError, ValueError, ... for a damaged archive
        raise UserError(f"{option} {path}: a zip archive that torch.export cannot read ({type(exc).__name__}; "
                        f"torch.save and TorchScript files are zips too, the latter go in a .pt file); {how}") from None
    finally:
        logger.disabled = was_disabled
