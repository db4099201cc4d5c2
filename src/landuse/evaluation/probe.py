"""Linear probes: how much land-use information a region representation carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from landuse.data.augment import MultispectralAugment
    from landuse.pretraining.pretrain import PretrainSettings


def dominant_class_probe(vectors: np.ndarray, y: np.ndarray, seed: int = 0, test_size: float = 0.3) -> tuple[float, int]:
    """Balanced accuracy of a linear classifier predicting each region's dominant class, on held-out regions.

    ``vectors`` [N, d] and label distributions ``y`` [N, C] of labelled regions. Logistic regression
    on standardised features (class-balanced weights), a stratified split of regions (classes with a
    single region are kept in training only). Returns (balanced accuracy, number of classes present);
    chance is 1 / classes present.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = np.asarray(y).argmax(1)
    classes, counts = np.unique(target, return_counts=True)
    common = np.isin(target, classes[counts >= 2])
    x_tr, x_te, y_tr, y_te = train_test_split(
        vectors[common], target[common], test_size=test_size, random_state=seed, stratify=target[common]
    )
    x_tr = np.vstack([x_tr, vectors[~common]])
    y_tr = np.concatenate([y_tr, target[~common]])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(x_tr, y_tr)
    return float(balanced_accuracy_score(y_te, model.predict(x_te))), int(len(np.unique(y_te)))


def pretrained_vs_random_probe(tables_dir: Path, raster_path: str, settings: PretrainSettings,
                               augment: MultispectralAugment | None = None, level: int = 1,
                               probe_seeds: int = 5) -> dict[str, float]:
    """The pretraining acceptance measurement: probe H_img of an MMGR-pretrained SmallCNN vs. the same encoder untrained.

    Both encoders start from one initialisation (seeded by ``settings.seed``); one is pretrained
    on the work dir's ``image_patches`` + ``poi_regions``, the other never is. Each encodes every
    tile, pools per region (overlap-weighted) and gets :func:`dominant_class_probe` on the labelled
    regions, averaged over ``probe_seeds`` region splits. Returns ``pretrained``, ``random`` (balanced
    accuracies), ``chance``, ``regions``, ``tiles``, ``loss_first``, ``loss_last``.
    """
    import copy

    import pyarrow.parquet as pq
    import torch

    from landuse.data.patches import load_training_patches
    from landuse.models.encoders import MMGRModel, POISetEncoder, SmallCNN
    from landuse.pretraining.image_embeddings import encode_tiles, pool_regions
    from landuse.pretraining.pretrain import pretrain

    tables_dir = Path(tables_dir)
    torch.manual_seed(settings.seed)
    patches, _, _ = load_training_patches(tables_dir, raster_path, level=level)
    encoder = SmallCNN(patches.bands)
    encoder.set_normalization(*patches.band_stats())
    untrained = copy.deepcopy(encoder)  # the same initialisation, never trained
    model = MMGRModel(encoder, POISetEncoder(max(len(patches.vocabulary), 1)))
    history = pretrain(model, patches.pixels, patches.poi_tokens, settings, augment=augment)
    labels = pq.read_table(tables_dir / "labels").to_pandas()
    classes = [c for c in labels.columns if c not in ("region_id", "coverage")]
    labels = labels[labels["coverage"] > 0]
    out: dict[str, float] = {"tiles": float(len(patches)), "loss_first": history[0] if history else float("nan"),
                             "loss_last": history[-1] if history else float("nan")}
    # the tiles and their region memberships are already in memory: encode and pool them there
    # rather than streaming image_patches again for each encoder
    m = patches.memberships
    tile_pixels = int(patches.pixels.shape[-1] * patches.pixels.shape[-2])
    for name, enc in (("pretrained", model.image_encoder), ("random", untrained)):
        table = pool_regions(m["region_id"].to_numpy(), m["tile"].to_numpy(), m["overlap"].to_numpy(),
                             m["valid_fraction"].to_numpy(), encode_tiles(enc, patches.pixels), tile_pixels=tile_pixels)
        table = table[table["has_image"]].merge(labels, on="region_id")
        x, y = np.stack(table["vector"]), table[classes].to_numpy()
        scores = [dominant_class_probe(x, y, seed=k) for k in range(probe_seeds)]
        out[name] = float(np.mean([s[0] for s in scores]))
        out["chance"], out["regions"] = 1.0 / scores[0][1], float(len(table))
    return out
