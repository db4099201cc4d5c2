"""The served model: a trained HGCN with its feature standardisation, applied to any region graph."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from landuse.models.hgcn import HGCN, EnsembleHGCN, Operator


class RegionModel(nn.Module):
    """``forward(x [N, F] raw node features, operators {name: [N, N]}) → logits [N, C]``.

    Inductive: the operators are built from whichever regions and edges are being scored, so the
    model is not bound to the graph it was trained on. Holds the training nodes' feature mean/std.
    """

    mean: Tensor  # buffers (register_buffer in __init__)
    std: Tensor

    def __init__(self, model: HGCN | EnsembleHGCN, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    @property
    def required_operators(self) -> tuple[str, ...]:
        """The operators ``forward`` needs (see :attr:`HGCN.required_operators`)."""
        return self.model.required_operators

    def forward(self, x: Tensor, operators: Mapping[str, Operator]) -> Tensor:
        """x [N, F], operators {name: sparse [N, N]} → logits [N, C]."""
        return self.model((x - self.mean) / self.std, operators)
