"""Random-walk throughput: vectorised walker vs the plain-Python reference walker, same process.

Usage::

    PYTHONPATH=src python benchmarks/flow_walks.py [--nodes 10000] [--out-degree 50] [--walks-per-node 10]
        [--walk-length 40] [--python-starts 1000] [--seed 42]

Builds a seeded gravity-like sparse graph (random points and masses; each node sends flow to its
``out-degree`` nearest neighbours and a few random far nodes, weight m_o·m_d / (d + d0)², 1% of nodes
dangling), walks it with ``random_walks`` from every node, and walks it with
``python_random_walks`` from a random subset of ``--python-starts`` start nodes (same walks per node
and length; its rate is per step, so the subset extrapolates linearly). Graph building and the Python
adjacency lists are timed apart, not counted as walking. Transition statistics: the max |empirical −
empirical| between the two walkers over edges whose source has ≥ ``--min-row-count`` observed
transitions in both corpora, and each walker's max deviation from the exact probabilities.

Ends with one ``key=value`` line; ``ok=1`` when ratio ≥ 50, no transition left the graph and the
statistics agree (max_transition_diff ≤ --max-diff).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
from scipy.spatial import cKDTree

from landuse.features.walks import FlowGraph, python_adjacency, python_random_walks, random_walks, transition_statistics


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def gravity_graph(nodes: int, out_degree: int, seed: int) -> FlowGraph:
    """Seeded sparse gravity-like flow graph with non-contiguous region ids."""
    rng = np.random.default_rng(seed)
    xy = rng.random((nodes, 2))
    mass = rng.lognormal(0.0, 1.0, nodes)
    near = max(out_degree - 5, 1)
    dist, nb = cKDTree(xy).query(xy, k=near + 1)
    dist, nb = dist[:, 1:], nb[:, 1:]
    far = rng.integers(0, nodes, (nodes, out_degree - near))
    far_d = np.linalg.norm(xy[far] - xy[:, None, :], axis=2)
    dest = np.concatenate([nb, far], axis=1)
    d = np.concatenate([dist, far_d], axis=1)
    weight = mass[:, None] * mass[dest] / (d + 0.01) ** 2
    origin = np.repeat(np.arange(nodes), dest.shape[1])
    dangling = rng.random(nodes) < 0.01
    keep = ~dangling[origin]
    ids = np.sort(rng.choice(nodes * 10, nodes, replace=False)).astype(np.int64)  # non-contiguous
    return FlowGraph.from_edges(ids[origin[keep]], ids[dest.ravel()[keep]], weight.ravel()[keep], nodes=ids)


def steps_taken(walks: np.ndarray) -> int:
    """Transitions in a walk corpus (padding excluded)."""
    lengths = (walks != -1).sum(axis=1)
    return int(np.maximum(lengths - 1, 0).sum())


def main(argv: list[str] | None = None) -> int:
    """Run both walkers, print throughputs and the comparison, return 0 when the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--out-degree", type=int, default=50)
    parser.add_argument("--walks-per-node", type=int, default=10)
    parser.add_argument("--walk-length", type=int, default=40)
    parser.add_argument("--python-starts", type=int, default=2000)
    parser.add_argument("--min-row-count", type=int, default=300)
    parser.add_argument("--max-diff", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=3, help="vectorised runs; the best is reported")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    graph = gravity_graph(args.nodes, args.out_degree, args.seed)
    build_s = time.perf_counter() - t0
    print(f"graph: {graph.n_nodes} nodes, {graph.n_edges} edges, {graph.dangling.sum()} dangling, built in {build_s:.2f}s")

    vec_s = float("inf")
    for r in range(args.repeats):
        t0 = time.perf_counter()
        walks = random_walks(graph, args.walks_per_node, args.walk_length, seed=args.seed + r)
        vec_s = min(vec_s, time.perf_counter() - t0)
    vec_steps = steps_taken(walks)
    vec_rate = vec_steps / vec_s

    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(graph.node_ids, min(args.python_starts, graph.n_nodes), replace=False))
    t0 = time.perf_counter()
    adjacency = python_adjacency(graph)
    adj_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    py_walks = python_random_walks(
        graph, args.walks_per_node, args.walk_length, seed=args.seed, start_ids=subset, adjacency=adjacency
    )
    py_s = time.perf_counter() - t0
    py_steps = steps_taken(py_walks)
    py_rate = py_steps / py_s
    ratio = vec_rate / py_rate
    print(f"vectorised: {vec_steps} steps in {vec_s:.3f}s (best of {args.repeats}) = {vec_rate:,.0f} steps/s")
    print(
        f"python: {py_steps} steps from {subset.size} of {graph.n_nodes} start nodes in {py_s:.3f}s = "
        f"{py_rate:,.0f} steps/s (subset, extrapolated per step; adjacency lists {adj_s:.2f}s not counted); "
        f"full run would take ~{vec_steps / py_rate:.0f}s"
    )

    vec_stats = transition_statistics(walks, graph)
    py_stats = transition_statistics(py_walks, graph)
    both = np.minimum(vec_stats.row_counts, py_stats.row_counts) >= args.min_row_count
    edge_mask = both[np.repeat(np.arange(graph.n_nodes), graph.out_degree)]
    diff = float(np.max(np.abs(vec_stats.empirical - py_stats.empirical)[edge_mask], initial=0.0))
    rows_compared = int(both.sum())
    vec_dev = vec_stats.max_abs_diff(args.min_row_count)
    py_dev = py_stats.max_abs_diff(args.min_row_count)
    off_graph = vec_stats.off_graph + py_stats.off_graph
    print(
        f"transitions: max |vectorised - python| = {diff:.4f} over {int(edge_mask.sum())} edges of {rows_compared} "
        f"rows with >= {args.min_row_count} transitions in both; max |empirical - exact|: vectorised {vec_dev:.4f}, "
        f"python {py_dev:.4f}; off-graph transitions {off_graph}"
    )
    ok = ratio >= 50 and off_graph == 0 and rows_compared > 0 and diff <= args.max_diff
    print(
        f"nodes={graph.n_nodes} edges={graph.n_edges} steps={vec_steps} python_steps={py_steps} "
        f"vectorised_s={vec_s:.3f} python_s={py_s:.3f} vectorised_steps_per_s={vec_rate:.0f} "
        f"python_steps_per_s={py_rate:.0f} ratio={ratio:.1f} max_transition_diff={diff:.4f} "
        f"rows_compared={rows_compared} peak_rss_mb={peak_rss_mb():.0f} ok={int(ok)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
