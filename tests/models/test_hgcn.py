"""The HGCN family: every variant builds and trains; sparse products match dense ones."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from landuse.constants import HGCN_VARIANTS, SAGE_VARIANTS
from landuse.data.operators import (adjacency_operator, avg_flow_operator, distance_decay_operator, flow_operators,
                                    neighbour_mean_operator)
from landuse.models import DEFAULT_HEAD_DIMS, HEADS, OPERATORS, VARIANTS, BoundHGCN, HGCN, sparse_mm
from landuse.models.hgcn import variant_defaults
from landuse.training.metrics import kl_loss

N, F_IN, C = 40, 6, 5


def make_graph(seed: int = 0, n: int = N) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random features and all five operators on a random graph of n nodes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=g)
    ei = torch.randint(0, n, (2, 6 * n), generator=g)
    ei = torch.cat([ei, ei.flip(0)], 1)
    flow = torch.randint(0, n, (2, 8 * n), generator=g)
    out_op, in_op = flow_operators(flow, torch.rand(flow.shape[1], generator=g), n)
    ops = {
        "adj": adjacency_operator(ei, n),
        "dd": distance_decay_operator(ei, torch.rand(ei.shape[1], generator=g), n),
        "out": out_op,
        "in": in_op,
        "avg": avg_flow_operator(out_op, in_op),
        "nbr": neighbour_mean_operator(ei, n),
    }
    return x, ops


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: with 2 OpenMP threads on a busy CPU each small matmul can take ~100× longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def graph() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return make_graph()


def test_variant_table():
    assert VARIANTS[:14] == HGCN_VARIANTS and VARIANTS[14:] == SAGE_VARIANTS and tuple(HEADS) == VARIANTS
    assert HEADS["None"] == () and HEADS["Adj-Tri-GCN"] == ("adj", "in", "out")
    assert HEADS["Tri-GCN"] == ("self", "in", "out") and HEADS["Bi-GCN_avg"] == ("self", "avg")
    assert HEADS["Adj-Bi-GCN_out"] == ("adj", "out") and HEADS["GCN_dd"] == ("dd",)
    assert HGCN(F_IN, C).head_dims == {"adj": 32, "in": 16, "out": 16}  # the paper's HGCN: 64 → 32 → 16 → C


@pytest.mark.parametrize("variant", HGCN_VARIANTS)
def test_every_variant_forward_and_gradients(variant, graph):
    x, ops = graph
    model = HGCN(F_IN, C, variant)
    assert model.required_operators == tuple(h for h in HEADS[variant] if h in OPERATORS)
    assert tuple(model.head_dims) == (HEADS[variant] or ("mlp",))
    assert model.trunk[1].in_features == sum(DEFAULT_HEAD_DIMS[h] for h in HEADS[variant] or ("mlp",))
    logits = model(x, ops)
    assert logits.shape == (N, C) and torch.isfinite(logits).all()
    F.kl_div(F.log_softmax(logits, -1), torch.full((N, C), 1 / C), reduction="batchmean").backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", SAGE_VARIANTS)
def test_sage_variants_keep_a_self_term_and_train(variant, graph):
    x, ops = graph
    model = HGCN(F_IN, C, variant, **variant_defaults(variant))
    assert "self" in model.head_names
    assert ("nbr" in model.required_operators) == any(h.startswith("nbr") for h in HEADS[variant])
    logits = model(x, ops)
    assert logits.shape == (N, C) and torch.isfinite(logits).all()
    F.kl_div(F.log_softmax(logits, -1), torch.full((N, C), 1 / C), reduction="batchmean").backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the self head alone keeps a region's own signal: an isolated node's output depends on its features
    iso = {k: torch.zeros(N, N).to_sparse_csr() for k in ops}
    model.eval()
    with torch.no_grad():
        x2 = x.clone()
        x2[0] += 1.0
        assert not torch.allclose(model(x, iso)[0], model(x2, iso)[0])


def test_nbr2_is_two_hops_of_the_neighbour_mean(graph):
    x, ops = graph
    model = HGCN(F_IN, C, "SAGE_adj2", **variant_defaults("SAGE_adj2"))
    h = model.head_lin(x).split(list(model.head_dims.values()), dim=1)
    dense = ops["nbr"].to_dense()
    assert torch.allclose(model._aggregate("nbr2", h[2], ops), dense @ (dense @ h[2]), atol=1e-5)
    assert torch.allclose(dense.sum(1)[dense.sum(1) > 0], torch.ones(int((dense.sum(1) > 0).sum())))
    assert torch.all(dense.diagonal() == 0)


def test_gated_fusion_mixes_equal_width_heads(graph):
    x, ops = graph
    model = HGCN(F_IN, C, "Gated-SAGE_all", **variant_defaults("Gated-SAGE_all"))
    assert model.hidden(x, ops).shape == (N, 32) and model.trunk[1].in_features == 32
    with pytest.raises(ValueError, match="gated"):
        HGCN(F_IN, C, "GCN_adj", fusion="gated")


def test_operator_dependence(graph):
    """A head's operator matters: changing it changes the output; unused operators do not."""
    x, ops = graph
    model = HGCN(F_IN, C, "GCN_out")
    base = model(x, ops)
    assert torch.equal(base, model(x, {**ops, "adj": ops["dd"], "in": ops["dd"]}))
    assert not torch.allclose(base, model(x, {**ops, "out": ops["adj"]}))


def test_missing_operator_is_a_clear_key_error(graph):
    x, ops = graph
    with pytest.raises(KeyError, match=r"Adj-Tri-GCN.*missing \['in', 'out'\]"):
        HGCN(F_IN, C)(x, {"adj": ops["adj"]})
    HGCN(F_IN, C, "None")(x, {})  # the MLP baseline needs none


def test_bad_configuration():
    with pytest.raises(ValueError, match="unknown HGCN variant"):
        HGCN(F_IN, C, "GCN_xyz")
    with pytest.raises(ValueError, match="head_dims"):
        HGCN(F_IN, C, head_dims={"nope": 3})


def test_head_dims_and_trunk_activation(graph):
    x, ops = graph
    model = HGCN(F_IN, C, "Tri-GCN", head_dims={"self": 8, "in": 4}, trunk_activation=True, dropout=0.5)
    assert model.head_dims == {"self": 8, "in": 4, "out": 16} and model.trunk[1].in_features == 28
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.trunk) == 2
    assert model(x, ops).shape == (N, C)


def test_deterministic_without_dropout_and_eval(graph):
    x, ops = graph
    model = HGCN(F_IN, C, dropout=0.0)
    assert torch.equal(model(x, ops), model(x, ops))
    model = HGCN(F_IN, C, dropout=0.5).eval()
    assert torch.equal(model(x, ops), model(x, ops))


def test_gcn_adj_equals_dense_computation(graph):
    x, ops = graph
    model = HGCN(F_IN, C, "GCN_adj", trunk_activation=True)
    a = ops["adj"].to_dense()
    h = torch.relu(a @ (x @ model.head_lin.weight.T) + model.head_bias)
    lin = [m for m in model.trunk if isinstance(m, torch.nn.Linear)]
    expected = lin[2](torch.relu(lin[1](torch.relu(lin[0](h)))))
    torch.testing.assert_close(model(x, ops), expected, rtol=1e-5, atol=1e-6)


def test_sparse_mm_backward_matches_autograd(graph):
    """The cached-transpose backward equals torch.sparse.mm's own, and the edge form equals the sparse one."""
    _, ops = graph
    for op in (ops["adj"], ops["in"], ops["out"].to_sparse_coo()):
        h = torch.randn(N, 3, requires_grad=True)
        (ours,) = torch.autograd.grad(sparse_mm(op, h).pow(2).sum(), h)
        (ref,) = torch.autograd.grad(torch.sparse.mm(op, h).pow(2).sum(), h)
        torch.testing.assert_close(ours, ref)
        coo = op.to_sparse_coo().coalesce()
        torch.testing.assert_close(sparse_mm((coo.indices(), coo.values()), h), torch.sparse.mm(op, h))
    op = ops["adj"].clone()
    h = torch.randn(N, 3, requires_grad=True)
    torch.autograd.grad(sparse_mm(op, h).sum(), h)  # caches op's transpose
    op.values().mul_(2)  # an in-place change invalidates the cached transpose
    (ours,) = torch.autograd.grad(sparse_mm(op, h).pow(2).sum(), h)
    (ref,) = torch.autograd.grad(torch.sparse.mm(op, h).pow(2).sum(), h)
    torch.testing.assert_close(ours, ref)


def test_bound_model_round_trips(graph):
    x, ops = graph
    model = HGCN(F_IN, C, "Adj-Tri-GCN").eval()
    bound = BoundHGCN(model, ops).eval()
    assert sorted(bound.operators) == ["adj", "in", "out"]
    torch.testing.assert_close(bound(x), model(x, ops), rtol=1e-5, atol=1e-6)
    buf = io.BytesIO()
    torch.save(bound, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), bound(x))
    fresh = BoundHGCN(HGCN(F_IN, C, "Adj-Tri-GCN"), ops).eval()
    fresh.load_state_dict(bound.state_dict())
    assert torch.equal(fresh(x), bound(x))
    with pytest.raises(KeyError, match="needs operators"):
        BoundHGCN(model, {"adj": ops["adj"]})


def test_bound_model_exports(graph):
    x, ops = graph
    bound = BoundHGCN(HGCN(F_IN, C, "Adj-Bi-GCN_avg"), ops).eval()
    exported = torch.export.export(bound, (x,))
    torch.testing.assert_close(exported.module()(x), bound(x))


def test_learns_neighbourhood_labels():
    """Labels depend on neighbours' features: Adj-Tri-GCN learns them (held-out KL far below its start
    and the feature-only MLP's), 200 epochs of full-batch Adam on half the nodes."""
    torch.manual_seed(0)
    n = 200
    x, ops = make_graph(seed=1, n=n)
    y = torch.softmax(3 * torch.sparse.mm(ops["adj"], x[:, :C]) + 3 * torch.sparse.mm(ops["in"], x[:, 1 : C + 1]), -1)
    train, test = torch.arange(0, n, 2), torch.arange(1, n, 2)
    start, held_out = {}, {}
    for variant in ("Adj-Tri-GCN", "None"):
        model = HGCN(F_IN, C, variant)
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
        start[variant] = kl_loss(model(x, ops)[test], y[test]).item()
        for _ in range(200):
            opt.zero_grad()
            kl_loss(model(x, ops)[train], y[train]).backward()
            opt.step()
        with torch.no_grad():
            held_out[variant] = kl_loss(model(x, ops)[test], y[test]).item()
    assert held_out["Adj-Tri-GCN"] < 0.2 * start["Adj-Tri-GCN"]
    assert held_out["Adj-Tri-GCN"] < 0.2 * held_out["None"]
