"""Region-embedding benchmark: our embeddings beside simple baselines and published results.

Two tasks on any region-embedding table (rows = regions, ordered by region id):

(a) **Land-use distribution** (every dataset): an MLP probe ``Linear(d→64) → ReLU → Dropout →
    Linear(64→C)`` on the embedding, log-softmax output, KL(y ‖ ŷ) loss, full-batch Adam; K repeated
    random (or blocked) splits of the labelled regions with the config's fractions and seed; per
    split the epoch with the lowest **validation** KL; test KL, L1 (mean / sum) and cosine, mean ±
    std over splits (:mod:`landuse.training.metrics`).

(b) **The MVURE/MGFN protocol** (NYC mh-180, when a per-region labels file is given): the embedding
    fed as it is (no scaling, as in the published code) to ``Ridge(alpha=1)`` in a 5-fold ``KFold``
    without shuffling for ``crime_count`` and ``checkin_count``; the out-of-fold predictions of the
    five folds are concatenated, negative predictions clipped to 0 (as the published code does),
    and MAE, RMSE and R² computed over all regions at once; ``KMeans(12)`` on the embedding against
    ``community_district`` → NMI and ARI. Published numbers are appended as rows of their own,
    cited and marked "published, not reproduced here".

Candidates: each modality of ``node_features`` (poi, image, geo, flow; regions lacking one have
zeros there, the ``coverage`` column says how many have it), ``fused`` (all modalities side by
side, each block z-scored and scaled to unit total variance over all regions — label-free), and the **HGCN hidden layer**: the
concatenated head outputs [N, 64] (what the trunk receives) of ``training.variant`` trained on
``training.features`` for one split (split 0, epoch chosen on validation KL). That embedding has
seen the land-use labels of its training nodes, so in task (a) it is evaluated on its own split
only (same train / validation / test nodes; its test nodes' labels were never used) and its row
says so; in task (b) the targets are unrelated to land use. Baselines: raw OD rows (row i =
region i's out-flow trips to every region, normalised to sum 1; [N, N], skipped above
:data:`MAX_DENSE_OD` regions), POI counts (region × level-1 category token counts, normalised to
shares per region), the hidden layer of the same HGCN *untrained* (seeded random weights: how
much of the hidden layer's signal the flow / adjacency operators give by themselves) and a seeded
Gaussian random embedding as a floor.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from landuse import literature
from landuse.config import Config, ConfigError, TrainingConfig
from landuse.training.metrics import evaluate, kl_loss
from landuse.training.protocol import METRICS, cpu_threads
from landuse.training.splits import blocked_splits, random_splits

log = logging.getLogger(__name__)

KIND = "benchmark_embeddings"  # results/<KIND>/
MAX_DENSE_OD = 5000  # above this many regions the raw OD-row baseline ([N, N] dense) is skipped
RANDOM_DIM = 64
PUBLISHED_NOTE = "published, not reproduced here"
TARGETS = ("crime_count", "checkin_count")
CLUSTER_COLUMN = "community_district"
LABEL_COLUMNS = ("region_id", CLUSTER_COLUMN, *TARGETS)
MVURE_PROTOCOL = ("Ridge(alpha=1) on the embedding as it is, 5-fold KFold without shuffling, out-of-fold "
                  "predictions of all folds concatenated, negatives clipped to 0, MAE / RMSE / R² over all "
                  "regions (as in the MVURE/MGFN code); KMeans(12, n_init=10) vs community_district → NMI, ARI")

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Published:
    """A published result on NYC mh-180 (R² for crime / check-in counts, NMI / ARI vs community districts)."""

    method: str
    citation: str
    crime_r2: float
    checkin_r2: float
    nmi: float = math.nan
    ari: float = math.nan


def published() -> tuple[Published, ...]:
    """The published NYC mh-180 results, in table order (``nyc_mh180`` of :mod:`landuse.literature`)."""
    return tuple(Published(r.method, r.citation, r.values["crime_r2"], r.values["checkin_r2"], r.values["nmi"],
                           r.values["ari"]) for r in literature.benchmark("nyc_mh180").results)


@dataclass
class Embedding:
    """One candidate: vectors [N, d] for ``region_ids`` [N] (ascending).

    ``kind``: ``ours`` | ``baseline`` | ``extra``. ``split`` (region ids of train / val / test) is set
    when the embedding was trained on the land-use labels: task (a) then evaluates it on that split only.
    """

    name: str
    kind: str
    region_ids: np.ndarray
    vectors: np.ndarray
    coverage: float = 1.0
    note: str = ""
    split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.region_ids = np.asarray(self.region_ids, dtype=np.int64)
        self.vectors = np.asarray(self.vectors, dtype=np.float64)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.region_ids):
            raise ValueError(f"embedding {self.name}: vectors {self.vectors.shape} do not match {len(self.region_ids)} region ids")
        if not np.isfinite(self.vectors).all():
            raise ValueError(f"embedding {self.name}: non-finite values")
        order = np.argsort(self.region_ids, kind="stable")
        self.region_ids, self.vectors = self.region_ids[order], self.vectors[order]
        if len(np.unique(self.region_ids)) != len(self.region_ids):
            raise ValueError(f"embedding {self.name}: duplicate region ids")

    @property
    def dim(self) -> int:
        """d, the embedding width."""
        return int(self.vectors.shape[1])

    def rows(self, region_ids: np.ndarray) -> np.ndarray:
        """The vectors of ``region_ids`` (all present), in that order: [len(region_ids), d]."""
        pos = np.searchsorted(self.region_ids, region_ids)
        if (pos >= len(self.region_ids)).any() or (self.region_ids[np.minimum(pos, len(self.region_ids) - 1)] != region_ids).any():
            raise ValueError(f"embedding {self.name}: some requested regions are missing")
        return self.vectors[pos]


def common_regions(embeddings: Sequence[Embedding], *more: np.ndarray) -> np.ndarray:
    """Region ids present in every embedding (and every extra id array), ascending."""
    ids = None
    for arr in [e.region_ids for e in embeddings] + [np.asarray(m, dtype=np.int64) for m in more]:
        ids = np.asarray(arr) if ids is None else np.intersect1d(ids, arr)
    return np.array([], dtype=np.int64) if ids is None else np.unique(ids)


# --- candidate embeddings -----------------------------------------------------------------------

def zscore(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance over all rows (constant columns → 0)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 1e-12, std, 1.0)


def fuse(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The blocks side by side, each standardised as a block: [N, Σ d].

    Columns are z-scored over all regions, then each block is divided by √(its width), so every
    modality carries the same total variance (1) whatever its width: a 72-d block does not outweigh
    a 5-d one in a distance (KMeans) or a ridge penalty.
    """
    return np.hstack([zscore(b) / math.sqrt(max(b.shape[1], 1)) for b in blocks])


def od_rows(flows: pd.DataFrame, region_ids: np.ndarray, weight: str = "trips") -> np.ndarray:
    """Row i = region i's out-flow to every region, normalised to sum 1 (no flow: zeros): [N, N].

    ``flows`` has ``o_region``, ``d_region`` and the ``weight`` column; rows of unknown regions are dropped.
    """
    region_ids = np.asarray(region_ids, dtype=np.int64)
    n = len(region_ids)
    o = np.searchsorted(region_ids, flows["o_region"].to_numpy(np.int64))
    d = np.searchsorted(region_ids, flows["d_region"].to_numpy(np.int64))
    o_c, d_c = np.minimum(o, n - 1), np.minimum(d, n - 1)
    keep = (o < n) & (d < n) & (region_ids[o_c] == flows["o_region"].to_numpy()) & (region_ids[d_c] == flows["d_region"].to_numpy())
    matrix = np.zeros((n, n))
    np.add.at(matrix, (o[keep], d[keep]), flows[weight].to_numpy(np.float64)[keep])
    total = matrix.sum(1, keepdims=True)
    return np.divide(matrix, total, out=np.zeros_like(matrix), where=total > 0)


def poi_count_matrix(poi_counts: pd.DataFrame, region_ids: np.ndarray, level: int = 1) -> tuple[np.ndarray, list[str]]:
    """Region × category-token POI counts at ``level``, normalised to shares per region: ([N, T], tokens)."""
    at = poi_counts[poi_counts["level"] == level]
    table = at.pivot_table(index="region_id", columns="token", values="n_pois", aggfunc="sum", fill_value=0)
    table = table.reindex(index=np.asarray(region_ids, dtype=np.int64), fill_value=0).sort_index(axis=1)
    counts = table.to_numpy(np.float64)
    total = counts.sum(1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0), [str(c) for c in table.columns]


def random_embedding(n: int, dim: int = RANDOM_DIM, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal [n, dim] matrix: the floor every real embedding should beat."""
    return np.random.default_rng([seed, 7]).standard_normal((n, dim))


def probe_splits(has_label: np.ndarray, k: int, cfg: TrainingConfig, seed: int, xy: np.ndarray | None = None) -> list[Split]:
    """k (train, val, test) position splits over the labelled rows (as the trainer draws them)."""
    labelled = np.flatnonzero(np.asarray(has_label, dtype=bool))
    if len(labelled) < 10:
        raise ConfigError(f"benchmark: only {len(labelled)} labelled regions; need at least 10 to split")
    if cfg.split == "blocked" and xy is not None:
        return blocked_splits(labelled, np.asarray(xy)[labelled], cfg.block_m, k, cfg.train_fraction, cfg.val_fraction, seed)
    return random_splits(labelled, k, cfg.train_fraction, cfg.val_fraction, seed)


def hgcn_hidden(graph, cfg: TrainingConfig, seed: int, xy: np.ndarray | None = None) -> tuple[np.ndarray, Split, dict]:
    """Train ``cfg.variant`` on ``cfg.features`` for split 0 (validation selection); its hidden layer.

    Returns (H [N, Σ head widths] = the concatenated head outputs the trunk receives, for every node;
    the split as node indices; the trained model's own metrics per part).
    """
    from landuse.training.protocol import (SMALL_GRAPH, build_model, build_operators, make_splits,
                                           needed_operators, pick_device, train_split, training_input)

    one = replace(cfg, splits=1, selection="validation", label_lag=False, ensemble=1)  # one model on the features alone
    split = make_splits(graph, one, seed, xy)[0]
    x = training_input(graph, cfg.features, one)
    operators = build_operators(graph, needed_operators([cfg.variant]))
    device = pick_device(cfg.device)
    with cpu_threads(1 if graph.num_nodes < SMALL_GRAPH else None):
        run = train_split(x, graph.y, operators, cfg.variant, split, one, seed, device)
    model = build_model(x.shape[1], graph.y.shape[1], cfg.variant, one)
    model.load_state_dict(run.state)
    return hidden_layer(model, (x - run.mean) / run.std, operators), split, run.metrics


def hgcn_untrained_hidden(graph, cfg: TrainingConfig, seed: int) -> np.ndarray:
    """The hidden layer of an *untrained* ``cfg.variant`` (seeded random weights, same operators and
    features, features z-scored over all nodes): a control that shows how much of the hidden
    layer's signal comes from the graph operators rather than from training on land use."""
    from landuse.training.protocol import build_model, build_operators, needed_operators, training_input

    x = training_input(graph, cfg.features, cfg)
    std = x.std(0, unbiased=False)
    x = (x - x.mean(0)) / torch.where(std > 1e-12, std, torch.ones_like(std))
    torch.manual_seed(seed)
    model = build_model(x.shape[1], graph.y.shape[1], cfg.variant, replace(cfg, dropout=0.0, ensemble=1))
    return hidden_layer(model, x, build_operators(graph, needed_operators([cfg.variant])))


def hidden_layer(model, x: torch.Tensor, operators: dict) -> np.ndarray:
    """What ``model.trunk`` receives for input x [N, F] (eval mode): the concatenated head outputs [N, Σ widths]."""
    model.eval()
    with torch.no_grad():
        return model.hidden(x, operators).numpy().astype(np.float64)


def candidates(config: Config, graph, xy: np.ndarray | None = None, extra: dict[str, Path] | None = None,
               hidden: bool = True) -> tuple[list[Embedding], list[str]]:
    """Every candidate embedding of the run and notes on skipped ones."""
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import T_FLOWS, T_POI_COUNTS

    ids = graph.region_ids.numpy().astype(np.int64)
    n = len(ids)
    notes: list[str] = []
    out: list[Embedding] = []
    for name, tensor in graph.features.items():
        flag = graph.flags.get(name)
        coverage = float(flag.float().mean()) if flag is not None else 1.0
        out.append(Embedding(name, "ours", ids, tensor.numpy(), coverage,
                             "" if coverage == 1 else f"{int(round(coverage * n))} of {n} regions have it (rest zeros)"))
    if len(graph.features) > 1:
        names = list(graph.features)
        out.append(Embedding("fused", "ours", ids, fuse([graph.features[k].numpy() for k in names]),
                             note="+".join(names) + ", each block z-scored and scaled to unit total variance"))
    if hidden:
        try:
            h, split, metrics = hgcn_hidden(graph, config.training, config.seed, xy)
        except ConfigError as exc:  # e.g. no flow edges for a flow variant: the other candidates still run
            notes.append(f"hgcn_hidden and hgcn_untrained skipped: {exc}")
            hidden = False
    if hidden:
        split_ids = tuple(ids[s] for s in split)
        out.append(Embedding("hgcn_hidden", "ours", ids, h, split=split_ids,
                             note=f"{config.training.variant} on {'+'.join(config.training.features)}, trained on "
                                  f"land-use labels of split 0 (test KL {metrics['test']['kl']:.4f})"))
        out.append(Embedding("hgcn_untrained", "baseline", ids, hgcn_untrained_hidden(graph, config.training, config.seed),
                             note=f"hidden layer of an untrained {config.training.variant} (random weights, seed "
                                  f"{config.seed}): the graph operators' share of hgcn_hidden's signal"))
    if n > MAX_DENSE_OD:
        notes.append(f"od_rows skipped: {n} regions > {MAX_DENSE_OD} (a dense [N, N] matrix)")
    else:
        source = config.assemble.flow_source or config.embeddings.flow.source
        try:
            flows = read_pandas(config, T_FLOWS, "flows", columns=["source", "o_region", "d_region", "trips"])
        except ConfigError as exc:
            flows = pd.DataFrame(columns=["source"])
            notes.append(f"od_rows skipped: {exc}")
        if source is not None:
            flows = flows[flows["source"] == source]
        if len(flows):
            out.append(Embedding("od_rows", "baseline", ids, od_rows(flows, ids),
                                 note=f"out-flow trips ({source or 'all sources'}) per destination, row shares"))
        elif "od_rows skipped" not in " ".join(notes):
            notes.append(f"od_rows skipped: no flows of source {source!r}")
    try:
        if "poi_counts" in graph.features:  # the poi-features stage's modality already is this baseline (and more)
            raise ConfigError("the poi_counts modality of node_features stands in for it")
        counts = read_pandas(config, T_POI_COUNTS, "pois", columns=["region_id", "level", "token", "n_pois"])
    except ConfigError as exc:
        notes.append(f"poi_counts baseline skipped: {exc}")
    else:
        matrix, tokens = poi_count_matrix(counts, ids, level=1)
        if matrix.shape[1]:
            out.append(Embedding("poi_counts", "baseline", ids, matrix, float((matrix.sum(1) > 0).mean()),
                                 note=f"{len(tokens)} level-1 categories, shares per region"))
    out.append(Embedding("random", "baseline", ids, random_embedding(n, RANDOM_DIM, config.seed),
                         note=f"N(0, 1), {RANDOM_DIM}-d, seed {config.seed}"))
    for name, path in (extra or {}).items():
        out.append(read_embedding(name, path))
    taken = [e.name for e in out]
    dupes = sorted({x for x in taken if taken.count(x) > 1})
    if dupes:
        raise ConfigError(f"benchmark_embeddings.embeddings (--embeddings): name(s) {', '.join(dupes)} clash with "
                          "built-in candidates")
    return out, notes


def read_embedding(name: str, path: Path) -> Embedding:
    """An extra embedding table: Parquet (file or directory) with ``region_id`` and ``vector`` (list of floats)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark_embeddings.embeddings.{name} (--embeddings) {path}: "
                                "no such file or directory")
    table = pq.read_table(path)
    missing = [c for c in ("region_id", "vector") if c not in table.column_names]
    if missing:
        raise ConfigError(f"benchmark_embeddings.embeddings.{name} (--embeddings) {path}: missing column(s) "
                          f"{', '.join(missing)} (has {', '.join(table.column_names)})")
    frame = table.select(["region_id", "vector"]).to_pandas()
    lengths = frame["vector"].map(len)
    if lengths.nunique() != 1:
        raise ConfigError(f"benchmark_embeddings.embeddings.{name} (--embeddings) {path}: vectors of different "
                          f"lengths {sorted(lengths.unique())[:5]}")
    return Embedding(name, "extra", frame["region_id"].to_numpy(np.int64), np.vstack(frame["vector"].to_numpy()),
                     note=str(path))


# --- task (a): land-use distribution -----------------------------------------------------------

@dataclass(frozen=True)
class ProbeSettings:
    """The MLP probe of task (a)."""

    hidden: int = 64
    dropout: float = 0.2
    epochs: int = 400
    lr: float = 0.005
    weight_decay: float = 5e-4
    standardize: bool = True

    @classmethod
    def from_training(cls, cfg: TrainingConfig) -> "ProbeSettings":
        """Epochs, learning rate, weight decay and standardisation of the config's training section."""
        return cls(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, standardize=cfg.standardize)


def probe_split(x: np.ndarray, y: np.ndarray, split: Split, settings: ProbeSettings, seed: int) -> dict:
    """Train the MLP probe on one split; metrics at the epoch with the lowest validation KL.

    x [N, d], y [N, C] (labelled rows as indexed by the split). Returns ``{"test": {...}, "val_kl": float,
    "epoch": int}``; without validation nodes the last epoch is kept.
    """
    torch.manual_seed(seed)
    train, val, test = (torch.as_tensor(s, dtype=torch.long) for s in split)
    xt = torch.as_tensor(x, dtype=torch.float32)
    if settings.standardize:
        mean, std = xt[train].mean(0), xt[train].std(0, unbiased=False)
        xt = (xt - mean) / torch.where(std > 1e-12, std, torch.ones_like(std))
    yt = torch.as_tensor(y, dtype=torch.float32)
    model = nn.Sequential(nn.Linear(x.shape[1], settings.hidden), nn.ReLU(), nn.Dropout(settings.dropout),
                          nn.Linear(settings.hidden, y.shape[1]))
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best = (math.inf, -1)
    state = copy.deepcopy(model.state_dict())
    for epoch in range(settings.epochs):
        model.train()
        optimiser.zero_grad()
        kl_loss(model(xt[train]), yt[train]).backward()
        optimiser.step()
        if len(val):
            model.eval()
            with torch.no_grad():
                score = kl_loss(model(xt[val]), yt[val]).item()
            if score < best[0]:
                best, state = (score, epoch), copy.deepcopy(model.state_dict())
    if not len(val):
        best, state = (math.nan, settings.epochs - 1), model.state_dict()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        metrics = evaluate(model(xt[test]), yt[test])
    return {"test": metrics, "val_kl": best[0], "epoch": best[1]}


def landuse_task(embeddings: Sequence[Embedding], region_ids: np.ndarray, y: np.ndarray, has_label: np.ndarray,
                 splits: Sequence[Split], settings: ProbeSettings, seed: int, progress: bool = False) -> pd.DataFrame:
    """Task (a) for every embedding on the same splits (positions into ``region_ids``): one row each.

    An embedding with a ``split`` of its own (trained on land-use labels) is evaluated on that split only.
    """
    from tqdm.auto import tqdm

    region_ids = np.asarray(region_ids, dtype=np.int64)
    rows = []
    total = sum(1 if e.split is not None else len(splits) for e in embeddings)
    with cpu_threads(1), tqdm(total=total, desc="land-use probe", unit="split", disable=not progress, leave=False) as bar:
        for emb in embeddings:
            x = emb.rows(region_ids)
            if emb.split is not None:
                own = tuple(np.flatnonzero(np.isin(region_ids, part)) for part in emb.split)
                plan: list[Split] = [own]  # type: ignore[list-item]
                note = (emb.note + "; " if emb.note else "") + "evaluated on its own split 0 only"
            else:
                plan, note = list(splits), emb.note
            results = []
            for i, split in enumerate(plan):
                results.append(probe_split(x, y, split, settings, seed + i))
                bar.update(1)
            row: dict = {"embedding": emb.name, "kind": emb.kind, "dim": emb.dim, "coverage": emb.coverage}
            for metric in METRICS:
                values = np.array([r["test"][metric] for r in results])
                row[metric] = float(values.mean())
                row[f"{metric}_std"] = float(values.std()) if len(values) > 1 else math.nan
            row["kl_split0"] = results[0]["test"]["kl"]  # split 0 = the HGCN hidden layer's own split
            row["val_kl"] = float(np.nanmean([r["val_kl"] for r in results]))
            row["splits"] = len(results)
            row["epoch_median"] = int(np.median([r["epoch"] for r in results]))
            row["note"] = note
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.insert(2, "rank", frame["kl"].rank(method="min").astype(int))
    return frame


def landuse_markdown(frame: pd.DataFrame, settings: ProbeSettings, n_regions: int) -> str:
    """Task (a) as Markdown: mean ± std over splits, the best KL marked ★."""
    lines = ["### Land-use distribution from region embeddings (MLP probe)", ""]
    head = ["embedding", "kind", "dim", "coverage", "KL", "L1 (mean)", "L1 (sum)", "cosine", "KL (split 0)", "splits", "rank"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = frame["kl"].idxmin() if len(frame) else None
    for i, r in frame.iterrows():
        name = f"★ **{r['embedding']}**" if i == best else str(r["embedding"])
        cells = [name, r["kind"], str(r["dim"]), f"{r['coverage']:.2f}"]
        cells += [_pm(r[m], r[f"{m}_std"]) for m in METRICS]
        cells += [f"{r['kl_split0']:.4f}", str(r["splits"]), str(r["rank"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Test metrics over {n_regions} regions, mean ± std over splits; MLP Linear(d→{settings.hidden}) → "
              f"ReLU → Dropout({settings.dropout}) → Linear(→C), KL loss, Adam lr {settings.lr}, weight decay "
              f"{settings.weight_decay}, {settings.epochs} epochs, epoch chosen on validation KL. KL = KL(y‖ŷ) "
              "batchmean; L1 (mean) = mean |ŷ−y| over regions × classes; L1 (sum) = per-region sum over classes; "
              "cosine = mean row-wise cosine similarity. KL (split 0): test KL on the first split alone, the one "
              "split an embedding trained on the land-use labels (hgcn_hidden) is evaluated on. ★ = lowest KL."]
    notes = [f"- `{r['embedding']}`: {r['note']}" for _, r in frame.iterrows() if r["note"]]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f}" if not np.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


# --- task (b): the MVURE / MGFN protocol --------------------------------------------------------

def ridge_kfold(x: np.ndarray, target: np.ndarray, n_splits: int = 5, alpha: float = 1.0,
                clip_negative: bool = True) -> dict[str, float]:
    """MAE, RMSE, R² of Ridge(alpha) over the concatenated out-of-fold predictions of KFold(n_splits).

    KFold without shuffling (folds are contiguous in row order), as in the MVURE/MGFN code; negative
    predictions are clipped to 0 there (counts cannot be negative).
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import KFold

    x, target = np.asarray(x, dtype=np.float64), np.asarray(target, dtype=np.float64)
    preds, truths = [], []
    for train, test in KFold(n_splits=n_splits).split(x):
        model = Ridge(alpha=alpha).fit(x[train], target[train])
        preds.append(model.predict(x[test]))
        truths.append(target[test])
    pred, truth = np.concatenate(preds), np.concatenate(truths)
    if clip_negative:
        pred = np.maximum(pred, 0.0)
    return {"mae": float(mean_absolute_error(truth, pred)), "rmse": float(np.sqrt(mean_squared_error(truth, pred))),
            "r2": float(r2_score(truth, pred))}


def kmeans_agreement(x: np.ndarray, labels: np.ndarray, k: int = 12, seed: int = 0) -> dict[str, float]:
    """NMI and ARI of KMeans(k, n_init=10) clusters of ``x`` against ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(np.asarray(x, dtype=np.float64))
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)), "ari": float(adjusted_rand_score(labels, clusters))}


def load_region_labels(path: Path) -> pd.DataFrame:
    """The per-region labels CSV (region_id, community_district, crime_count, checkin_count), by region id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark_embeddings.labels (--labels) {path}: no such file")
    frame = pd.read_csv(path)
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"benchmark_embeddings.labels (--labels) {path}: missing column(s) {', '.join(missing)} "
                          f"(has {', '.join(frame.columns)})")
    frame = frame[list(LABEL_COLUMNS)]
    if frame.isna().any().any() or frame["region_id"].duplicated().any():
        raise ConfigError(f"benchmark_embeddings.labels (--labels) {path}: empty cells or duplicate region ids")
    return frame.astype({"region_id": np.int64}).sort_values("region_id").reset_index(drop=True)


def published_rows() -> pd.DataFrame:
    """The published results as rows of the protocol table (MAE / RMSE not given: NaN)."""
    rows = []
    for p in published():
        rows.append({"embedding": p.method, "kind": "published", "dim": math.nan,
                     "crime_count_mae": math.nan, "crime_count_rmse": math.nan, "crime_count_r2": p.crime_r2,
                     "checkin_count_mae": math.nan, "checkin_count_rmse": math.nan, "checkin_count_r2": p.checkin_r2,
                     "nmi": p.nmi, "ari": p.ari, "mean_r2": (p.crime_r2 + p.checkin_r2) / 2,
                     "source": f"{p.method} ({p.citation}); {PUBLISHED_NOTE}"})
    return pd.DataFrame(rows)


def mvure_protocol(embeddings: Sequence[Embedding], labels: pd.DataFrame, seed: int, k: int = 12) -> pd.DataFrame:
    """Task (b) for every embedding on the regions they and ``labels`` share, then the published rows."""
    ids = common_regions(embeddings, labels["region_id"].to_numpy())
    lab = labels.set_index("region_id").loc[ids]
    rows = []
    for emb in embeddings:
        x = emb.rows(ids)
        row: dict = {"embedding": emb.name, "kind": emb.kind, "dim": emb.dim}
        for target in TARGETS:
            for metric, value in ridge_kfold(x, lab[target].to_numpy()).items():
                row[f"{target}_{metric}"] = value
        row.update(kmeans_agreement(x, lab[CLUSTER_COLUMN].to_numpy(), k=k, seed=seed))
        row["mean_r2"] = (row["crime_count_r2"] + row["checkin_count_r2"]) / 2
        row["source"] = f"this run ({len(ids)} regions)" + (f"; {emb.note}" if emb.note else "")
        rows.append(row)
    return pd.concat([pd.DataFrame(rows), published_rows()], ignore_index=True)


def best_ours(frame: pd.DataFrame, score: str = "mean_r2", higher: bool = True) -> int | None:
    """Index of the best row of kind ``ours`` by ``score`` (None when there is none)."""
    ours = frame[frame["kind"] == "ours"]
    if ours.empty:
        return None
    return int(ours[score].idxmax() if higher else ours[score].idxmin())


def mvure_markdown(frame: pd.DataFrame, n_regions: int) -> str:
    """Task (b) as Markdown: our rows, baselines, extras, then the published rows; our best ★."""
    best = best_ours(frame)
    lines = ["### NYC mh-180: the MVURE/MGFN protocol (crime, check-in, community districts)", ""]
    if best is not None:
        r = frame.loc[best]
        pub = ", ".join(f"{p.method} {p.crime_r2:g} / {p.checkin_r2:g}" for p in published())
        lines += [f"Our best embedding (mean R²): **{r['embedding']}**, R² crime {r['crime_count_r2']:.3f} / "
                  f"check-in {r['checkin_count_r2']:.3f}, NMI {r['nmi']:.3f}, ARI {r['ari']:.3f} "
                  f"(published R² crime / check-in: {pub}).", ""]
    head = ["embedding", "kind", "dim", "crime MAE", "crime RMSE", "crime R²", "check-in MAE", "check-in RMSE",
            "check-in R²", "NMI", "ARI", "source"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in frame.iterrows():
        name = f"★ **{r['embedding']}**" if i == best else str(r["embedding"])
        dim = "" if not np.isfinite(r["dim"]) else str(int(r["dim"]))
        cells = [name, str(r["kind"]), dim]
        for target in TARGETS:
            cells += [_num(r[f"{target}_mae"], 1), _num(r[f"{target}_rmse"], 1), _num(r[f"{target}_r2"], 3)]
        cells += [_num(r["nmi"], 3), _num(r["ari"], 3), str(r["source"]).replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{MVURE_PROTOCOL}; {n_regions} regions in region-id order. Rows of kind `published` are the "
              f"papers' own numbers ({PUBLISHED_NOTE}; their embeddings are not recomputed). ★ = our best "
              "embedding by mean R² over the two targets."]
    return "\n".join(lines) + "\n"


def _num(value: float, digits: int) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


# --- the whole benchmark ---------------------------------------------------------------------------

@dataclass
class BenchmarkResult:
    """Tables (and their Markdown) of one benchmark run, and where they were written."""

    landuse: pd.DataFrame
    landuse_md: str
    mvure: pd.DataFrame | None
    mvure_md: str | None
    notes: list[str]
    directory: Path
    run_id: str | None = None


def default_labels_path(config: Config) -> Path | None:
    """``${vars.data_root}/labels/mh180_region_labels.csv`` when the config has ``vars.data_root``."""
    root = config.vars.get("data_root")
    return None if not root else Path(root) / "labels" / "mh180_region_labels.csv"


def labels_for(config: Config) -> tuple[Path | None, bool, str | None]:
    """Task (b)'s labels file from ``benchmark_embeddings.labels`` (explicit) or the default path when it exists.

    Returns (path or None, whether it was given explicitly, the note saying why task (b) is skipped or None).
    """
    given = config.benchmark_embeddings.labels
    if given is not None:
        return Path(given), True, None
    default = default_labels_path(config)
    if default is not None and default.is_file():
        return default, False, None
    return None, False, ("task (b) skipped: no --labels given" if default is None
                         else f"task (b) skipped: no --labels given and {default} does not exist")


def metric_key(text: str) -> str:
    """An MLflow-safe metric name part."""
    return re.sub(r"[^0-9A-Za-z_.\-/ ]", "_", text)


def run_benchmark(config: Config, labels: Path | None = None, extra: dict[str, Path] | None = None,
                  splits: int | None = None, track: bool = True, explicit_labels: bool = True,
                  out: Path | None = None) -> BenchmarkResult:
    """Both tasks on every candidate; tables to ``out``; MLflow run.

    ``labels``: the per-region labels CSV of task (b) (None: task (b) is skipped); unless
    ``explicit_labels``, it is used only when its region ids are exactly this run's. ``splits``: K of task
    (a) (None: ``training.splits``, at most 10). ``track``: log the run ``benchmark-embeddings:<name>``.
    ``out``: default ``<work_dir>/results/benchmark_embeddings``; the benchmark-embeddings stage passes its
    staging directory, which the runner commits (landuse.stages.benchmarks).
    """
    from landuse.training.experiments import load_graph_for, results_dir

    cfg = config.training
    k = splits if splits is not None else min(cfg.splits, 10)
    if k < 1:
        raise ConfigError(f"benchmark_embeddings.splits (--splits): must be >= 1 (got {k})")
    label_frame = load_region_labels(labels) if labels is not None else None
    graph, xy = load_graph_for(config)
    notes: list[str] = []
    if label_frame is not None:
        region_ids = graph.region_ids.numpy()
        shared = np.isin(label_frame["region_id"].to_numpy(), region_ids)
        if explicit_labels and not shared.any():
            raise ConfigError(f"benchmark_embeddings.labels (--labels) {labels}: none of its region ids is a region of "
                              f"this run (e.g. {int(label_frame['region_id'].iloc[0])} vs {int(region_ids[0])})")
        if not explicit_labels and not (shared.all() and len(label_frame) == len(region_ids)):
            # the default file belongs to the mh-180 regions: on other regions it would match ids by chance
            notes.append(f"task (b) skipped: {labels} describes other regions ({int(shared.sum())} of "
                         f"{len(label_frame)} ids match this run's {len(region_ids)} regions)")
            label_frame = None
    embeddings, more = candidates(config, graph, xy, extra)
    notes += more
    ids = common_regions(embeddings)
    if len(ids) < graph.num_nodes:
        notes.append(f"{graph.num_nodes - len(ids)} regions are missing from some embedding: task (a) uses the "
                     f"{len(ids)} regions all embeddings share")
    pos = np.searchsorted(graph.region_ids.numpy(), ids)
    y, has_label = graph.y.numpy()[pos], graph.has_label.numpy()[pos]
    settings = ProbeSettings.from_training(cfg)
    log.info("benchmark: %d candidates, %d regions, %d splits", len(embeddings), len(ids), k)
    landuse = landuse_task(embeddings, ids, y, has_label, probe_splits(has_label, k, cfg, config.seed, xy[pos]),
                           settings, config.seed, progress=cfg.progress)
    landuse_md = landuse_markdown(landuse, settings, len(ids))
    mvure = mvure_md = None
    if label_frame is not None:
        mvure = mvure_protocol(embeddings, label_frame, config.seed)
        n = len(common_regions(embeddings, label_frame["region_id"].to_numpy()))
        mvure_md = mvure_markdown(mvure, n)
    out = results_dir(config, KIND) if out is None else out
    frames = {"landuse_task": landuse, **({"mvure_protocol": mvure} if mvure is not None else {})}
    texts = {"landuse_task": landuse_md, **({"mvure_protocol": mvure_md} if mvure_md is not None else {})}
    result = BenchmarkResult(landuse, landuse_md, mvure, mvure_md, notes, out)
    if track:
        result.run_id = _track(config, frames, texts, out, landuse, mvure, k, labels)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            frame.to_csv(out / f"{name}.csv", index=False)
        for name, text in texts.items():
            (out / f"{name}.md").write_text(text)
    return result


def _track(config: Config, frames: dict, texts: dict, out: Path, landuse: pd.DataFrame, mvure: pd.DataFrame | None,
           k: int, labels: Path | None) -> str:
    import mlflow

    from landuse.training.tracking import log_config, log_table_artifacts, setup_mlflow

    setup_mlflow(config)
    with mlflow.start_run(run_name=f"benchmark-embeddings:{config.name}") as run:
        log_config(config)
        mlflow.set_tags({"kind": "benchmark-embeddings", "splits": str(k), "labels": str(labels) if labels else "none"})
        metrics = {}
        for _, r in landuse.iterrows():
            metrics[f"landuse_kl.{metric_key(r['embedding'])}"] = r["kl"]
            metrics[f"landuse_cosine.{metric_key(r['embedding'])}"] = r["cosine"]
        if mvure is not None:
            for _, r in mvure[mvure["kind"] != "published"].iterrows():
                for col in ("crime_count_r2", "checkin_count_r2", "nmi", "ari"):
                    metrics[f"{col}.{metric_key(r['embedding'])}"] = r[col]
            best = best_ours(mvure)
            if best is not None:
                metrics["best_mean_r2"] = mvure.loc[best, "mean_r2"]
                mlflow.set_tag("best_embedding", mvure.loc[best, "embedding"])
        mlflow.log_metrics({key: float(v) for key, v in metrics.items() if np.isfinite(v)})
        log_table_artifacts(frames, out, texts)
        return run.info.run_id
