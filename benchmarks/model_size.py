"""Logged model size against the number of regions and the feature width.

Usage::

    PYTHONPATH=src python benchmarks/model_size.py [--sizes 2000,10000] [--width 170] [--variant SAGE_adj2]

For each size N a synthetic region graph (square grid with rook adjacency, ~8 random flows per
region, features of ``--width`` columns over four modalities) gets a network of ``--variant``; the
region model is logged to a throw-away MLflow store exactly as training logs it
(:func:`landuse.serving.pyfunc.log_region_model`) and the bytes of the logged model directory are
summed. The same is done at twice the width. Ends with one ``key=value`` line; ``ok=1`` when the
size at the largest N is ≤ 1.2 × the size at the smallest (the model's size must follow the feature
width, not the number of regions).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
for _key in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY"):
    os.environ.setdefault(_key, "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

TARGET = 1.2
MODALITIES = ("poi", "image", "geo", "flow")


def synthetic_graph(n: int, width: int, seed: int = 0):
    """A grid of about ``n`` regions with ``width`` feature columns split over four modalities."""
    from landuse.data.reader import GraphData

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    ids = np.arange(n)
    right = ids[(ids % side < side - 1) & (ids + 1 < n)]
    down = ids[ids + side < n]
    a = np.concatenate([np.stack([right, right + 1]), np.stack([down, down + side])], axis=1)
    adjacency = np.concatenate([a, a[::-1]], axis=1)
    flow = rng.integers(0, n, size=(2, 8 * n))
    dims = [width // 4] * 3 + [width - 3 * (width // 4)]
    return GraphData(
        region_ids=torch.arange(n, dtype=torch.long),
        features={m: torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32) for m, d in zip(MODALITIES, dims)},
        flags={m: torch.ones(n, dtype=torch.bool) for m in MODALITIES},
        y=torch.tensor(rng.dirichlet(np.ones(5), size=n), dtype=torch.float32), has_label=torch.ones(n, dtype=torch.bool),
        coverage=torch.ones(n, dtype=torch.float64),
        edges={"adjacency": (torch.tensor(adjacency), torch.ones(adjacency.shape[1])),
               "flow": (torch.tensor(flow), torch.tensor(rng.random(8 * n), dtype=torch.float32))},
        classes=[f"class_{i}" for i in range(5)])


def logged_size(graph, variant: str, root: Path) -> int:
    """Bytes of the logged region model's directory."""
    import mlflow

    from landuse.config import TrainingConfig
    from landuse.serving.pyfunc import build_spec, log_region_model
    from landuse.training.protocol import build_model, needed_operators, training_input

    cfg = dataclasses.replace(TrainingConfig(), variant=variant, features=MODALITIES)
    x = training_input(graph, MODALITIES, cfg)
    network = build_model(x.shape[1], len(graph.classes), variant, cfg)
    spec = build_spec(graph, variant, MODALITIES, sorted(needed_operators([variant])), x.shape[1], cfg)
    with mlflow.start_run():
        info = log_region_model(graph, spec, network.state_dict(), x.mean(0), x.std(0), "model", {}, root / "staging")
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / f"download-{graph.num_nodes}")))
    return sum(p.stat().st_size for p in local.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--width", type=int, default=170)
    parser.add_argument("--variant", default="SAGE_adj2_flow")
    args = parser.parse_args(argv)
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("size", artifact_location=(root / "art").as_uri()))
        for width in (args.width, 2 * args.width):
            for n in sizes:
                size = logged_size(synthetic_graph(n, width), args.variant, root / f"{n}-{width}")
                figures[f"bytes_n{n}_w{width}"] = size
                print(f"{args.variant}: {n} regions, {width} feature columns -> {size / 1024:.1f} KiB")
    ratio_n = figures[f"bytes_n{sizes[-1]}_w{args.width}"] / figures[f"bytes_n{sizes[0]}_w{args.width}"]
    ratio_w = figures[f"bytes_n{sizes[0]}_w{2 * args.width}"] / figures[f"bytes_n{sizes[0]}_w{args.width}"]
    ok = ratio_n <= TARGET
    print(f"size at {sizes[-1]} / {sizes[0]} regions: {ratio_n:.3f} (target ≤ {TARGET}); at 2x width: {ratio_w:.3f}")
    print(" ".join(f"{k}={v}" for k, v in {**figures, "ratio_regions": round(ratio_n, 4), "ratio_width": round(ratio_w, 4),
                                           "ok": int(ok)}.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
