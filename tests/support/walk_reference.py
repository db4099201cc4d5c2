"""Reference walker and transition statistics for :mod:`landuse.features.walks` (tests and benchmarks only).

* :func:`python_random_walks`: a plain-Python walker (one loop per walker and step, ``random`` +
  ``bisect``) with the product walker's semantics, the baseline ``benchmarks/flow_walks.py`` times
  and the independent implementation the tests compare frequencies against.
* :func:`transition_statistics`: observed transition frequencies of a walk corpus per graph edge,
  against the exact probabilities.
* :func:`alias_probabilities`: the transition probabilities the packed alias tables imply (checks
  the table construction, including its quantisation).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import numpy as np

from landuse.features.walks import PAD, FlowGraph


def alias_probabilities(graph: FlowGraph) -> np.ndarray:
    """(E,) transition probabilities implied by the alias tables (equal to ``graph.probs``)."""
    s = graph.sampler
    deg = graph.out_degree[graph.edge_rows].astype(np.float64)
    accept = (s.word[:-1] >> np.uint64(64 - s.acc_bits)) / float(1 << s.acc_bits)  # as packed (quantised)
    accept[s.alias_edge == np.arange(accept.size)] = 1.0
    mass = accept / deg
    np.add.at(mass, s.alias_edge, (1.0 - accept) / deg)
    return mass


def python_adjacency(graph: FlowGraph) -> tuple[dict[int, list[int]], dict[int, list[float]]]:
    """Per region id: destination ids and cumulative probabilities as plain Python lists."""
    ids = graph.node_ids.tolist()
    dest = graph.node_ids[graph.indices].tolist()
    cum = graph.cumprobs.tolist()
    ptr = graph.indptr.tolist()
    neighbours = {node: dest[ptr[i] : ptr[i + 1]] for i, node in enumerate(ids)}
    cumulative = {node: cum[ptr[i] : ptr[i + 1]] for i, node in enumerate(ids)}
    return neighbours, cumulative


def python_random_walks(
    graph: FlowGraph,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    p: float = 1.0,
    q: float = 1.0,
    start_ids: np.ndarray | None = None,
    adjacency: tuple[dict[int, list[int]], dict[int, list[float]]] | None = None,
) -> np.ndarray:
    """Plain-Python reference walker (one loop per walker and per step).

    Same semantics as :func:`landuse.features.walks.random_walks` (``-1`` padding, shuffled starts, node2vec rejection) with
    ``random.Random(seed)`` and ``bisect``; ``start_ids`` restricts the start nodes (default: all).
    """
    rng = random.Random(seed)
    neighbours, cumulative = adjacency if adjacency is not None else python_adjacency(graph)
    nodes = graph.node_ids.tolist() if start_ids is None else np.asarray(start_ids).tolist()
    starts = [node for node in nodes for _ in range(walks_per_node)]
    rng.shuffle(starts)
    second_order = not (p == 1.0 and q == 1.0)
    out_sets = {node: set(dest) for node, dest in neighbours.items()} if second_order else {}
    top = max(1.0 / p, 1.0, 1.0 / q)
    walks = []
    for start in starts:
        walk = [start]
        prev, cur = None, start
        for _ in range(walk_length - 1):
            dest = neighbours[cur]
            if not dest:
                break
            while True:
                nxt = dest[bisect.bisect_right(cumulative[cur], rng.random())]  # row ends at exactly 1.0
                if not second_order or prev is None:
                    break
                alpha = 1.0 / p if nxt == prev else (1.0 if nxt in out_sets[prev] else 1.0 / q)
                if rng.random() * top < alpha:
                    break
            prev, cur = cur, nxt
            walk.append(cur)
        walk.extend([PAD] * (walk_length - len(walk)))
        walks.append(walk)
    return np.array(walks, dtype=np.int64).reshape(len(walks), walk_length)


@dataclass(frozen=True, eq=False)
class TransitionStats:
    """Observed transitions of a walk corpus against the graph's transition probabilities.

    ``edge_counts``/``expected``/``empirical`` are aligned with the graph's CSR edges; ``row_counts``
    is the number of observed transitions out of each node; ``off_graph`` counts transitions along
    pairs that are not edges of the graph (0 for a correct walker).
    """

    edge_counts: np.ndarray
    row_counts: np.ndarray
    expected: np.ndarray
    empirical: np.ndarray
    off_graph: int
    out_degree: np.ndarray

    def max_abs_diff(self, min_row_count: int = 1) -> float:
        """Largest |empirical − expected| over edges whose source has ≥ min_row_count transitions."""
        mask = self.row_counts[self._rows] >= max(min_row_count, 1)
        return float(np.max(np.abs(self.empirical - self.expected)[mask], initial=0.0))

    @property
    def _rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.row_counts.size), self.out_degree)


def transition_statistics(walks: np.ndarray, graph: FlowGraph) -> TransitionStats:
    """Count the consecutive (a, b) pairs of a walk corpus per graph edge (padding ignored)."""
    walks = np.asarray(walks, dtype=np.int64)
    n = graph.n_nodes
    a, b = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    valid = (a != PAD) & (b != PAD)
    ai, bi = graph.positions(a[valid]), graph.positions(b[valid])
    edge_keys = graph.edge_rows * n + graph.indices
    key = ai * n + bi
    k = np.minimum(np.searchsorted(edge_keys, key), max(edge_keys.size - 1, 0))
    on_graph = edge_keys[k] == key if edge_keys.size else np.zeros(key.size, dtype=bool)
    edge_counts = np.bincount(k[on_graph], minlength=graph.n_edges)
    row_counts = np.bincount(ai, minlength=n)
    denom = row_counts[graph.edge_rows]
    empirical = np.divide(edge_counts, denom, out=np.zeros(graph.n_edges), where=denom > 0)
    return TransitionStats(
        edge_counts, row_counts, graph.probs, empirical, int((~on_graph).sum()), graph.out_degree
    )
