"""``benchmark-landuse``: the published region-embedding land-use protocol, for feature tables and our models.

The protocol of the region-embedding literature's land-use task (RegionDCL / HGI evaluation code):

* R repeats (``benchmark.repeats``, default 10). Repeat r draws a random ``test_fraction`` (20 %) of
  the labelled regions as test, then ``val_fraction`` (20 %) of the rest as validation; the rest
  trains. Split r depends only on (seed, r).
* **Feature tables** (any modality of ``node_features``, a user's ``inputs.embeddings``, or several side
  by side): an MLP probe ``Linear(d → 512) → sigmoid → Linear(512 → C)``, softmax output,
  KL(y ‖ ŷ) batchmean loss, Adam lr 0.01 with StepLR(step 10, γ 0.8), mini-batches of 64, 100 epochs;
  the test metrics are those at the epoch with the lowest validation KL. Inputs are z-scored with the
  training regions' statistics (the tables' scales differ by orders of magnitude).
* **Our end-to-end models** (``benchmark.variants`` on ``benchmark.model_features``): trained
  full-batch by the product's own protocol (:func:`landuse.training.protocol.train_split`, the
  config's training settings) on the SAME train / validation / test regions, epoch chosen on
  validation KL.

Every candidate reports test KL, L1 (per-region sum over classes) and cosine as mean ± std over the
repeats, plus its validation KL. "Best" is chosen by mean validation KL, never by test KL. Rows are
written (CSV + Markdown) as each candidate finishes, so a failure loses nothing already computed; a
candidate that fails is recorded with its one-line error and the others continue. Each probed feature
table is written as a Parquet table (region_id, vector) beside the results. Published results are
appended as rows of their own, labelled as published.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from landuse import literature
from landuse.config import Config, ConfigError, fusion_features, training_overrides
from landuse.constants import MODALITIES
from landuse.training.metrics import evaluate, kl_loss
from landuse.training.protocol import standardise
from landuse.training.splits import nested_splits

log = logging.getLogger(__name__)

KIND = "benchmark_landuse"
RESULT_METRICS = ("kl", "l1_sum", "cosine")
PUBLISHED_LABEL = "published"


@dataclass(frozen=True)
class PublishedRow:
    """A published region embedding's result on the NYC 2020 census tracts under this protocol."""

    method: str
    kl: float
    l1_sum: float = math.nan
    cosine: float = math.nan


def nyc_tracts_published() -> tuple[PublishedRow, ...]:
    """Published region embeddings for the 2,325 NYC 2020 census tracts (5 MapPLUTO land-use classes).

    The authors' releases evaluated under exactly this protocol (``nyc_ct2020_landuse`` of
    :mod:`landuse.literature`, which says where the figures come from); table order.
    """
    return tuple(PublishedRow(r.method, r.values["kl"], r.values["l1_sum"], r.values["cosine"])
                 for r in literature.benchmark("nyc_ct2020_landuse").results)


def published_rows(config: Config, num_regions: int) -> tuple[PublishedRow, ...]:
    """The published rows that apply to this config's regions (NYC 2020 tracts with their 5 classes)."""
    classes = ("residential", "mixed_commercial_office", "industrial", "transport_public_parking", "open_vacant")
    regions = config.inputs.regions
    if regions is not None and "nyc_ct2020" in str(regions.path) and tuple(config.labels.classes) == classes \
            and num_regions > 2000:
        return nyc_tracts_published()
    return ()


# --- the MLP probe --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeSettings:
    """The protocol's MLP probe."""

    hidden: int = 512
    epochs: int = 100
    lr: float = 0.01
    batch: int = 64
    step: int = 10
    gamma: float = 0.8


def probe(x: np.ndarray, y: np.ndarray, split: tuple[np.ndarray, np.ndarray, np.ndarray], settings: ProbeSettings,
          seed: int) -> dict:
    """Train the probe on one split; test metrics at the epoch with the lowest validation KL.

    x [N, d] (z-scored here with the training rows' statistics), y [N, C]; the split holds row positions.
    Returns {"test": metrics, "val": {"kl": ...}, "epoch": int}.
    """
    torch.manual_seed(seed)
    train, val, test = (torch.as_tensor(s, dtype=torch.long) for s in split)
    xt = torch.as_tensor(x, dtype=torch.float32)
    mean, std = standardise(xt, train, True)
    xt = (xt - mean) / std
    yt = torch.as_tensor(y, dtype=torch.float32)
    model = nn.Sequential(nn.Linear(x.shape[1], settings.hidden), nn.Sigmoid(), nn.Linear(settings.hidden, y.shape[1]))
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=settings.step, gamma=settings.gamma)
    generator = torch.Generator().manual_seed(seed)
    best: dict = {"val": {"kl": math.inf}}
    for epoch in range(settings.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(order), settings.batch):
            batch = order[start:start + settings.batch]
            optimiser.zero_grad()
            kl_loss(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            val_kl = kl_loss(model(xt[val]), yt[val]).item()
            if val_kl < best["val"]["kl"]:
                best = {"val": {"kl": val_kl}, "test": evaluate(model(xt[test]), yt[test]), "epoch": epoch}
    return best


# --- candidates -----------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One benchmark row to compute: a feature table for the probe, or one of our models."""

    name: str
    kind: str  # "features" (probed) | "model" (ours, end to end)
    features: tuple[str, ...]
    variant: str | None = None
    options: str = ""  # training overrides of a model row (benchmark.model_options)


def default_feature_sets(config: Config, available: Sequence[str]) -> list[tuple[str, ...]]:
    """Each available modality alone, then training.features, then all of them (duplicates dropped)."""
    sets: list[tuple[str, ...]] = [(m,) for m in available]
    wanted = tuple(f for f in config.training.features if f in available)
    sets += [wanted, tuple(available)] if wanted else [tuple(available)]
    return list(dict.fromkeys(sets))


def plan(config: Config, available: Sequence[str], runnable: Callable[[str], str | None]) -> tuple[list[Candidate], list[str]]:
    """The candidates in run order, and notes on what was left out (with why)."""
    cfg = config.benchmark
    notes: list[str] = []
    known = set(available)
    names = known | set(MODALITIES) | set(config.inputs.embeddings)
    if cfg.feature_sets:
        sets = [fusion_features(code, names) for code in cfg.feature_sets]
    else:
        sets = default_feature_sets(config, available)
    out: list[Candidate] = []
    for feats in sets:
        missing = [f for f in feats if f not in known]
        if missing:
            notes.append(f"features {'+'.join(feats)} skipped: modality {missing[0]!r} is not in node_features")
            continue
        out.append(Candidate("+".join(feats), "features", feats))
    model_sets = [fusion_features(code, names) for code in cfg.model_features] or [tuple(config.training.features)]
    for feats in model_sets:
        missing = [f for f in feats if f not in known]
        if missing:
            notes.append(f"models on {'+'.join(feats)} skipped: modality {missing[0]!r} is not in node_features")
            continue
        for entry in cfg.variants:
            variant, _, own = (part.strip() for part in entry.partition(":"))
            why = runnable(variant)
            if why:
                notes.append(f"{variant} skipped: {why}")
                continue
            for option in cfg.model_options:
                merged = ",".join(o for o in (own, option) if o)
                suffix = f" {{{merged}}}" if merged else ""
                out.append(Candidate(f"{variant} [{'+'.join(feats)}]{suffix}", "model", feats, variant, merged))
    return out, notes


# --- the run -------------------------------------------------------------------------------------

@dataclass
class LanduseBenchmark:
    """The results table (one row per candidate, then published rows) and where it was written."""

    table: pd.DataFrame
    markdown: str
    directory: Path
    notes: list[str]
    best: dict
    run_id: str | None = None


def _row(candidate: Candidate, results: list[dict], dim: int, seconds: float) -> dict:
    row: dict = {"model": candidate.name, "kind": candidate.kind, "variant": candidate.variant or "",
                 "features": "+".join(candidate.features), "options": candidate.options, "dim": dim, "status": "ok",
                 "error": ""}
    for metric in RESULT_METRICS:
        values = np.array([r["test"][metric] for r in results])
        row[metric], row[f"{metric}_std"] = float(values.mean()), float(values.std())
    vals = np.array([r["val"]["kl"] for r in results])
    row["val_kl"], row["val_kl_std"] = float(vals.mean()), float(vals.std())
    row["kl_per_repeat"] = json.dumps([round(float(r["test"]["kl"]), 6) for r in results])
    row["repeats"] = len(results)
    row["seconds"] = round(seconds, 1)
    return row


def paired_deltas(rows: pd.DataFrame) -> dict:
    """Per model row (not None itself): its test KL minus the None row's with the same features and options,
    as "mean ± std" of the per-repeat differences, ✓ when lower by more than one std."""
    out: dict = {}
    models = rows[rows["kind"] == "model"]
    for i, r in models.iterrows():
        if r["variant"] == "None":
            continue
        base = models[(models["variant"] == "None") & (models["features"] == r["features"])
                      & (models["options"].fillna("") == ("" if pd.isna(r["options"]) else r["options"]))]
        if base.empty:
            continue
        a, b = np.array(json.loads(r["kl_per_repeat"])), np.array(json.loads(base.iloc[0]["kl_per_repeat"]))
        if len(a) != len(b):
            continue
        d = a - b
        mark = " ✓" if d.mean() < 0 and -d.mean() > d.std() else ""
        out[i] = f"{d.mean():+.4f} ± {d.std():.4f}{mark}"
    return out


def markdown(table: pd.DataFrame, config: Config, num_regions: int, splits: int) -> str:
    """The results as Markdown: ours sorted by validation KL, then the published rows."""
    cfg = config.benchmark
    ours = table[table["kind"] != PUBLISHED_LABEL]
    ok = ours[ours["status"] == "ok"].sort_values("val_kl")
    rest = ours[ours["status"] != "ok"]
    pub = table[table["kind"] == PUBLISHED_LABEL]
    best = ok.index[0] if len(ok) else None
    lines = [f"### Land-use distribution, {config.name}: {num_regions} labelled regions, {splits} repeats", "",
             "| model | kind | dim | KL | L1 (sum) | cosine | val KL | ΔKL vs None |", "|---|---|---|---|---|---|---|---|"]

    def cell(r: pd.Series, metric: str) -> str:
        value, std = r.get(metric), r.get(f"{metric}_std")
        if value is None or not np.isfinite(value):
            return "–"
        return f"{value:.4f} ± {std:.4f}" if std is not None and np.isfinite(std) else f"{value:.3f}"

    deltas = paired_deltas(ok)
    for i, r in ok.iterrows():
        name = f"★ **{r['model']}**" if i == best else str(r["model"])
        lines.append(f"| {name} | {r['kind']} | {int(r['dim'])} | {cell(r, 'kl')} | {cell(r, 'l1_sum')} | "
                     f"{cell(r, 'cosine')} | {cell(r, 'val_kl')} | {deltas.get(i, '')} |")
    for _, r in rest.iterrows():
        lines.append(f"| {r['model']} | {r['kind']} | – | {r['status']}: {str(r['error'])[:80]} | | | | |")
    for _, r in pub.iterrows():
        lines.append(f"| {r['model']} | published | – | {cell(r, 'kl')} | {cell(r, 'l1_sum')} | {cell(r, 'cosine')} | – | |")
    lines += ["", f"Protocol: per repeat a random {cfg.test_fraction:.0%} test set, {cfg.val_fraction:.0%} of the rest "
              f"as validation; feature tables through the MLP probe (d → {cfg.probe_hidden}, sigmoid → C; KL loss; "
              f"Adam lr {cfg.probe_lr}, StepLR(10, 0.8); batch {cfg.probe_batch}; {cfg.probe_epochs} epochs; inputs "
              "z-scored on the training regions); our models (kind `model`) trained end to end on the same splits "
              f"({config.training.epochs} full-batch epochs, lr {config.training.lr}, dropout {config.training.dropout}). "
              "Test metrics at the epoch with the lowest validation KL; mean ± std over repeats. ★ = lowest mean "
              "validation KL (the test set never chooses). L1 is the per-region sum over classes. ΔKL vs None: a "
              "graph model's test KL minus the no-graph MLP's (`None`, same features and options) on the same "
              "repeats, mean ± std of the per-repeat differences; ✓ where it is lower by more than one std."]
    if len(pub):
        lines.append("Rows of kind `published`: published region embeddings for these tracts evaluated under this "
                     "protocol (the authors' embeddings, from OpenStreetMap POIs and building footprints), not recomputed here.")
    return "\n".join(lines) + "\n"


def run_landuse_benchmark(config: Config, track: bool = True, progress: bool | None = None,
                          out: Path | None = None) -> LanduseBenchmark:
    """Run every candidate on the same repeats; write results as they finish; log to MLflow when ``track``.

    ``out``: where results.csv / results.md / best.json / embeddings/ go (default ``results/benchmark_landuse``;
    the benchmark-landuse stage passes its staging directory, which the runner commits:
    landuse.stages.benchmarks).
    """
    from landuse.training.experiments import load_graph_for, results_dir, variant_blocker
    from landuse.training.protocol import (SMALL_GRAPH, cpu_threads, model_input, pick_device, train_split,
                                           training_input, training_operators)

    cfg = config.benchmark
    graph, _ = load_graph_for(config)
    labelled = np.flatnonzero(graph.has_label.numpy())
    if len(labelled) < 20:
        raise ConfigError(f"benchmark-landuse: only {len(labelled)} labelled regions; need at least 20 "
                          "(labels come from inputs.landuse through the labels stage)")
    splits = nested_splits(labelled, cfg.repeats, cfg.test_fraction, cfg.val_fraction, config.seed)

    candidates, notes = plan(config, list(graph.features), lambda variant: variant_blocker(graph, variant))
    out = results_dir(config, KIND) if out is None else out
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    y = graph.y.numpy()
    settings = ProbeSettings(hidden=cfg.probe_hidden, epochs=cfg.probe_epochs, lr=cfg.probe_lr, batch=cfg.probe_batch)
    device = pick_device(config.training.device)
    rows: list[dict] = []
    pub = published_rows(config, len(labelled))
    show = config.training.progress if progress is None else progress

    def save() -> pd.DataFrame:
        extra = [{"model": p.method, "kind": PUBLISHED_LABEL, "variant": "", "features": "", "dim": math.nan,
                  "status": "ok", "error": "", "kl": p.kl, "kl_std": math.nan, "l1_sum": p.l1_sum, "l1_sum_std": math.nan,
                  "cosine": p.cosine, "cosine_std": math.nan, "val_kl": math.nan, "val_kl_std": math.nan,
                  "repeats": math.nan, "seconds": math.nan} for p in pub]
        table = pd.DataFrame(rows + extra)
        text = markdown(table, config, len(labelled), cfg.repeats)
        table.to_csv(out / "results.csv", index=False)
        (out / "results.md").write_text(text)
        return table, text

    from tqdm.auto import tqdm

    ids = graph.region_ids.numpy()
    with cpu_threads(1 if graph.num_nodes < SMALL_GRAPH else None), \
            tqdm(total=len(candidates) * cfg.repeats, desc="benchmark-landuse", unit="fit", disable=not show) as bar:
        for cand in candidates:
            started = time.perf_counter()
            try:
                if cand.kind == "features":
                    x = model_input(graph, cand.features, presence=True).numpy()
                    _write_embedding(out / "embeddings" / f"{_safe(cand.name)}.parquet", ids, x)
                    results = []
                    for r, split in enumerate(splits):
                        results.append(probe(x, y, split, settings, config.seed + r))
                        bar.update(1)
                    dim = x.shape[1]
                else:
                    variant = cand.variant
                    if variant is None:  # plan() gives every model row a variant
                        raise ValueError(f"model row {cand.name!r} has no variant")
                    tcfg = dataclasses.replace(config.training, selection="validation", **training_overrides(cand.options))
                    x_t = training_input(graph, cand.features, tcfg)
                    ops = training_operators(graph, variant, tcfg)
                    results = []
                    for r, split in enumerate(splits):
                        run = train_split(x_t, graph.y, ops, variant, split, tcfg, config.seed + r, device, index=r)
                        results.append({"test": run.metrics["test"], "val": run.metrics["val"]})
                        bar.update(1)
                    dim = x_t.shape[1]
                rows.append(_row(cand, results, dim, time.perf_counter() - started))
                log.info("benchmark-landuse: %s KL %.4f ± %.4f (val %.4f)", cand.name, rows[-1]["kl"], rows[-1]["kl_std"],
                         rows[-1]["val_kl"])
            except (ConfigError, ValueError, RuntimeError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("benchmark-landuse: %s failed: %s", cand.name, message)
                rows.append({"model": cand.name, "kind": "model" if cand.variant else "features", "variant": cand.variant or "",
                             "features": "+".join(cand.features), "status": "failed", "error": message})
            save()
    table, text = save()
    ours = table[(table["kind"] != PUBLISHED_LABEL) & (table["status"] == "ok")]
    if ours.empty:
        raise ConfigError(f"benchmark-landuse: every candidate failed; see {out / 'results.csv'}")
    best_row = ours.sort_values("val_kl").iloc[0]
    best = {"model": best_row["model"], "kl": float(best_row["kl"]), "kl_std": float(best_row["kl_std"]),
            "l1_sum": float(best_row["l1_sum"]), "cosine": float(best_row["cosine"]), "val_kl": float(best_row["val_kl"])}
    (out / "best.json").write_text(json.dumps(best, indent=2))
    result = LanduseBenchmark(table, text, out, notes, best)
    if track:
        result.run_id = _track(config, table, text, out, best)
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_embedding(path: Path, region_ids: np.ndarray, x: np.ndarray) -> None:
    """A probed feature table as Parquet: region_id, vector (list<float32>)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from landuse.data.tables import list_array

    pq.write_table(pa.table({"region_id": pa.array(region_ids, pa.int64()), "vector": list_array(x.astype(np.float32))}),
                   path)


def _track(config: Config, table: pd.DataFrame, text: str, out: Path, best: dict) -> str:
    import mlflow

    from landuse.evaluation.embeddings_benchmark import metric_key
    from landuse.training.tracking import log_config, setup_mlflow

    setup_mlflow(config)
    with mlflow.start_run(run_name=f"benchmark-landuse:{config.name}") as run:
        log_config(config)
        mlflow.set_tags({"kind": "benchmark-landuse", "repeats": str(config.benchmark.repeats), "best_model": best["model"]})
        metrics = {}
        for _, r in table[(table["kind"] != PUBLISHED_LABEL) & (table["status"] == "ok")].iterrows():
            for metric in (*RESULT_METRICS, "val_kl"):
                metrics[f"{metric}.{metric_key(r['model'])}"] = float(r[metric])
        metrics.update({"best_kl": best["kl"], "best_val_kl": best["val_kl"]})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifact(str(out / "results.csv"), artifact_path=KIND)
        mlflow.log_text(text, f"{KIND}/results.md")
        return run.info.run_id
