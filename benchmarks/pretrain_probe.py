"""Linear probe: H_img from an MMGR-pretrained SmallCNN vs. the same encoder randomly initialised.

Usage: ``python benchmarks/pretrain_probe.py [WORK_DIR] [--epochs 5]`` on a work dir that has
``image_patches``, ``poi_regions`` and ``labels`` (``make run``; default work/synthetic_shenzhen,
raster path from its resolved_config.json). Prints one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", nargs="?", default="work/synthetic_shenzhen")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from landuse.data.patches import load_training_patches
    from landuse.models.encoders import MMGRModel, POISetEncoder, SmallCNN
    from landuse.training.image_embeddings import region_image_embeddings
    from landuse.training.pretrain import PretrainSettings, pretrain
    from landuse.training.probe import dominant_class_probe

    work, tables = Path(args.work_dir), Path(args.work_dir) / "tables"
    missing = [t for t in ("image_patches", "poi_regions", "labels") if not (tables / t).is_dir()]
    if missing:
        print(f"error: {tables} lacks {', '.join(missing)} (run `make run` first)", file=sys.stderr)
        return 2
    raster = json.loads((work / "resolved_config.json").read_text())["inputs"]["imagery"]["path"]
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    patches, _, _ = load_training_patches(tables, raster, level=1)
    encoder = SmallCNN(patches.bands)
    encoder.set_normalization(*patches.band_stats())
    random_encoder = copy.deepcopy(encoder)  # the same initialisation, never trained
    model = MMGRModel(encoder, POISetEncoder(max(len(patches.vocabulary), 1)))
    settings = PretrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=args.seed)
    with tempfile.TemporaryDirectory() as ckpt:
        history = pretrain(model, patches.pixels, patches.poi_tokens, settings, checkpoint_dir=Path(ckpt))
    labels = pq.read_table(tables / "labels").to_pandas()
    classes = [c for c in labels.columns if c not in ("region_id", "coverage")]
    labels = labels[labels["coverage"] > 0]
    scores = {}
    for name, enc in (("pretrained", model.image_encoder), ("random", random_encoder)):
        table = region_image_embeddings(enc, tables / "image_patches")
        table = table[table["has_image"]].merge(labels, on="region_id")
        scores[name], n_classes = dominant_class_probe(np.stack(table["vector"]), table[classes].to_numpy(), seed=args.seed)
    ratio = scores["pretrained"] / scores["random"] if scores["random"] else float("inf")
    print(f"probe_pretrained={scores['pretrained']:.4f} probe_random={scores['random']:.4f} ratio={ratio:.3f} "
          f"chance={1 / n_classes:.4f} regions={len(table)} tiles={len(patches)} epochs={args.epochs} "
          f"loss_first={history[0]:.4f} loss_last={history[-1]:.4f} wall_s={time.time() - start:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
