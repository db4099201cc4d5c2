"""Weighted random walks on the OD flow graph (the corpus behind the flow Word2Vec, H_flow).

The graph is held in CSR form over positions ``0..N-1`` (``FlowGraph.node_ids`` maps them back to
region ids); the transition probability from ``o`` to ``d`` is proportional to the flow weight
(row-normalised). Nothing here is ever N×N dense.

Sampling. The walker advances a block of walkers together, one Python iteration per step. Each step
draws the next node of every walker with an alias table (Walker/Vose), built once per graph by a
vectorised construction: O(1) gathers per walker-step. A per-step ``searchsorted`` on the
concatenated row-offset cumulative probabilities (``method="searchsorted"``) is kept as a second,
simpler sampler for checks; it is exact too but its binary search over all E edges costs about 5×
more per step.

Randomness. Every walk has its own counter-based stream (SplitMix64 keyed by seed, start region id
and walk index; :func:`walk_keys`), so a walk does not depend on which other walks are generated
with it, in which block, or on which executor. The corpus order is a seeded shuffle: line ``i`` is
walker ``π(i)`` of the S·W walkers from the S nodes with out-flow, π a keyed pseudo-random
permutation (:func:`corpus_permutation`), so each executor computes the walkers of its own range of
lines — no shuffle, no sort.

Where. :func:`random_walks` walks on the driver (tests, benchmarks); :func:`spark_walk_corpus`
broadcasts the packed alias tables (:class:`WalkTables`, O(N + E) integers) and generates the same
walks inside ``mapInArrow`` on the executors, writing them as a text corpus (one walk per line)
with Spark's text writer — the stage ``flow-embeddings`` uses that. Throughput is measured in
``benchmarks/flow_walks.py``. The plain-Python reference walker and the transition statistics that
check these walkers are test/benchmark code (``tests/support/walk_reference.py``).

Why hand-written: the walks follow flow *weights*, and each walk must be reproducible on its own
whichever executor or block generates it. The ready-made samplers (``torch_cluster`` / ``pyg-lib``
``random_walk`` behind PyG's ``Node2Vec``) take no edge weights and draw from one stream per call,
so they can give neither.

Dangling nodes (no out-flow) end a walk: the remaining positions are padded with ``-1``. Internally a
sentinel state ``N`` (with a self-loop) absorbs stopped walkers, so no per-step masking is needed.

Second-order (node2vec) bias: with ``p == q == 1`` the walk is first-order. Otherwise, for a walker
that came from ``t`` to ``v``, the candidate ``x`` (drawn first-order ∝ w(v, x)) is weighted by
``1/p`` when ``x == t``, ``1`` when the graph has an edge ``t → x`` and ``1/q`` otherwise. The biased
distribution is sampled exactly by rejection: propose first-order, accept with probability
``bias / max(1/p, 1, 1/q)``, re-propose the rejected walkers only (vectorised over them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

PAD = -1
_BLOCK = 1 << 14  # walkers per block: keeps the per-step temporaries in cache (walks do not depend on it)
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


# --- Counter-based randomness ---------------------------------------------------------------------
# Every walk owns a SplitMix64 stream keyed by (seed, start region id, walk index): draw ``c`` of a
# walk is ``mix64(key + c·γ)``. A walk is thereby a pure function of its key and the graph, so the
# same walks come out whichever walks are generated together, in whichever order, on whichever
# executor — the property the Spark corpus (:func:`spark_walk_corpus`) relies on.

_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64 increment (golden ratio)
_ORDER_SALT = 0x5851F42D4C957F2D  # separates the corpus permutation's keys from the walks' streams
_FEISTEL_ROUNDS = 4
_REJECT = 1 << 63  # counters of node2vec rejection draws, disjoint from the per-step counters 1..L
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser applied in place to a uint64 array (returned)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def walk_keys(seed: int, start_ids: np.ndarray, walk_index: np.ndarray) -> np.ndarray:
    """(B,) uint64 stream keys of the walks (start region id, walk index) under ``seed``."""
    start = np.ascontiguousarray(start_ids, dtype=np.int64).view(np.uint64)
    index = np.asarray(walk_index, dtype=np.int64).astype(np.uint64)
    key = np.full(start.shape, (int(seed) + _GAMMA) & _MASK64, dtype=np.uint64)
    _mix64(key)
    key ^= start
    key += np.uint64(_GAMMA)
    _mix64(key)
    key += (index + np.uint64(1)) * np.uint64(_GAMMA)
    return _mix64(key)


def corpus_permutation(numbers: np.ndarray, size: int, seed: int) -> np.ndarray:
    """π(numbers) for a keyed pseudo-random permutation π of ``0..size-1`` (int64 in, int64 out).

    A balanced Feistel network (4 rounds, SplitMix64 round function keyed by ``seed``) permutes the
    2h-bit integers, 4^h ≥ size; cycle-walking (re-applying it to values ≥ size, fewer than 4 times
    on average) restricts it to ``0..size-1``. Each value is computed on its own, so any range of
    corpus lines can be mapped to its walkers independently.
    """
    x = np.asarray(numbers, dtype=np.int64).astype(np.uint64)
    if x.size == 0:
        return np.empty(0, dtype=np.int64)
    if int(x.max()) >= size:
        raise ValueError(f"corpus_permutation: numbers must lie in 0..{size - 1}")
    half = max(1, (int(size - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    round_keys = [np.uint64(((int(seed) + _ORDER_SALT * (r + 1)) * _GAMMA) & _MASK64) for r in range(_FEISTEL_ROUNDS)]
    todo = np.arange(x.size)
    while todo.size:
        left, right = x[todo] >> np.uint64(half), x[todo] & mask
        for key in round_keys:
            left, right = right, left ^ (_mix64(right + key) & mask)
        x[todo] = (left << np.uint64(half)) | right
        todo = todo[x[todo] >= np.uint64(size)]
    return x.astype(np.int64)


def _draws(keys: np.ndarray, counter: int) -> np.ndarray:
    """Draw number ``counter`` of every walk: (B,) uniform uint64."""
    return _mix64(keys + np.uint64((counter * _GAMMA) & _MASK64))


def _step_uniforms(keys: np.ndarray, steps: int) -> np.ndarray:
    """(steps, B) uint64 holding 32-bit uniforms: both halves of draws 1..⌈steps/2⌉ of every walk."""
    half = (steps + 1) // 2
    h = keys[None, :] + (np.arange(1, half + 1, dtype=np.uint64) * np.uint64(_GAMMA))[:, None]
    _mix64(h)
    out = np.empty((2 * half, keys.size), dtype=np.uint64)
    np.right_shift(h, np.uint64(32), out=out[0::2])
    np.bitwise_and(h, _MASK32, out=out[1::2])
    return out[:steps]


# --- Walking --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WalkTables:
    """What a walker needs, as compact arrays (broadcast to the executors): O(N + E) integers.

    ``start``/``deg``/``word``/``bits`` are the packed alias tables of :class:`AliasSampler` (the
    per-edge float checks are left out); ``starters`` are the positions of the nodes with out-flow
    (the start nodes of the corpus; a walk from any other node has one token and carries no
    context); ``edge_keys`` (source · (N+1) + target, sorted) are needed only by node2vec walks.
    """

    node_ids: np.ndarray  # (N,) int64 region ids, sorted
    start: np.ndarray  # (N+1,) uint64
    deg: np.ndarray  # (N+1,) uint64
    word: np.ndarray  # (E+1,) uint64
    bits: int
    acc_bits: int
    starters: np.ndarray  # (S,) int64 positions with out-degree > 0
    edge_keys: np.ndarray  # (E,) int64, empty for first-order walks

    @property
    def n_nodes(self) -> int:
        """Number of nodes N (position N is the stopped-walker sentinel)."""
        return int(self.node_ids.size)

    @property
    def nbytes(self) -> int:
        """Size of the arrays: about 8·(3N + E) bytes, plus 8·E for node2vec."""
        return sum(a.nbytes for a in (self.node_ids, self.start, self.deg, self.word, self.starters, self.edge_keys))


def walk_tables(graph: FlowGraph, second_order: bool = False) -> WalkTables:
    """The :class:`WalkTables` of ``graph`` (``second_order``: include the edge keys for node2vec)."""
    s = graph.sampler
    n = graph.n_nodes
    edge_keys = graph.edge_rows * (n + 1) + graph.indices if second_order else np.empty(0, dtype=np.int64)
    return WalkTables(graph.node_ids, s.start, s.deg, s.word, s.bits, s.acc_bits,
                      np.flatnonzero(graph.out_degree > 0).astype(np.int64), edge_keys)


def _first_order_step(s: AliasSampler | WalkTables, pos: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Next position of every walker from its 32-bit uniform ``u`` (uint64, consumed in place).

    The sentinel stays the sentinel.
    """
    prod = u
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


def _searchsorted_step(graph: FlowGraph, key: np.ndarray, pos: np.ndarray, u: np.ndarray) -> np.ndarray:
    """First-order step by binary search in the row-offset cumulative probabilities."""
    n = graph.n_nodes
    live = pos < n
    live[live] &= ~graph.dangling[pos[live]]
    nxt = np.full(pos.size, n, dtype=np.int64)
    p = pos[live]
    e = np.searchsorted(key, p + u[live] * 2.0**-32, side="right")
    # Round-off of r + u can cross a row boundary: clamp into the row.
    e = np.clip(e, graph.indptr[p], graph.indptr[p + 1] - 1)
    nxt[live] = graph.indices[e]
    return nxt


def walk_ids(
    tables: WalkTables,
    start_pos: np.ndarray,
    keys: np.ndarray,
    walk_length: int,
    p: float = 1.0,
    q: float = 1.0,
    step=None,
) -> np.ndarray:
    """(walk_length, B) int64 region ids (time-major) of the walks with stream ``keys`` from
    positions ``start_pos``; ``-1`` after a dangling node. ``step(pos, u)`` overrides the alias
    sampler (the driver's ``searchsorted`` check)."""
    _check_walk_args(1, walk_length, p, q)
    step = step or (lambda pos, u: _first_order_step(tables, pos, u))
    ids = np.append(tables.node_ids, PAD)  # sentinel position n maps to the padding value
    second_order = not (p == 1.0 and q == 1.0)
    bias = (1.0 / p, 1.0, 1.0 / q)
    if second_order and tables.edge_keys.size == 0 and tables.word.size > 1:
        raise ValueError("node2vec walks need WalkTables built with second_order=True")
    start_pos = np.asarray(start_pos, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.uint64)
    # Time-major storage: each step writes one contiguous row segment; callers wanting walks as
    # rows take the transposed view, which avoids a strided transpose copy.
    out = np.empty((walk_length, start_pos.size), dtype=np.int64)
    for b in range(0, start_pos.size, _BLOCK):
        pos = start_pos[b : b + _BLOCK]
        key = keys[b : b + _BLOCK]
        rows = out[:, b : b + pos.size]
        np.take(ids, pos, out=rows[0])
        if walk_length < 2:
            continue
        # First-order steps read a precomputed table; node2vec uses it for step 1 only.
        uniforms = _step_uniforms(key, 1 if second_order else walk_length - 1)
        prev = None
        for t in range(1, walk_length):
            if second_order and prev is not None:
                nxt = _biased_step(tables, step, bias, prev, pos, key, t)
            else:
                nxt = step(pos, uniforms[t - 1])
            prev, pos = pos, nxt
            np.take(ids, pos, out=rows[t])
    return out


def _check_walk_args(walks_per_node: int, walk_length: int, p: float, q: float) -> None:
    if walks_per_node < 1 or walk_length < 1:
        raise ValueError("walks_per_node and walk_length must be >= 1")
    if not (p > 0 and q > 0 and np.isfinite(p) and np.isfinite(q)):
        raise ValueError("p and q must be positive and finite")


def corpus_walkers(tables: WalkTables, walks_per_node: int, seed: int,
                   lines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The walkers of corpus lines ``lines``: line ``i`` is walker ``j = π(i)``, walk ``j % W`` from
    node ``starters[j // W]`` (:func:`corpus_permutation` over the S·W walkers).

    Returns (start positions, start region ids, walk indices).
    """
    total = int(tables.starters.size) * int(walks_per_node)
    j = corpus_permutation(lines, total, seed)
    pos = tables.starters[j // walks_per_node]
    return pos, tables.node_ids[pos], j % walks_per_node


def random_walks(
    graph: FlowGraph,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    p: float = 1.0,
    q: float = 1.0,
    method: Literal["alias", "searchsorted"] = "alias",
) -> np.ndarray:
    """Weighted random walks from every node, vectorised over walkers (on the driver).

    Returns an (N·walks_per_node, walk_length) int64 array of region ids; a walk reaching a dangling
    node stops there and the rest of its row is ``-1``. Each node starts ``walks_per_node`` walks.
    Walk ``i`` from region ``s`` depends only on (graph, seed, s, i, p, q): its random numbers come
    from its own counter-based stream (:func:`walk_keys`). The first S·W rows (S = nodes with
    out-flow) are the corpus lines of :func:`spark_walk_corpus`, in the same (seeded, shuffled)
    order; the walks of the nodes without out-flow (a start node, then ``-1``) follow, by node.
    ``p``/``q`` are the node2vec return/in-out parameters (see the module docstring); ``method``
    picks the first-order sampler (identical distribution, different walks). The result is
    Fortran-ordered (time-major in memory); use ``np.ascontiguousarray`` where row-major layout
    matters.
    """
    _check_walk_args(walks_per_node, walk_length, p, q)
    if method not in ("alias", "searchsorted"):
        raise ValueError(f"unknown method {method!r}")
    second_order = not (p == 1.0 and q == 1.0)
    tables = walk_tables(graph, second_order)
    n_lines = int(tables.starters.size) * walks_per_node
    pos, _, index = corpus_walkers(tables, walks_per_node, seed, np.arange(n_lines))
    rest = np.setdiff1d(np.arange(graph.n_nodes, dtype=np.int64), tables.starters, assume_unique=True)
    pos = np.concatenate([pos, np.repeat(rest, walks_per_node)])
    index = np.concatenate([index, np.tile(np.arange(walks_per_node, dtype=np.int64), rest.size)])
    keys = walk_keys(seed, graph.node_ids[pos], index)
    step = None
    if method == "searchsorted":
        cum_key = graph.cumprobs + graph.edge_rows  # row r occupies (r, r+1]: one sorted array for all rows

        def step(pos: np.ndarray, u: np.ndarray) -> np.ndarray:
            return _searchsorted_step(graph, cum_key, pos, u)
    return walk_ids(tables, pos, keys, walk_length, p, q, step=step).T


def _biased_step(
    tables: WalkTables,
    step,
    bias: tuple[float, float, float],
    prev: np.ndarray,
    pos: np.ndarray,
    keys: np.ndarray,
    t: int,
) -> np.ndarray:
    """node2vec step ``t`` by rejection: propose first-order, accept with probability bias / max bias.

    Round ``r`` of step ``t`` uses the walk's draws ``_REJECT | t << 32 | r << 1`` (proposal) and
    ``… | 1`` (acceptance).
    """
    n = tables.n_nodes
    edge_keys = tables.edge_keys
    inv_p, one, inv_q = bias
    top = max(bias)
    nxt = np.empty_like(pos)
    todo = np.arange(pos.size)
    for r in range(_MAX_REJECTION_ROUNDS):
        counter = _REJECT | (t << 32) | (r << 1)
        key_todo = keys[todo]
        cand = step(pos[todo], _draws(key_todo, counter) >> np.uint64(32))
        prev_todo = prev[todo]
        stopped = (cand == n) | (prev_todo == n)
        key = prev_todo * (n + 1) + cand
        k = np.minimum(np.searchsorted(edge_keys, key), max(edge_keys.size - 1, 0))
        linked = edge_keys[k] == key if edge_keys.size else np.zeros(key.size, dtype=bool)
        alpha = np.where(cand == prev_todo, inv_p, np.where(linked, one, inv_q))
        accept = (_draws(key_todo, counter | 1) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        ok = stopped | (accept * top < alpha)
        nxt[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return nxt
    raise RuntimeError("node2vec rejection sampling did not finish; p or q too extreme")


# --- Walk corpus on the executors -----------------------------------------------------------------


def walk_lines(walks: np.ndarray) -> pa.Array:
    """Corpus lines of walks given as (B, L) region ids (any memory layout; ``-1`` padding).

    One line per walk with at least two nodes: its region ids separated by single spaces (a walk of
    one node — from an isolated or dangling region — carries no context and is dropped). Built
    with Arrow kernels, no Python loop per walk.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    walks = np.asarray(walks, dtype=np.int64)
    lengths = (walks != PAD).sum(axis=1)  # padding is always a suffix
    keep = lengths > 1
    rows = walks[keep]
    flat = rows[rows != PAD]  # row-major: each walk's ids stay contiguous and in order
    offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[keep], out=offsets[1:])
    tokens = pa.array(flat, type=pa.int64()).cast(pa.string())
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), tokens)
    return pc.binary_join(lists, " ").cast(pa.string())


def _walk_line_batches(batches, tables_bc, walks_per_node: int, walk_length: int, seed: int, p: float, q: float):
    """mapInArrow: corpus line numbers (``id`` of ``spark.range``) → the lines (``value``), in order."""
    import pyarrow as pa

    tables = tables_bc.value
    for batch in batches:
        lines = batch.column(0).to_numpy()
        if lines.size == 0:
            continue
        pos, start_ids, index = corpus_walkers(tables, walks_per_node, seed, lines)
        walks = walk_ids(tables, pos, walk_keys(seed, start_ids, index), walk_length, p, q)
        yield pa.RecordBatch.from_arrays([walk_lines(walks.T)], names=["value"])


def spark_walk_corpus(
    spark: SparkSession,
    graph: FlowGraph,
    directory: str,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    p: float = 1.0,
    q: float = 1.0,
    partitions: int | None = None,
) -> int:
    """Generate the walk corpus on the executors and write it as text into ``directory``.

    The graph's :class:`WalkTables` (O(N + E) integers) are broadcast once. ``spark.range`` numbers
    the ``S · walks_per_node`` corpus lines (S = nodes with out-flow) in ``partitions`` contiguous
    slices (default ``spark.sql.shuffle.partitions``); in ``mapInArrow`` each partition maps its
    line numbers to walkers (:func:`corpus_walkers`), walks them vectorised (Arrow batches of
    ``arrow_batch_size`` lines) and emits one line per walk — no shuffle, no sort, no walk on the
    driver. Spark's text writer stores partition ``k`` uncompressed in the part file numbered ``k``:
    concatenating the parts in that order gives the corpus in one fixed order whatever the
    partitioning, with exactly the walks (and order) of :func:`random_walks`; from a node with
    out-flow every walk has at least two nodes, so every walker makes a line.

    Returns the number of lines written, ``S · walks_per_node``.
    """
    _check_walk_args(walks_per_node, walk_length, p, q)
    second_order = not (p == 1.0 and q == 1.0)
    tables = walk_tables(graph, second_order)
    total = int(tables.starters.size) * int(walks_per_node)
    if total == 0:
        raise ValueError("the flow graph has no edge: no walk to generate")
    parts = max(1, min(int(partitions or spark.conf.get("spark.sql.shuffle.partitions") or "200"), total))  # Spark default 200
    bc = spark.sparkContext.broadcast(tables)
    seed, walks_per_node, walk_length, p, q = int(seed), int(walks_per_node), int(walk_length), float(p), float(q)
    try:
        lines = spark.range(0, total, numPartitions=parts).mapInArrow(
            lambda it: _walk_line_batches(it, bc, walks_per_node, walk_length, seed, p, q), "value string"
        )
        lines.write.mode("overwrite").option("compression", "none").text(str(directory))
    finally:
        bc.destroy()
    return total

