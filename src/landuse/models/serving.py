"""The served model: a trained HGCN bound to its graph and its feature standardisation."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from landuse.models.hgcn import HGCN, BoundHGCN


class RegionModel(nn.Module):
    """``forward(x [N, F] raw node features) → logits [N, C]`` for the N regions of the graph it was trained on.

    Holds the HGCN, its operators (as edge-list buffers, see BoundHGCN) and the training nodes' feature mean/std, so a
    model loaded from the registry needs nothing but the assembled node features.
    """

    def __init__(self, model: HGCN, operators: Mapping[str, Tensor], mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.bound = BoundHGCN(model, operators)
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        """x [N, F] → logits [N, C]."""
        return self.bound((x - self.mean) / self.std)


def probabilities(logits: Tensor) -> Tensor:
    """Predicted land-use distribution [N, C] from logits."""
    return torch.softmax(logits, dim=-1)
