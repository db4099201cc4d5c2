"""Linear probe: H_img from an MMGR-pretrained SmallCNN vs. the same encoder randomly initialised.

Usage: ``python benchmarks/pretrain_probe.py [WORK_DIR] [--epochs 10] [--seeds 3]`` on a work dir
that has ``image_patches``, ``poi_regions`` and ``labels`` (``make run``; default
work/synthetic_shenzhen, raster path from its resolved_config.json). Each seed is one
initialisation, pretrained once and probed on 5 region splits against its untrained copy; the
baseline (the untrained encoder) runs in the same process on the same tiles. Prints one
``key=value`` line: mean and worst ratio over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", nargs="?", default="work/synthetic_shenzhen")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="pretraining runs (initialisations) to average")
    args = parser.parse_args(argv)

    from landuse.pretraining.pretrain import PretrainSettings
    from landuse.evaluation.probe import pretrained_vs_random_probe

    work, tables = Path(args.work_dir), Path(args.work_dir) / "tables"
    missing = [t for t in ("image_patches", "poi_regions", "labels") if not (tables / t).is_dir()]
    if missing:
        print(f"error: {tables} lacks {', '.join(missing)} (run `make run` first)", file=sys.stderr)
        return 2
    raster = json.loads((work / "resolved_config.json").read_text())["inputs"]["imagery"]["path"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    runs = []
    for seed in range(args.seeds):
        settings = PretrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=seed)
        runs.append(pretrained_vs_random_probe(tables, raster, settings))
        r = runs[-1]
        print(f"seed {seed}: pretrained {r['pretrained']:.4f} random {r['random']:.4f} "
              f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}", file=sys.stderr)
    pre = np.array([r["pretrained"] for r in runs])
    rnd = np.array([r["random"] for r in runs])
    ratios = pre / rnd
    print(f"probe_pretrained={pre.mean():.4f} probe_random={rnd.mean():.4f} ratio={ratios.mean():.3f} "
          f"ratio_min={ratios.min():.3f} chance={runs[0]['chance']:.4f} regions={int(runs[0]['regions'])} "
          f"tiles={int(runs[0]['tiles'])} epochs={args.epochs} seeds={args.seeds} wall_s={time.time() - start:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
