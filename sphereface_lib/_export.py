"""A ``torch.export`` program behind an ``nn.Module`` that the library's feature extraction can drive."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


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
