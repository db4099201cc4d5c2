"""One HGCN training epoch on a large synthetic graph: three-head HGCN vs one-head GCN_adj, same process.

Usage::

    PYTHONPATH=src python benchmarks/hgcn_epoch.py [--nodes 100000] [--edges 1000000] [--features 200]
        [--classes 8] [--reps 5] [--seed 42]

Builds a seeded graph of ``--nodes`` nodes on a jittered grid: adjacency edges between grid
neighbours (symmetric) and ``--edges`` flow edges drawn with a distance-decaying destination
choice, plus random features and Dirichlet label distributions. Operators are built once (timed
apart). An epoch is what the trainer does per epoch: a training step (forward, masked KL loss,
backward, Adam step on 70% of the nodes) and an evaluation forward under no_grad. The variants run
interleaved (GCN_adj, Adj-Tri-GCN, None, repeated ``--reps`` times) so machine load hits all alike;
medians are reported. ``ratio`` = HGCN epoch / GCN_adj epoch (the issue asks for at most 2).

Ends with one ``key=value`` line; ``ok=1`` when ratio <= 2.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from landuse.data.operators import adjacency_operator, flow_operators
from landuse.models.hgcn import HGCN
from landuse.training.metrics import kl_loss


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def synthetic_graph(nodes: int, edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(adjacency edge_index [2, Ea], flow edge_index [2, E], flow weight [E]) on a square grid."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(nodes)))
    ids = np.arange(nodes)
    row, col = ids // side, ids % side
    right = ids[(col + 1 < side) & (ids + 1 < nodes)]
    down = ids[ids + side < nodes]
    a = np.concatenate([right, down])
    b = np.concatenate([right + 1, down + side])
    adjacency = torch.from_numpy(np.stack([np.concatenate([a, b]), np.concatenate([b, a])]))
    origin = rng.integers(0, nodes, edges)
    # destinations mostly near the origin (geometric offsets on the grid), some anywhere
    offset_r = np.rint(rng.laplace(0, 6, edges)).astype(np.int64)
    offset_c = np.rint(rng.laplace(0, 6, edges)).astype(np.int64)
    dest = np.clip(row[origin] + offset_r, 0, side - 1) * side + np.clip(col[origin] + offset_c, 0, side - 1)
    far = rng.random(edges) < 0.1
    dest[far] = rng.integers(0, nodes, int(far.sum()))
    dest = np.minimum(dest, nodes - 1)
    weight = torch.from_numpy(rng.gamma(1.0, 5.0, edges).astype(np.float32))
    return adjacency, torch.from_numpy(np.stack([origin, dest])), weight


def epoch(model: HGCN, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          ops: dict[str, torch.Tensor], train: torch.Tensor) -> float:
    """One trainer epoch; returns its wall time in seconds."""
    t0 = time.perf_counter()
    model.train()
    optimiser.zero_grad()
    loss = kl_loss(model(x, ops)[train], y[train])
    loss.backward()
    optimiser.step()
    model.eval()
    with torch.no_grad():
        model(x, ops)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    adjacency, flow_index, flow_weight = synthetic_graph(args.nodes, args.edges, args.seed)
    t0 = time.perf_counter()
    ops = {"adj": adjacency_operator(adjacency, args.nodes)}
    ops["out"], ops["in"] = flow_operators(flow_index, flow_weight, args.nodes)
    build_s = time.perf_counter() - t0
    x = torch.randn(args.nodes, args.features)
    y = torch.distributions.Dirichlet(torch.ones(args.classes)).sample((args.nodes,))
    train = torch.randperm(args.nodes)[: int(0.7 * args.nodes)]
    variants = ("GCN_adj", "Adj-Tri-GCN", "None")
    models = {v: HGCN(args.features, args.classes, variant=v) for v in variants}
    optimisers = {v: torch.optim.Adam(m.parameters(), lr=0.005, weight_decay=5e-4) for v, m in models.items()}
    for v in variants:  # warm-up: allocator, transpose caches
        epoch(models[v], optimisers[v], x, y, ops, train)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.reps):
        for v in variants:
            times[v].append(epoch(models[v], optimisers[v], x, y, ops, train))
    med = {v: float(np.median(t)) for v, t in times.items()}
    ratio = med["Adj-Tri-GCN"] / med["GCN_adj"]
    print(f"graph: {args.nodes} nodes, {adjacency.shape[1]} adjacency edges, {flow_index.shape[1]} flow edges, "
          f"{args.features} features; operators built in {build_s:.2f} s; torch threads {torch.get_num_threads()}")
    for v in variants:
        print(f"  {v:<12} epoch median {med[v]:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times[v])})")
    print(f"nodes={args.nodes} edges={flow_index.shape[1]} hgcn_epoch_s={med['Adj-Tri-GCN']:.3f} "
          f"gcn_adj_epoch_s={med['GCN_adj']:.3f} mlp_epoch_s={med['None']:.3f} ratio={ratio:.2f} "
          f"build_s={build_s:.2f} peak_rss_mb={peak_rss_mb():.0f} ok={int(ratio <= 2)}")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
