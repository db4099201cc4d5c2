"""Inductive vs transductive: regions held out of training entirely, scored by the served model.

Usage::

    PYTHONPATH=src python benchmarks/inductive.py [--config conf/synthetic_shenzhen.yaml] [--repeats 5]
        [--holdout 0.2] [--variants Adj-Tri-GCN,SAGE_adj2] [--set key=value ...]

Per repeat r (seed + r), a random ``--holdout`` share of ALL regions is held out. The remaining
regions' labelled nodes are split into train / validation in the config's train : val ratio; the
held-out labelled regions are the test set, touched once per model:

* **transductive** — the usual protocol: the whole graph (held-out regions included, unlabelled
  for the loss) during training, the epoch chosen on validation KL, test KL on the held-out regions;
* **inductive** — the model trains on the graph induced by the kept regions only (the held-out
  regions, their features and every edge touching them removed), the epoch chosen on the same
  validation nodes; the model is then saved as the registry saves it (spec + safetensors), loaded
  back and scores the FULL region table (features and edge lists, exactly what a REST caller
  sends) through :func:`landuse.serving.pyfunc.score`; KL on the held-out regions.

The node features come from the pipeline (``landuse pipeline`` runs first and skips unchanged
stages); the unsupervised embeddings saw every region, as in GraphSAGE's inductive setting — only
the supervised graph model is inductive here. Ends with one ``key=value`` line: the mean test KL of
both per variant, their ratio, and ``ok=1`` when inductive ≤ 1.15 × transductive for every variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TARGET = 1.15


def holdout_split(graph, holdout: float, train_fraction: float, val_fraction: float, seed: int):
    """(kept node positions, train, val, test) — train/val among the kept labelled nodes, test = held-out labelled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(graph.num_nodes)
    n_held = int(round(holdout * graph.num_nodes))
    held, kept = np.sort(order[:n_held]), np.sort(order[n_held:])
    labelled = graph.has_label.numpy()
    pool = rng.permutation(kept[labelled[kept]])
    n_train = int(round(len(pool) * train_fraction / (train_fraction + val_fraction)))
    return kept, np.sort(pool[:n_train]), np.sort(pool[n_train:]), held[labelled[held]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "conf" / "synthetic_shenzhen.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--variants", default="Adj-Tri-GCN,SAGE_adj2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)

    from landuse.config import load_config
    from landuse.data.reader import load_graph
    from landuse.runner import run_pipeline
    from landuse.serving.pyfunc import build_spec, load_network, save_artifacts, score, table_for_graph
    from landuse.serving.region_table import graph_from_table
    from landuse.stages import STAGES
    from landuse.training.metrics import evaluate
    from landuse.training.protocol import (cpu_threads, needed_operators, pick_device, train_split, training_input,
                                           training_operators)

    config = load_config(args.config, ["training.progress=false", *args.overrides])
    run_pipeline(config, STAGES, until="assemble")
    graph = load_graph(config.tables_dir, classes=list(config.labels.classes))
    cfg = config.training
    features = tuple(cfg.features)
    device = pick_device(cfg.device)
    print(f"inductive benchmark: {config.name}, {graph.num_nodes} regions, {int(graph.has_label.sum())} labelled, "
          f"features {'+'.join(features)}, hold-out {args.holdout:.0%}, {args.repeats} repeats, {cfg.epochs} epochs")
    figures: dict[str, float] = {}
    ok = True
    for variant in args.variants.split(","):
        vcfg = dataclasses.replace(cfg, variant=variant, label_lag=False)  # label lags need known labels around
        trans, induct = [], []
        started = time.perf_counter()
        for r in range(args.repeats):
            seed = config.seed + r
            kept, train, val, test = holdout_split(graph, args.holdout, vcfg.train_fraction, vcfg.val_fraction, seed)
            with cpu_threads(1):
                x = training_input(graph, features, vcfg)
                run = train_split(x, graph.y, training_operators(graph, variant, vcfg), variant, (train, val, test),
                                  vcfg, seed, device)
                trans.append(run.metrics["test"]["kl"])

                sub = graph.subgraph(kept)
                position = np.full(graph.num_nodes, -1)
                position[kept] = np.arange(len(kept))
                xs = training_input(sub, features, vcfg)
                run_i = train_split(xs, sub.y, training_operators(sub, variant, vcfg), variant,
                                    (position[train], position[val], np.zeros(0, dtype=np.int64)), vcfg, seed, device)
                spec = build_spec(sub, variant, features, sorted(needed_operators([variant])), xs.shape[1], vcfg)
                with tempfile.TemporaryDirectory() as tmp:
                    save_artifacts(Path(tmp), spec, run_i.state, run_i.mean, run_i.std)
                    network = load_network(spec, Path(tmp) / "weights.safetensors")
                table = table_for_graph(graph, spec)  # every region, held-out ones included, with all their edges
                served = graph_from_table(table, spec.layout, spec.edge_sets, spec.classes)
                probs = torch.as_tensor(score(network, spec, served), dtype=torch.float32)
                held = torch.as_tensor(test)
                induct.append(evaluate(torch.log(probs[held].clamp_min(1e-12)), graph.y[held])["kl"])
            print(f"  {variant} repeat {r}: transductive KL {trans[-1]:.4f}, inductive KL {induct[-1]:.4f} "
                  f"({induct[-1] / trans[-1]:.3f}x), {len(test)} held-out labelled regions")
        t, i = np.array(trans), np.array(induct)
        ratio = float(i.mean() / t.mean())
        ok &= ratio <= TARGET
        print(f"{variant}: transductive {t.mean():.4f} ± {t.std():.4f}, inductive {i.mean():.4f} ± {i.std():.4f}, "
              f"ratio {ratio:.3f} (target ≤ {TARGET}), {time.perf_counter() - started:.0f} s")
        key = variant.replace("-", "_")
        figures.update({f"{key}_transductive_kl": round(float(t.mean()), 5), f"{key}_inductive_kl": round(float(i.mean()), 5),
                        f"{key}_ratio": round(ratio, 4)})
    print(" ".join(f"{k}={v}" for k, v in {"config": config.name, "regions": graph.num_nodes, "repeats": args.repeats,
                                           "holdout": args.holdout, **figures, "ok": int(ok)}.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
