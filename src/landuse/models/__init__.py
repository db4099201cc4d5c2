"""Models: nn.Modules mapping tensors to tensors (the HGCN family)."""

from landuse.models.hgcn import DEFAULT_HEAD_DIMS, HEADS, OPERATORS, VARIANTS, BoundHGCN, HGCN, Operator, sparse_mm

__all__ = ["BoundHGCN", "DEFAULT_HEAD_DIMS", "HEADS", "HGCN", "OPERATORS", "Operator", "VARIANTS", "sparse_mm"]
