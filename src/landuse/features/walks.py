"""Weighted random walks on the OD flow graph (the corpus behind the flow Word2Vec, H_flow).

The graph is held in CSR form over positions ``0..N-1`` (``FlowGraph.node_ids`` maps them back to
region ids); the transition probability from ``o`` to ``d`` is proportional to the flow weight
(row-normalised). Nothing here is ever N×N dense.

Sampling. ``random_walks`` advances all walkers together, one Python iteration per step. Each step
draws the next node of every walker with an alias table (Walker/Vose), built once per graph by a
vectorised construction: O(1) gathers per walker-step. A per-step ``searchsorted`` on the
concatenated row-offset cumulative probabilities (``method="searchsorted"``) is kept as a second,
simpler sampler; it is exact too but its binary search over all E edges costs about 5× more per step,
which puts it far below the 50× target against the plain-Python walker (measured in
``benchmarks/flow_walks.py``).

Dangling nodes (no out-flow) end a walk: the remaining positions are padded with ``-1``. Internally a
sentinel state ``N`` (with a self-loop) absorbs stopped walkers, so no per-step masking is needed.

Second-order (node2vec) bias: with ``p == q == 1`` the walk is first-order. Otherwise, for a walker
that came from ``t`` to ``v``, the candidate ``x`` (drawn first-order ∝ w(v, x)) is weighted by
``1/p`` when ``x == t``, ``1`` when the graph has an edge ``t → x`` and ``1/q`` otherwise. The biased
distribution is sampled exactly by rejection: propose first-order, accept with probability
``bias / max(1/p, 1, 1/q)``, re-propose the rejected walkers only (vectorised over them).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

PAD = -1
_BLOCK = 1 << 14  # walkers per block: keeps the per-step temporaries in cache; fixed for determinism
_MAX_REJECTION_ROUNDS = 100_000


@dataclass(frozen=True, eq=False)
class AliasSampler:
    """Per-edge alias tables packed for sampling, extended by a sentinel state (position N).

    One 32-bit uniform ``r`` per walker-step: for a walker at ``v``, ``r·deg[v] = slot·2³² + rest``;
    ``e = start[v] + slot``; ``word[e]`` packs the acceptance threshold (top ``acc_bits`` bits, fixed
    point), the alias target and the own target (``bits`` each), so each step reads one 8-byte entry
    per walker (the table must stay cache-resident to be fast). The next position is the own target
    when ``rest`` (scaled to ``acc_bits``) is below the threshold, else the alias target. Slot and
    acceptance probabilities are thereby resolved to about ``max(2^-acc_bits, deg·2^-32)``. Dangling
    rows and the sentinel point at one extra slot (index E) that always leads to the sentinel.
    """

    start: np.ndarray  # (N+1,) uint64 first slot of each row
    deg: np.ndarray  # (N+1,) uint64 slots per row
    word: np.ndarray  # (E+1,) uint64 threshold << (64 − acc_bits) | alias target << bits | target
    bits: int
    acc_bits: int
    alias_edge: np.ndarray  # (E,) int64 alias edge of each edge (for checks)
    accept: np.ndarray  # (E,) float64 acceptance probability of each edge's own slot


@dataclass(frozen=True, eq=False)
class FlowGraph:
    """Row-normalised sparse transition structure of a directed, weighted flow graph.

    Attributes:
        node_ids: (N,) int64 sorted region ids; position i in every array is region ``node_ids[i]``.
        indptr: (N+1,) int64 CSR row pointers.
        indices: (E,) int64 destination positions, sorted within each row.
        weights: (E,) float64 summed positive flow weights.
        probs: (E,) float64 transition probabilities (each non-empty row sums to 1).
        cumprobs: (E,) float64 cumulative probabilities per row (last entry of a row is exactly 1).
        sampler: alias tables used by ``random_walks``.
    """

    node_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    probs: np.ndarray
    cumprobs: np.ndarray
    sampler: AliasSampler = field(repr=False)

    @property
    def n_nodes(self) -> int:
        """Number of nodes N."""
        return int(self.node_ids.size)

    @property
    def n_edges(self) -> int:
        """Number of distinct directed edges with positive weight."""
        return int(self.indices.size)

    @property
    def out_degree(self) -> np.ndarray:
        """(N,) int64 number of out-edges per node."""
        return np.diff(self.indptr)

    @property
    def dangling(self) -> np.ndarray:
        """(N,) bool: nodes with no out-flow."""
        return self.out_degree == 0

    @property
    def dangling_ids(self) -> np.ndarray:
        """Region ids of the nodes with no out-flow (walks stop there)."""
        return self.node_ids[self.dangling]

    @property
    def edge_rows(self) -> np.ndarray:
        """(E,) int64 source position of each edge."""
        return np.repeat(np.arange(self.n_nodes, dtype=np.int64), self.out_degree)

    def transition_matrix(self) -> sp.csr_matrix:
        """Sparse (N, N) row-stochastic transition matrix (dangling rows are empty)."""
        n = self.n_nodes
        return sp.csr_matrix((self.probs, self.indices, self.indptr), shape=(n, n))

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of region ids; raises ``KeyError`` for ids not in the graph."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.node_ids, ids)
        pos = np.minimum(pos, max(self.n_nodes - 1, 0))
        if ids.size and (self.n_nodes == 0 or not np.array_equal(self.node_ids[pos], ids)):
            missing = np.setdiff1d(ids, self.node_ids)
            raise KeyError(f"{missing.size} ids not in the graph, e.g. {missing[:5].tolist()}")
        return pos

    @classmethod
    def from_edges(
        cls,
        o: np.ndarray,
        d: np.ndarray,
        w: np.ndarray,
        nodes: np.ndarray | None = None,
        drop_self_loops: bool = False,
    ) -> FlowGraph:
        """Build the graph from edge arrays (origin ids, destination ids, weights).

        ``nodes`` adds regions without any edge (they become dangling and isolated); when given, every
        edge endpoint must be among them. Duplicate (o, d) pairs are summed; edges with weight 0 are
        ignored; negative or non-finite weights raise ``ValueError``.
        """
        o = np.asarray(o, dtype=np.int64).ravel()
        d = np.asarray(d, dtype=np.int64).ravel()
        w = np.asarray(w, dtype=np.float64).ravel()
        if not (o.size == d.size == w.size):
            raise ValueError(f"edge arrays differ in length: o={o.size} d={d.size} w={w.size}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("edge weights must be finite and non-negative")
        if nodes is None:
            node_ids = np.unique(np.concatenate([o, d]))
        else:
            node_ids = np.unique(np.asarray(nodes, dtype=np.int64))
            endpoints = np.unique(np.concatenate([o, d]))
            unknown = np.setdiff1d(endpoints, node_ids, assume_unique=True)
            if unknown.size:
                raise ValueError(f"{unknown.size} edge endpoints not in nodes, e.g. {unknown[:5].tolist()}")
        keep = w > 0
        if drop_self_loops:
            keep &= o != d
        n = node_ids.size
        oi = np.searchsorted(node_ids, o[keep])
        di = np.searchsorted(node_ids, d[keep])
        mat = sp.coo_matrix((w[keep], (oi, di)), shape=(n, n)).tocsr()  # sums duplicates
        mat.sum_duplicates()
        mat.sort_indices()
        indptr = mat.indptr.astype(np.int64)
        indices = mat.indices.astype(np.int64)
        weights = mat.data.astype(np.float64)
        deg = np.diff(indptr)
        rows = np.repeat(np.arange(n, dtype=np.int64), deg)
        row_sum = np.add.reduceat(weights, indptr[:-1][deg > 0]) if weights.size else np.empty(0)
        totals = np.zeros(n)
        totals[deg > 0] = row_sum
        probs = weights / totals[rows] if weights.size else weights
        cumprobs = _segment_cumsum(probs, indptr)
        last = indptr[1:][deg > 0] - 1
        cumprobs[last] = 1.0  # exact row end, so a uniform u < 1 always lands inside the row
        sampler = _build_alias(probs, indices, indptr)
        return cls(node_ids, indptr, indices, weights, probs, cumprobs, sampler)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        weight: str = "daily_avg",
        drop_self_loops: bool = False,
        nodes: np.ndarray | None = None,
    ) -> FlowGraph:
        """Build from a pandas ``flows`` frame (``o_region``, ``d_region`` and a weight column)."""
        return cls.from_edges(
            frame["o_region"].to_numpy(), frame["d_region"].to_numpy(), frame[weight].to_numpy(),
            nodes=nodes, drop_self_loops=drop_self_loops,
        )


def _segment_cumsum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every CSR row."""
    if values.size == 0:
        return values.copy()
    total = np.cumsum(values)
    deg = np.diff(indptr)
    before = np.concatenate([[0.0], total])[indptr[:-1]]  # running total at each row start
    return total - np.repeat(before, deg)


def _build_alias(probs: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> AliasSampler:
    """Vectorised alias-table construction for every row at once.

    Rounds of Vose's pairing, all rows together: in each round, every "small" slot (q = p·deg < 1)
    of a row is paired with the "large" slot (q ≥ 1) whose surplus interval (row prefix sums of
    q − 1) contains the start of the small slot's deficit interval (prefix sums of 1 − q). The small
    slot is then final (keeps q, alias = that large); each large loses the deficits paired with it
    and may turn small (at most one straddling deficit per large keeps its q positive). Rounds repeat
    on the remaining slots; leftovers of rows with only one kind (float round-off) get q = 1.
    """
    n = indptr.size - 1
    e_count = probs.size
    deg = np.diff(indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), deg)
    q = probs * deg[rows]
    accept = np.ones(e_count)
    alias = np.arange(e_count, dtype=np.int64)
    active = np.arange(e_count, dtype=np.int64)
    for _ in range(e_count + 1):
        if active.size == 0:
            break
        a_rows = rows[active]
        small = q[active] < 1.0
        has_small = np.bincount(a_rows[small], minlength=n) > 0
        has_large = np.bincount(a_rows[~small], minlength=n) > 0
        both = has_small & has_large
        done = ~both[a_rows]
        accept[active[done]] = 1.0  # round-off leftovers (q ≈ 1): keep their own slot
        active = active[~done]
        if active.size == 0:
            break
        a_rows = rows[active]
        small = q[active] < 1.0
        s_idx, l_idx = active[small], active[~small]
        s_rows, l_rows = rows[s_idx], rows[l_idx]
        deficit = 1.0 - q[s_idx]
        surplus = q[l_idx] - 1.0
        # Row-local prefix sums through global cumsums (items are ordered by row).
        d_start = _exclusive_segment_cumsum(deficit, s_rows)
        s_end = _exclusive_segment_cumsum(surplus, l_rows) + surplus
        s_total = np.zeros(n)
        np.add.at(s_total, l_rows, surplus)
        scale = np.where(s_total > 0, s_total, 1.0)
        # Keys offset by the row index keep one searchsorted over all rows.
        l_key = l_rows + s_end / scale[l_rows]
        s_key = s_rows + d_start / scale[s_rows]
        j = np.searchsorted(l_key, s_key, side="right")
        first_l = np.searchsorted(l_rows, s_rows, side="left")
        last_l = np.searchsorted(l_rows, s_rows, side="right") - 1
        j = np.clip(j, first_l, last_l)
        partner = l_idx[j]
        accept[s_idx] = q[s_idx]
        alias[s_idx] = partner
        q[l_idx] = np.maximum(q[l_idx] - np.bincount(j, weights=deficit, minlength=l_idx.size), 0.0)
        active = l_idx
    else:  # pragma: no cover - every round finalises at least one slot per processed row
        raise RuntimeError("alias construction did not converge")
    # Packed sampler arrays with a sentinel state n and a sentinel slot e_count.
    bits = max(int(n).bit_length(), 1)  # positions 0..n inclusive
    acc_bits = min(64 - 2 * bits, 32)
    if acc_bits < 16:
        raise ValueError(f"graph too large for packed alias tables: {n} nodes")
    start = np.empty(n + 1, dtype=np.uint64)
    start[:n] = indptr[:-1]
    degu = np.empty(n + 1, dtype=np.uint64)
    degu[:n] = deg
    sink = np.flatnonzero(deg == 0)
    start[sink] = e_count
    degu[sink] = 1
    start[n] = e_count
    degu[n] = 1
    full = accept >= 1.0
    alias[full] = np.flatnonzero(full)  # a full slot's "rejection" leads to its own target
    top = (1 << acc_bits) - 1
    threshold = np.minimum(np.rint(accept * float(1 << acc_bits)), top).astype(np.uint64)
    threshold = np.append(threshold, np.uint64(top))
    target = np.append(indices, n).astype(np.uint64)
    alias_target = np.append(indices[alias], n).astype(np.uint64)
    word = (threshold << np.uint64(64 - acc_bits)) | (alias_target << np.uint64(bits)) | target
    return AliasSampler(start, degu, word, bits, acc_bits, alias, accept)


def _exclusive_segment_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of ``values`` restarting at each new value of sorted ``groups``."""
    if values.size == 0:
        return values.copy()
    total = np.cumsum(values) - values
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    counts = np.diff(np.r_[first, values.size])
    return total - np.repeat(total[first], counts)


def alias_probabilities(graph: FlowGraph) -> np.ndarray:
    """(E,) transition probabilities implied by the alias tables (equal to ``graph.probs``)."""
    s = graph.sampler
    deg = graph.out_degree[graph.edge_rows].astype(np.float64)
    accept = (s.word[:-1] >> np.uint64(64 - s.acc_bits)) / float(1 << s.acc_bits)  # as packed (quantised)
    accept[s.alias_edge == np.arange(accept.size)] = 1.0
    mass = accept / deg
    np.add.at(mass, s.alias_edge, (1.0 - accept) / deg)
    return mass


def _start_positions(graph: FlowGraph, walks_per_node: int, rng: np.random.Generator) -> np.ndarray:
    starts = np.repeat(np.arange(graph.n_nodes, dtype=np.int64), walks_per_node)
    return rng.permutation(starts)


def _uniform32(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` uniform uint32 values, two per 64-bit draw (half the cost of ``rng.random``)."""
    return rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)[:size]


def _first_order_step(s: AliasSampler, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Next position of every walker (the sentinel stays the sentinel)."""
    prod = _uniform32(rng, pos.size).astype(np.uint64)
    prod *= s.deg[pos]
    e = prod >> np.uint64(32)
    e += s.start[pos]
    word = s.word[e.view(np.int64)]
    # The 32-bit remainder moved to the top bits compares directly with the threshold in the word's
    # top acc_bits (ties in those bits, probability 2^-acc_bits, fall to the lower bits).
    prod <<= np.uint64(32)
    shift = np.multiply(prod >= word, np.uint64(s.bits), dtype=np.uint64)  # rejected -> alias
    word >>= shift
    word &= np.uint64((1 << s.bits) - 1)
    return word.view(np.int64)


def _searchsorted_step(graph: FlowGraph, key: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """First-order step by binary search in the row-offset cumulative probabilities."""
    n = graph.n_nodes
    live = pos < n
    live[live] &= ~graph.dangling[pos[live]]
    nxt = np.full(pos.size, n, dtype=np.int64)
    p = pos[live]
    e = np.searchsorted(key, p + rng.random(p.size), side="right")
    # Round-off of r + u can cross a row boundary: clamp into the row.
    e = np.clip(e, graph.indptr[p], graph.indptr[p + 1] - 1)
    nxt[live] = graph.indices[e]
    return nxt


def random_walks(
    graph: FlowGraph,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    p: float = 1.0,
    q: float = 1.0,
    method: Literal["alias", "searchsorted"] = "alias",
) -> np.ndarray:
    """Weighted random walks from every node, vectorised over walkers.

    Returns an (N·walks_per_node, walk_length) int64 array of region ids; a walk reaching a dangling
    node stops there and the rest of its row is ``-1``. Each node starts ``walks_per_node`` walks; the
    start order is shuffled by ``seed``. Deterministic per (graph, arguments, seed). ``p``/``q`` are the
    node2vec return/in-out parameters (see the module docstring); ``method`` picks the first-order
    sampler (identical distribution, different random streams). The result is Fortran-ordered
    (time-major in memory); use ``np.ascontiguousarray`` where row-major layout matters.
    """
    if walks_per_node < 1 or walk_length < 1:
        raise ValueError("walks_per_node and walk_length must be >= 1")
    if not (p > 0 and q > 0 and np.isfinite(p) and np.isfinite(q)):
        raise ValueError("p and q must be positive and finite")
    if method not in ("alias", "searchsorted"):
        raise ValueError(f"unknown method {method!r}")
    rng = np.random.default_rng(seed)
    n = graph.n_nodes
    starts = _start_positions(graph, walks_per_node, rng)
    ids = np.append(graph.node_ids, PAD)  # sentinel position n maps to the padding value
    second_order = not (p == 1.0 and q == 1.0)
    if method == "searchsorted":
        key = graph.cumprobs + graph.edge_rows  # row r occupies (r, r+1]: one sorted array for all rows
        step = lambda pos: _searchsorted_step(graph, key, pos, rng)  # noqa: E731
    else:
        step = lambda pos: _first_order_step(graph.sampler, pos, rng)  # noqa: E731
    if second_order:
        edge_keys = graph.edge_rows * (n + 1) + graph.indices  # sorted: CSR rows sorted by column
        bias = (1.0 / p, 1.0, 1.0 / q)
    # Time-major storage: each step writes one contiguous row segment; the caller gets the
    # (walkers, steps) transposed view, which avoids a strided transpose copy (~25% of the run time).
    out = np.empty((walk_length, starts.size), dtype=np.int64)
    for b in range(0, starts.size, _BLOCK):
        pos = starts[b : b + _BLOCK]
        rows = out[:, b : b + pos.size]
        np.take(ids, pos, out=rows[0])
        prev = None
        for t in range(1, walk_length):
            if second_order and prev is not None:
                nxt = _biased_step(graph, step, edge_keys, bias, prev, pos, rng)
            else:
                nxt = step(pos)
            prev, pos = pos, nxt
            np.take(ids, pos, out=rows[t])
    return out.T


def _biased_step(
    graph: FlowGraph,
    step,
    edge_keys: np.ndarray,
    bias: tuple[float, float, float],
    prev: np.ndarray,
    pos: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """node2vec step by rejection: propose first-order, accept with probability bias / max bias."""
    n = graph.n_nodes
    inv_p, one, inv_q = bias
    top = max(bias)
    nxt = np.empty_like(pos)
    todo = np.arange(pos.size)
    for _ in range(_MAX_REJECTION_ROUNDS):
        cand = step(pos[todo])
        t = prev[todo]
        stopped = (cand == n) | (t == n)
        key = t * (n + 1) + cand
        k = np.minimum(np.searchsorted(edge_keys, key), max(edge_keys.size - 1, 0))
        linked = edge_keys[k] == key if edge_keys.size else np.zeros(key.size, dtype=bool)
        alpha = np.where(cand == t, inv_p, np.where(linked, one, inv_q))
        ok = stopped | (rng.random(todo.size) * top < alpha)
        nxt[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return nxt
    raise RuntimeError("node2vec rejection sampling did not finish; p or q too extreme")


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
    """Plain-Python reference walker (one loop per walker and per step): benchmark/test baseline only.

    Same semantics as ``random_walks`` (``-1`` padding, shuffled starts, node2vec rejection) with
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
