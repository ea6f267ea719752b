"""The heads trace into one torch.compile graph: no graph break from the host-side label check (issue 18.4)."""

from __future__ import annotations

import pytest
import torch

from sphereface_lib.losses import create_head


@pytest.mark.parametrize("name, kwargs", [("asoftmax", {"m": 4}), ("cosface", {})])
def test_head_loss_has_no_graph_break(name: str, kwargs: dict) -> None:
    head = create_head(name, 8, 5, **kwargs)
    features, labels = torch.randn(4, 8), torch.tensor([0, 3, 4, 1])
    explanation = torch._dynamo.explain(lambda f, y: head.compute_loss(f, y)[0])(features, labels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    # the eager call still checks the labels on the host
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        head.compute_loss(features, torch.tensor([0, 5, 1, 2]))
