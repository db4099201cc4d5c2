"""The HGCN family: one module that covers every thesis ablation variant by configuration.

A variant is a set of *heads* over the node features X [N, F]; each head is Kipf-style
``ReLU(op @ (X W) + b)`` for a sparse [N, N] operator ``op`` (``"adj"``, ``"dd"``, ``"avg"``, ``"in"``,
``"out"``, see :mod:`landuse.data.operators`), or ``ReLU(X W + b)`` for the ``"self"`` head (the
identity operator: the "Bi"/"Tri" self term). Head outputs are concatenated [N, Σ widths] and fed
to the trunk ``Dropout → Linear(Σ→32) → Dropout → Linear(32→16) → Dropout → Linear(16→C)``; as in
the paper's code there is no nonlinearity between the trunk's linears unless
``trunk_activation=True``. The output is logits [N, C]; the loss applies log_softmax.

Widths follow the paper's HGCN (adjacency 32, in-flow 16, out-flow 16 → 64); for heads outside the
paper: self 16 (it stands in for a flow-like term), dd 32 (an adjacency-like term), avg 16. The
``"None"`` variant has no graph head: an input ``ReLU(X W + b)`` of width 64 (``"mlp"``) takes its
place so its trunk matches HGCN's.

Beyond the thesis (:data:`SAGE_VARIANTS`): GraphSAGE-style variants keep each region's own signal
beside every neighbourhood aggregate — a ``"self"`` head next to ``"nbr"`` (the neighbour mean,
rownorm(A) without self loops), ``"nbr2"`` (the same operator applied twice: two hops), ``"dd"``,
``"in"`` and ``"out"`` — with a ReLU trunk. ``fusion="concat"`` concatenates the heads (as HGCN
does); ``fusion="gated"`` gives every head the same width and mixes them per node with softmax
gates computed from all heads, plus a residual self term: h = h_self + Σ_k g_k(h) · h_k.

Sparse products use ``torch.sparse.mm`` on CSR operators; PyG's ``spmm`` dispatches to the same
kernel for CSR input (measured within 10%), so it adds nothing. The costly part of a CPU epoch is
autograd's backward of ``torch.sparse.mm``, which transposes the operator on every call (~0.1 s at
N = 10^5, E = 10^6 — more than the product itself). :func:`sparse_mm` instead computes the transpose
once per operator, caches it (weakly keyed on the operator tensor, so it dies with it) and reuses it;
at 16 columns forward+backward drops from 0.115 s to 0.017 s (2 CPU threads). Operators are treated as constants: no
gradient flows into them, and modifying one in place after its first backward is detected and the
transpose rebuilt.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from landuse.constants import ALL_VARIANTS, SAGE_VARIANTS

__all__ = ["BoundHGCN", "DEFAULT_HEAD_DIMS", "EnsembleHGCN", "HEADS", "HGCN", "OPERATORS", "Operator", "VARIANTS",
           "sparse_mm"]

OPERATORS: tuple[str, ...] = ("adj", "dd", "avg", "in", "out", "nbr")

VARIANTS: tuple[str, ...] = ALL_VARIANTS  # the thesis table's order (Adj-Tri-GCN = HGCN), then the SAGE family

HEADS: dict[str, tuple[str, ...]] = {
    "None": (),
    **{f"GCN_{op}": (op,) for op in ("adj", "dd", "avg", "in", "out")},
    **{f"Bi-GCN_{op}": ("self", op) for op in ("avg", "in", "out")},
    "Tri-GCN": ("self", "in", "out"),
    **{f"Adj-Bi-GCN_{op}": ("adj", op) for op in ("avg", "in", "out")},
    "Adj-Tri-GCN": ("adj", "in", "out"),
    "SAGE_adj": ("self", "nbr"),
    "SAGE_adj2": ("self", "nbr", "nbr2"),
    "SAGE_dd": ("self", "dd"),
    "SAGE_flow": ("self", "in", "out"),
    "SAGE_adj2_flow": ("self", "nbr", "nbr2", "in", "out"),
    "SAGE_all": ("self", "nbr", "nbr2", "dd", "in", "out"),
    "Gated-SAGE_adj2": ("self", "nbr", "nbr2"),
    "Gated-SAGE_all": ("self", "nbr", "nbr2", "dd", "in", "out"),
}
assert tuple(HEADS) == VARIANTS and set(SAGE_VARIANTS) <= set(HEADS)

DEFAULT_HEAD_DIMS: dict[str, int] = {"self": 16, "adj": 32, "dd": 32, "avg": 16, "in": 16, "out": 16, "mlp": 64,
                                     "nbr": 32, "nbr2": 32}
SAGE_HEAD_DIMS: dict[str, int] = {"self": 32, "nbr": 32, "nbr2": 32, "dd": 32, "in": 16, "out": 16}
GATED_HEAD_DIM = 32


def variant_defaults(variant: str) -> dict:
    """Constructor settings that define a variant beyond its heads: fusion, trunk activation, head widths."""
    if variant not in SAGE_VARIANTS:
        return {"fusion": "concat", "trunk_activation": False, "head_dims": {}}
    if variant.startswith("Gated-"):
        return {"fusion": "gated", "trunk_activation": True, "head_dims": {h: GATED_HEAD_DIM for h in HEADS[variant]}}
    return {"fusion": "concat", "trunk_activation": True, "head_dims": dict(SAGE_HEAD_DIMS)}

# a constant [N, N] operator: a sparse tensor (CSR fastest) or the edge form (index [2, E], value [E])
Operator = Tensor | tuple[Tensor, Tensor]

_TRANSPOSES: WeakIdKeyDictionary = WeakIdKeyDictionary()  # operator -> (its _version, its CSR transpose)


def _transpose_of(op: Tensor) -> Tensor:
    """op.T as CSR, computed once per operator tensor (and again if it was modified in place)."""
    cached = _TRANSPOSES.get(op)
    if cached is None or cached[0] != op._version:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            op_t = op.detach().t()
            cached = (op._version, (op_t if op.layout == torch.sparse_csr else op_t.coalesce()).to_sparse_csr())
        _TRANSPOSES[op] = cached
    return cached[1]


class _SparseMM(torch.autograd.Function):
    """op @ h with a backward that reuses the cached transpose of the constant operator."""

    @staticmethod
    def forward(ctx, op: Tensor, h: Tensor) -> Tensor:
        ctx.op = op
        return torch.sparse.mm(op, h)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, torch.sparse.mm(_transpose_of(ctx.op), grad.contiguous())


def sparse_mm(op: Operator, h: Tensor) -> Tensor:
    """op @ h for a constant operator [N, N] and dense h [N, d] → [N, d].

    ``op`` is a sparse tensor, or the edge form ``(index [2, E], value [E])`` (row = index[0]): a
    gather/scatter with dense ops only, slower but traceable by ``torch.export`` under fake tensors.
    """
    if isinstance(op, tuple):
        index, value = op
        return torch.zeros_like(h).index_add(0, index[0], h.index_select(0, index[1]) * value.unsqueeze(1))
    if op.requires_grad or not (torch.is_grad_enabled() and h.requires_grad):
        return torch.sparse.mm(op, h)
    return _SparseMM.apply(op, h)


class HGCN(nn.Module):
    """Heterogeneous GCN: heads chosen by ``variant`` (see :data:`HEADS`), concatenated, then a linear trunk.

    Args:
        in_dim: node feature width F.
        num_classes: number of land-use classes C.
        variant: one of :data:`VARIANTS` (``"Adj-Tri-GCN"`` = HGCN).
        dropout: dropout probability before each trunk Linear.
        head_dims: overrides of :data:`DEFAULT_HEAD_DIMS` per head name (``"mlp"`` = the None variant's input layer).
        trunk_activation: ReLU between the trunk's linears (the paper's code has none).
        trunk_dims: hidden widths of the trunk.
        fusion: ``"concat"`` (heads side by side) or ``"gated"`` (per-node softmax gates over heads of
            equal width, plus the self head as a residual; needs a ``"self"`` head).

    Shapes: ``forward(x [N, F], operators {name: sparse [N, N]}) → logits [N, C]``.

    All heads' weights sit side by side in one ``Linear(F → Σ widths)`` (``head_lin``, no bias) with
    one bias vector (``head_bias``): one ``X @ [W_1 | W_2 | ...]`` product for all heads instead of one
    per head — the same model as separate per-head Linears (same init distribution), a little cheaper.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        variant: str = "Adj-Tri-GCN",
        dropout: float = 0.0,
        head_dims: dict[str, int] | None = None,
        trunk_activation: bool = False,
        trunk_dims: tuple[int, ...] = (32, 16),
        fusion: str = "concat",
    ) -> None:
        super().__init__()
        if variant not in HEADS:
            raise ValueError(f"unknown HGCN variant {variant!r}; choose from {', '.join(VARIANTS)}")
        if fusion not in ("concat", "gated"):
            raise ValueError(f"fusion must be 'concat' or 'gated', got {fusion!r}")
        unknown = set(head_dims or {}) - set(DEFAULT_HEAD_DIMS)
        if unknown:
            raise ValueError(f"head_dims: unknown heads {sorted(unknown)}; known: {sorted(DEFAULT_HEAD_DIMS)}")
        dims = {**DEFAULT_HEAD_DIMS, **(head_dims or {})}
        self.variant = variant
        self.head_names: tuple[str, ...] = HEADS[variant] or ("mlp",)
        self.head_dims: dict[str, int] = {name: dims[name] for name in self.head_names}
        self.fusion = fusion
        total = sum(self.head_dims.values())
        self.head_lin = nn.Linear(in_dim, total, bias=False)
        self.head_bias = nn.Parameter(torch.zeros(total))
        if fusion == "gated":
            if "self" not in self.head_names or len(set(self.head_dims.values())) != 1:
                raise ValueError("fusion 'gated' needs a 'self' head and heads of one width")
            width = next(iter(self.head_dims.values()))
            self.gate = nn.Linear(total, len(self.head_names))  # per-node logits over heads
            widths = (width, *trunk_dims, num_classes)
        else:
            widths = (total, *trunk_dims, num_classes)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i and trunk_activation:
                layers.append(nn.ReLU())
            layers += [nn.Dropout(dropout), nn.Linear(a, b)]
        self.trunk = nn.Sequential(*layers)

    @property
    def required_operators(self) -> tuple[str, ...]:
        """Names of the sparse operators ``forward`` needs (subset of :data:`OPERATORS`)."""
        ops = ["nbr" if name == "nbr2" else name for name in self.head_names]
        return tuple(dict.fromkeys(name for name in ops if name in OPERATORS))

    def forward(self, x: Tensor, operators: Mapping[str, Operator]) -> Tensor:
        """x [N, F], operators {name: sparse [N, N] or edge form} (extra keys ignored) → logits [N, C]."""
        missing = [name for name in self.required_operators if name not in operators]
        if missing:
            raise KeyError(
                f"HGCN variant {self.variant!r} needs operators {list(self.required_operators)}; "
                f"missing {missing} (got {sorted(operators)})"
            )
        return self.trunk(self.hidden(x, operators))

    def hidden(self, x: Tensor, operators: Mapping[str, Operator]) -> Tensor:
        """What the trunk receives: x [N, F] → [N, Σ widths] (concat) or [N, width] (gated)."""
        xw = self.head_lin(x).split(list(self.head_dims.values()), dim=1)  # per head [N, width]
        parts = [self._aggregate(name, h, operators) for name, h in zip(self.head_dims, xw)]
        h = F.relu(torch.cat(parts, dim=-1) + self.head_bias)  # [N, Σ widths]
        if self.fusion == "concat":
            return h
        heads = torch.stack(h.split(list(self.head_dims.values()), dim=1), dim=1)  # [N, K, width]
        gates = torch.softmax(self.gate(h), dim=-1).unsqueeze(-1)  # [N, K, 1]
        own = heads[:, self.head_names.index("self")]
        return own + (gates * heads).sum(dim=1)  # residual self term + gated mix [N, width]

    @staticmethod
    def _aggregate(name: str, h: Tensor, operators: Mapping[str, Operator]) -> Tensor:
        if name == "nbr2":  # two hops: the neighbour mean of the neighbour mean, never a materialised A²
            return sparse_mm(operators["nbr"], sparse_mm(operators["nbr"], h))
        return sparse_mm(operators[name], h) if name in OPERATORS else h


class EnsembleHGCN(nn.Module):
    """K independently initialised :class:`HGCN` of one variant, averaged in probability space.

    ``forward(x [N, F], operators) → log(mean_k softmax(member_k(x, operators)))`` [N, C]: logits whose
    softmax is the members' mean distribution (so the KL loss and metrics apply unchanged).
    """

    def __init__(self, members: list[HGCN]) -> None:
        super().__init__()
        if not members or len({m.variant for m in members}) != 1:
            raise ValueError("EnsembleHGCN needs at least one member, all of one variant")
        self.members = nn.ModuleList(members)
        self.variant = members[0].variant

    @property
    def required_operators(self) -> tuple[str, ...]:
        """The operators every member needs."""
        return cast(HGCN, self.members[0]).required_operators  # members: HGCNs (__init__)

    def forward(self, x: Tensor, operators: Mapping[str, Operator]) -> Tensor:
        """x [N, F] → logits [N, C] of the mean member distribution."""
        probs = torch.stack([torch.softmax(m(x, operators), dim=-1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


class BoundHGCN(nn.Module):
    """An :class:`HGCN` with its operators bound as buffers: ``forward(x [N, F]) → logits [N, C]``.

    For running a trained model on one fixed graph (the registered model is the inductive
    :class:`landuse.models.serving.RegionModel`, which takes its operators per call). Operators are
    stored in edge form (``op_<name>_index`` [2, E] int64, ``op_<name>_value`` [E]) and applied by
    gather/scatter, so the module keeps them in its state_dict, moves with ``.to(device)``, and
    exports with ``torch.export``, which cannot trace sparse-tensor products. Outputs equal ``model(x, operators)`` up to float summation order.
    """

    def __init__(self, model: HGCN, operators: Mapping[str, Operator]) -> None:
        super().__init__()
        self.model = model
        missing = [name for name in model.required_operators if name not in operators]
        if missing:
            raise KeyError(f"BoundHGCN: variant {model.variant!r} needs operators {missing} (got {sorted(operators)})")
        for name in model.required_operators:
            op = operators[name]
            if not isinstance(op, tuple):
                op = op.detach().to_sparse_coo().coalesce()
                op = (op.indices().clone(), op.values().clone())  # detach from the sparse base (export)
            self.register_buffer(f"op_{name}_index", op[0].long())
            self.register_buffer(f"op_{name}_value", op[1])

    @property
    def operators(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The bound operators by name, in edge form (index [2, E], value [E])."""
        return {
            name: (getattr(self, f"op_{name}_index"), getattr(self, f"op_{name}_value"))
            for name in self.model.required_operators
        }

    def forward(self, x: Tensor) -> Tensor:
        """x [N, F] → logits [N, C]."""
        return self.model(x, self.operators)
