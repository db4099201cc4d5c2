"""Flow-walk corpus: executor generation (the stage's path) vs the previous driver path, same process.

Usage::

    PYTHONPATH=src python benchmarks/flow_walks.py [--nodes 10000] [--out-degree 50] [--walks-per-node 10]
        [--walk-length 40] [--partitions 4] [--master local[2]] [--python-starts 2000] [--seed 42]

Builds a seeded gravity-like sparse graph (random points and masses; each node sends flow to its
``out-degree`` nearest neighbours and a few random far nodes, weight m_o·m_d / (d + d0)², 1% of nodes
dangling), stores it as a ``flows`` Parquet table (one row per OD cell, untimed) and produces the
local walk corpus gensim trains from, two ways, from the same Spark DataFrame of OD sums:

* driver (before): ``toPandas()`` of the OD sums → ``FlowGraph`` → the previous vectorised walker
  (one numpy Generator for all walks, kept here as the baseline) → the corpus file written by the
  driver. The driver holds every walk (N·W·L int64) and the per-pair pandas frame.
* executors (now): the OD sums as Arrow arrays → ``FlowGraph`` → ``spark_walk_corpus`` (alias
  tables broadcast, walks in ``mapInArrow``, Spark's text writer) → the parts concatenated into the
  local file. The driver holds O(N + E) arrays only.

Each path runs ``--repeats`` times (best reported) and once more under ``tracemalloc`` for the
driver's peak Python/numpy allocation. Checks: the executor corpus has S·W lines (S = nodes with
out-flow) and is byte-identical to the driver's ``random_walks`` (same per-walk streams), its
transition frequencies match the exact probabilities and the plain-Python reference walker's
(max |difference| over edges whose source has ≥ ``--min-row-count`` transitions). Walker throughput
on one core: the current vectorised walker (per-walk counter-based streams), the previous one and
the plain-Python walker (on ``--python-starts`` start nodes; its rate is per step).

Ends with one ``key=value`` line; ``ok=1`` when the corpus is identical and complete, no transition
left the graph and the statistics agree (max_transition_diff ≤ --max-diff).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from landuse.features.walks import (
    PAD,
    FlowGraph,
    _first_order_step,
    random_walks,
    spark_walk_corpus,
    walk_tables,
)
from landuse.features.word2vec import concat_text_parts, write_walk_corpus
from landuse.storage import remove_tree

# The reference walker is test/benchmark code (tests/support): run as a script, the repository root
# is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.walk_reference import python_adjacency, python_random_walks, transition_statistics  # noqa: E402

_BLOCK = 1 << 14


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


def previous_random_walks(graph: FlowGraph, walks_per_node: int, walk_length: int, seed: int) -> np.ndarray:
    """The walker before per-walk streams (first-order): one numpy Generator draws for all walkers."""
    rng = np.random.default_rng(seed)
    starts = rng.permutation(np.repeat(np.arange(graph.n_nodes, dtype=np.int64), walks_per_node))
    ids = np.append(graph.node_ids, PAD)
    sampler = graph.sampler
    out = np.empty((walk_length, starts.size), dtype=np.int64)
    for b in range(0, starts.size, _BLOCK):
        pos = starts[b : b + _BLOCK]
        rows = out[:, b : b + pos.size]
        np.take(ids, pos, out=rows[0])
        for t in range(1, walk_length):
            u = rng.bit_generator.random_raw((pos.size + 1) // 2).view(np.uint32)[: pos.size].astype(np.uint64)
            pos = _first_order_step(sampler, pos, u)
            np.take(ids, pos, out=rows[t])
    return out.T


def steps_taken(walks: np.ndarray) -> int:
    """Transitions in a walk corpus (padding excluded)."""
    lengths = (walks != PAD).sum(axis=1)
    return int(np.maximum(lengths - 1, 0).sum())


def read_corpus(path: Path, walk_length: int) -> np.ndarray:
    """A corpus file back as a (lines, walk_length) padded array (for the transition statistics)."""
    rows = [np.array(line.split(), dtype=np.int64) for line in path.read_text().splitlines()]
    out = np.full((len(rows), walk_length), PAD, dtype=np.int64)
    for k, row in enumerate(rows):
        out[k, : row.size] = row
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both corpus paths and the walker comparison, print the figures, return 0 when ok."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--out-degree", type=int, default=50)
    parser.add_argument("--walks-per-node", type=int, default=10)
    parser.add_argument("--walk-length", type=int, default=40)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--python-starts", type=int, default=2000)
    parser.add_argument("--min-row-count", type=int, default=300)
    parser.add_argument("--max-diff", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path; the best is reported")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    for key in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS"):
        os.environ.setdefault(key, "true")

    from pyspark.sql import functions as F

    from landuse.config import Config, SparkConfig, SpatialConfig
    from landuse.spark.session import build_session
    from landuse.stages.embeddings import collect_columns

    W, L, seed = args.walks_per_node, args.walk_length, args.seed
    t0 = time.perf_counter()
    graph = gravity_graph(args.nodes, args.out_degree, seed)
    starters = int(walk_tables(graph).starters.size)
    print(f"graph: {graph.n_nodes} nodes, {graph.n_edges} edges, {graph.dangling.sum()} dangling, "
          f"built in {time.perf_counter() - t0:.2f}s")
    tmp = Path(tempfile.mkdtemp(prefix="flow-walks-bench-"))
    config = Config(name="bench", work_dir=tmp / "work",
                    spark=SparkConfig(app_name="flow-walks-bench", master=args.master,
                                      shuffle_partitions=args.partitions, driver_memory="4g"),
                    spatial=SpatialConfig(engine="auto"))
    spark = build_session(config)
    import pandas as pd

    edges = pd.DataFrame({"o_region": graph.node_ids[graph.edge_rows], "d_region": graph.node_ids[graph.indices],
                          "daily_avg": graph.weights})
    spark.createDataFrame(edges).repartition(args.partitions).write.parquet(str(tmp / "flows"))
    flows = spark.read.parquet(str(tmp / "flows"))
    od = flows.groupBy("o_region", "d_region").agg(F.sum("daily_avg").cast("double").alias("w"))

    def driver_path(out: Path) -> dict[str, float]:
        times = {}
        t = time.perf_counter()
        frame = od.toPandas()
        times["collect"] = time.perf_counter() - t
        t = time.perf_counter()
        g = FlowGraph.from_edges(frame["o_region"].to_numpy(np.int64), frame["d_region"].to_numpy(np.int64),
                                 frame["w"].to_numpy(float), nodes=graph.node_ids)
        times["graph"] = time.perf_counter() - t
        t = time.perf_counter()
        walks = previous_random_walks(g, W, L, seed)
        times["walk"] = time.perf_counter() - t
        t = time.perf_counter()
        write_walk_corpus(np.ascontiguousarray(walks), out)
        times["write"] = time.perf_counter() - t
        return times

    def executor_path(out: Path) -> dict[str, float]:
        times = {}
        t = time.perf_counter()
        cols = collect_columns(od)
        times["collect"] = time.perf_counter() - t
        t = time.perf_counter()
        g = FlowGraph.from_edges(cols["o_region"], cols["d_region"], cols["w"], nodes=graph.node_ids)
        times["graph"] = time.perf_counter() - t
        corpus = tmp / "corpus"
        t = time.perf_counter()
        lines = spark_walk_corpus(spark, g, str(corpus), W, L, seed, partitions=args.partitions)
        times["walk"] = time.perf_counter() - t
        t = time.perf_counter()
        times["lines"] = concat_text_parts(corpus, out)
        times["write"] = time.perf_counter() - t
        assert times["lines"] == lines
        remove_tree(corpus)
        return times

    results = {}
    for name, path_fn in (("driver", driver_path), ("executors", executor_path)):
        best = None
        for _ in range(args.repeats):
            times = path_fn(tmp / f"{name}.txt")
            times["total"] = times["collect"] + times["graph"] + times["walk"] + times["write"]
            best = times if best is None or times["total"] < best["total"] else best
        tracemalloc.start()
        path_fn(tmp / f"{name}-mem.txt")
        best["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        results[name] = best
        print(f"{name}: total {best['total']:.2f}s (collect {best['collect']:.2f}, graph {best['graph']:.2f}, "
              f"walks {best['walk']:.2f}, corpus file {best['write']:.2f}), driver peak {best['peak_mb']:.0f} MiB")

    # Checks: completeness and identity with the driver's walks under the same per-walk streams.
    corpus_file = tmp / "executors.txt"
    reference = tmp / "reference.txt"
    t0 = time.perf_counter()
    current = random_walks(graph, W, L, seed)
    vec_s = time.perf_counter() - t0
    write_walk_corpus(np.ascontiguousarray(current), reference)
    identical = reference.read_bytes() == corpus_file.read_bytes()
    lines = int(results["executors"]["lines"])
    complete = lines == starters * W
    print(f"executor corpus: {lines} lines (expected {starters * W}), identical to random_walks: {identical}")

    # Walker throughput on one core (walk generation only).
    steps = steps_taken(current)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        random_walks(graph, W, L, seed)
        vec_s = min(vec_s, time.perf_counter() - t0)
    prev_s = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        previous = previous_random_walks(graph, W, L, seed)
        prev_s = min(prev_s, time.perf_counter() - t0)
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(graph.node_ids, min(args.python_starts, graph.n_nodes), replace=False))
    adjacency = python_adjacency(graph)
    t0 = time.perf_counter()
    py_walks = python_random_walks(graph, W, L, seed=seed, start_ids=subset, adjacency=adjacency)
    py_s = time.perf_counter() - t0
    vec_rate, prev_rate = steps / vec_s, steps_taken(previous) / prev_s
    py_rate = steps_taken(py_walks) / py_s
    print(f"walkers (one core): current {vec_rate:,.0f} steps/s, previous {prev_rate:,.0f} steps/s, "
          f"python {py_rate:,.0f} steps/s")

    exec_stats = transition_statistics(read_corpus(corpus_file, L), graph)
    py_stats = transition_statistics(py_walks, graph)
    both = np.minimum(exec_stats.row_counts, py_stats.row_counts) >= args.min_row_count
    edge_mask = both[graph.edge_rows]
    diff = float(np.max(np.abs(exec_stats.empirical - py_stats.empirical)[edge_mask], initial=0.0))
    rows_compared = int(both.sum())
    exact_dev = exec_stats.max_abs_diff(args.min_row_count)
    off_graph = exec_stats.off_graph + py_stats.off_graph
    print(f"transitions: max |executors - python| = {diff:.4f} over {int(edge_mask.sum())} edges of {rows_compared} "
          f"rows; max |executors - exact| = {exact_dev:.4f}; off-graph {off_graph}")
    spark.stop()
    remove_tree(tmp)

    d, e = results["driver"], results["executors"]
    ok = identical and complete and off_graph == 0 and rows_compared > 0 and diff <= args.max_diff
    print(
        f"nodes={graph.n_nodes} edges={graph.n_edges} walks={lines} steps={steps} partitions={args.partitions} "
        f"master={args.master} driver_path_s={d['total']:.2f} executor_path_s={e['total']:.2f} "
        f"executor_vs_driver={d['total'] / e['total']:.2f} driver_walk_s={d['walk']:.2f} "
        f"executor_walk_s={e['walk']:.2f} driver_collect_s={d['collect']:.2f} executor_collect_s={e['collect']:.2f} "
        f"driver_peak_mb={d['peak_mb']:.0f} executor_driver_peak_mb={e['peak_mb']:.0f} "
        f"current_steps_per_s={vec_rate:.0f} previous_steps_per_s={prev_rate:.0f} python_steps_per_s={py_rate:.0f} "
        f"ratio={vec_rate / py_rate:.1f} max_transition_diff={diff:.4f} max_exact_diff={exact_dev:.4f} "
        f"identical={int(identical)} complete={int(complete)} peak_rss_mb={peak_rss_mb():.0f} ok={int(ok)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
