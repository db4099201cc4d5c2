"""Sparse operators against dense numpy computations on small random graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landuse.data.operators import (
    adjacency_operator,
    avg_flow_operator,
    distance_decay_operator,
    flow_operators,
    row_normalise,
    transpose,
)

N = 30


def dense(op: torch.Tensor) -> np.ndarray:
    return op.to_dense().numpy().astype(float)


def rownorm(m: np.ndarray) -> np.ndarray:
    s = m.sum(1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s != 0)


@pytest.fixture
def graph() -> tuple[torch.Tensor, torch.Tensor]:
    """Random edges with duplicates, self loops and isolated nodes (the last five never appear)."""
    g = torch.Generator().manual_seed(0)
    ei = torch.randint(0, N - 5, (2, 120), generator=g)
    ei = torch.cat([ei, ei[:, :10], torch.tensor([[3, 7], [3, 7]])], 1)  # 10 duplicates + self loops
    return ei, torch.rand(ei.shape[1], generator=g)


def scatter(ei: torch.Tensor, w: np.ndarray) -> np.ndarray:
    m = np.zeros((N, N))
    np.add.at(m, (ei[0].numpy(), ei[1].numpy()), w)
    return m


def test_row_normalise_matches_dense(graph):
    ei, w = graph
    op = row_normalise(ei, w, N)
    assert op.layout == torch.sparse_csr and op.shape == (N, N)
    expected = rownorm(scatter(ei, w.numpy().astype(float)))
    np.testing.assert_allclose(dense(op), expected, rtol=1e-5, atol=1e-7)
    sums, has_edges = dense(op).sum(1), np.isin(np.arange(N), ei[0].numpy())
    assert not has_edges[N - 5:].any()
    np.testing.assert_allclose(sums[has_edges], 1.0, rtol=1e-5)
    assert (sums[~has_edges] == 0).all()  # empty rows stay zero, no NaN


def test_adjacency_is_binary_with_single_self_loops(graph):
    ei, _ = graph
    a = scatter(ei, np.ones(ei.shape[1])) > 0
    np.fill_diagonal(a, True)  # A + I with duplicates and input self loops counted once
    np.testing.assert_allclose(dense(adjacency_operator(ei, N)), rownorm(a.astype(float)), rtol=1e-6)
    op = dense(adjacency_operator(ei, N))
    assert (np.diag(op) > 0).all() and np.allclose(op.sum(1), 1.0)


def test_flow_operators(graph):
    ei, w = graph
    out_op, in_op = flow_operators(ei, w, N)
    f = scatter(ei, w.numpy().astype(float))
    np.fill_diagonal(f, 0)
    np.testing.assert_allclose(dense(out_op), rownorm(f), rtol=1e-5, atol=1e-7)
    assert (np.diag(dense(out_op)) == 0).all()
    np.testing.assert_array_equal(dense(in_op), dense(out_op).T)  # transpose, not a re-normalised in-flow
    assert in_op.layout == torch.sparse_csr
    avg = dense(avg_flow_operator(out_op, in_op))
    np.testing.assert_allclose(avg, (rownorm(f) + rownorm(f).T) / 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(avg, avg.T)


def test_distance_decay_and_transpose(graph):
    ei, w = graph
    op = distance_decay_operator(ei, w, N)
    np.testing.assert_allclose(dense(op), rownorm(scatter(ei, w.numpy().astype(float))), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(dense(transpose(op)), dense(op).T)


def test_matmul_and_backward(graph):
    ei, w = graph
    op = row_normalise(ei, w, N)
    x = torch.randn(N, 4, requires_grad=True)
    out = torch.sparse.mm(op, x)
    np.testing.assert_allclose(out.detach().numpy(), dense(op) @ x.detach().numpy(), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), dense(op).T @ np.ones((N, 4)), rtol=1e-4, atol=1e-5)


def test_bad_edges_fail_fast():
    with pytest.raises(ValueError, match="outside"):
        row_normalise(torch.tensor([[0, 5], [1, 2]]), torch.ones(2), 3)
    with pytest.raises(ValueError, match="shape"):
        row_normalise(torch.tensor([0, 1]), torch.ones(2), 3)
