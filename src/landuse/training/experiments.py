"""Experiments: train one variant, the 14-variant ablation, the fusion ablation — tracked in MLflow.

Each experiment is one MLflow parent run with a nested run per variant (or feature set): the
resolved config as params, per-epoch mean curves, summary metrics (mean and std over splits),
the tables (CSV + Markdown), the training curves (PNG) and the input tables' manifest as
artifacts. The configured ``training.variant`` on ``training.features`` is logged as a model
(the split with the lowest validation KL), registered, and becomes ``champion`` only if it beats
the current champion's validation KL.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from landuse.config import Config, ConfigError
from landuse.constants import MANIFEST_FILE, MODALITY_CODES
from landuse.data.reader import GraphData
from landuse.training.protocol import METRICS, SplitRun, build_operators, feature_matrix, run_protocol, summarise

log = logging.getLogger(__name__)
OPTIMISTIC = "selection=test: the epoch with the lowest TEST KL (the paper's rule) - optimistic, not a held-out estimate"
MODEL_NAME = "model"


@dataclass
class Trial:
    """One trained configuration: a variant on a feature set, over all splits."""

    variant: str
    features: tuple[str, ...]
    runs: list[SplitRun]

    @property
    def code(self) -> str:
        """Fusion code of the feature set, e.g. ``PIG``."""
        letters = {v: k for k, v in MODALITY_CODES.items()}
        return "".join(letters[f] for f in self.features)


def read_results_csv(path: Path) -> pd.DataFrame:
    """A results table written by an experiment; the variant named ``None`` stays a string, not NaN."""
    return pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])


def results_dir(config: Config, kind: str) -> Path:
    """Where an experiment's tables and plots are written (also logged to MLflow)."""
    return config.work_dir / "results" / kind


def load_graph_for(config: Config) -> tuple[GraphData, np.ndarray]:
    """The assembled node/edge tables through Petastorm, plus region centroids (for blocked splits)."""
    from landuse.data.reader import load_graph
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import CENTROID_X, CENTROID_Y, REGION_ID, T_REGIONS

    graph = load_graph(config.tables_dir, classes=list(config.labels.classes))
    regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID, CENTROID_X, CENTROID_Y]).set_index(REGION_ID)
    xy = regions.loc[graph.region_ids.numpy(), [CENTROID_X, CENTROID_Y]].to_numpy(float)
    return graph, xy


def table_row(trial: Trial, selection: str) -> dict:
    """Thesis-style row: mean and std over splits of each test metric, plus validation KL."""
    test, val = summarise(trial.runs, "test"), summarise(trial.runs, "val")
    row: dict = {"variant": trial.variant, "features": trial.code}
    for metric in METRICS:
        row[metric], row[f"{metric}_std"] = test[metric]
    row["val_kl"], row["val_kl_std"] = val["kl"]
    row["splits"] = len(trial.runs)
    row["epoch_median"] = int(np.median([r.best_epoch for r in trial.runs]))
    row["selection"] = selection
    return row


def results_table(trials: Sequence[Trial], selection: str) -> pd.DataFrame:
    """All trials, ranked by mean test KL (1 = best)."""
    frame = pd.DataFrame([table_row(t, selection) for t in trials])
    frame.insert(2, "rank", frame["kl"].rank(method="min").astype(int))
    return frame


def markdown(frame: pd.DataFrame, title: str, selection: str, by: str = "variant") -> str:
    """The table as Markdown: metric mean ± std over splits; the optimistic rule flagged."""
    lines = [f"### {title}", ""]
    if selection == "test":
        lines += [f"> **{OPTIMISTIC}**", ""]
    head = [by, "KL", "L1 (mean)", "L1 (sum)", "cosine", "rank"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [str(r[by])] + [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in METRICS] + [str(r["rank"])]
        lines.append("| " + " | ".join(cells) + " |")
    n = int(frame["splits"].iloc[0]) if len(frame) else 0
    lines += ["", f"Test metrics, mean ± std over {n} splits; epoch chosen on "
              f"{'validation' if selection == 'validation' else 'test'} KL. KL = KL(y‖ŷ) batchmean; "
              "L1 (mean) = mean |ŷ−y| over regions × classes (the paper's); L1 (sum) = per-region sum over "
              "classes (HGI/RegionDCL's); cosine = mean row-wise cosine similarity."]
    return "\n".join(lines) + "\n"


def per_class_table(trial: Trial, classes: Sequence[str], y: np.ndarray) -> pd.DataFrame:
    """The thesis's per-class absolute / relative error table, test nodes, averaged over splits."""
    from landuse.training.metrics import per_class_errors

    frames = [per_class_errors(r.probs[r.indices["test"]], y[r.indices["test"]], classes) for r in trial.runs]
    return pd.concat(frames).groupby(level="class", sort=False).mean().reset_index()


def run_trials(config: Config, graph: GraphData, xy: np.ndarray, plan: list[tuple[str, tuple[str, ...]]]) -> list[Trial]:
    """Train each (variant, features) of ``plan`` over the configured splits, with one progress bar."""
    from tqdm.auto import tqdm

    cfg = config.training
    total = len(plan) * cfg.splits
    trials = []
    with tqdm(total=total, desc="training", unit="split", disable=not cfg.progress, leave=False) as bar:
        for variant, features in plan:
            trials.append(Trial(variant, features, run_protocol(graph, variant, features, cfg, config.seed, xy, bar)))
    return trials


def log_trial(trial: Trial, directory: Path) -> None:
    """Nested run content for one trial: summary metrics, mean curves, curve plot."""
    import mlflow

    from landuse.training.tracking import log_curves, plot_curves

    run = mlflow.active_run()
    assert run is not None
    mlflow.set_tags({"variant": trial.variant, "features": trial.code})
    for part in ("val", "test"):
        for metric, (mean, std) in summarise(trial.runs, part).items():
            if math.isfinite(mean):
                mlflow.log_metrics({f"{part}_{metric}": mean, f"{part}_{metric}_std": std})
    curves = {name: np.nanmean(np.vstack([r.curves[name] for r in trial.runs]), 0) for name in trial.runs[0].curves}
    log_curves(run.info.run_id, curves, prefix="mean_")
    png = plot_curves({k: [r.curves[k] for r in trial.runs] for k in ("train_kl", "val_kl", "test_kl")},
                      directory / f"curves_{trial.variant}_{trial.code}.png", f"{trial.variant} ({trial.code})")
    mlflow.log_artifact(str(png))


def log_and_register(config: Config, graph: GraphData, trial: Trial) -> dict:
    """Log the trial's best-validation split as an MLflow model and register it (champion if better)."""
    import mlflow

    from landuse.models.hgcn import HGCN
    from landuse.models.serving import RegionModel
    from landuse.training.tracking import register_model

    best = min(trial.runs, key=lambda r: r.metrics["val"]["kl"] if "val" in r.metrics else r.metrics["test"]["kl"])
    model = HGCN(sum(graph.features[f].shape[1] for f in trial.features), len(graph.classes),
                 variant=trial.variant, dropout=config.training.dropout)
    model.load_state_dict(best.state)
    operators = build_operators(graph, model.required_operators)
    served = RegionModel(model, operators, best.mean, best.std).eval()
    x = feature_matrix(graph, trial.features).numpy().astype(np.float32)
    val_kl = best.metrics["val"]["kl"] if "val" in best.metrics else best.metrics["test"]["kl"]
    metadata = {"variant": trial.variant, "features": list(trial.features), "classes": list(graph.classes),
                "split": best.split, "best_epoch": best.best_epoch, "num_nodes": graph.num_nodes}
    with torch.no_grad():
        example_out = served(torch.from_numpy(x)).numpy()
    from mlflow.models import infer_signature

    info = mlflow.pytorch.log_model(served, name=MODEL_NAME, input_example=x, signature=infer_signature(x, example_out),
                                    metadata=metadata)
    mlflow.log_metric("model_val_kl", val_kl)
    mlflow.log_dict({"val": best.indices["val"].tolist(), "test": best.indices["test"].tolist(),
                     "train": best.indices["train"].tolist(), "region_ids": graph.region_ids.tolist()},
                    "model_split.json")
    version, champion = register_model(info.model_uri, config.training.registered_model, val_kl,
                                       {"variant": trial.variant, "features": trial.code,
                                        "run_id": mlflow.active_run().info.run_id})
    return {"model_uri": info.model_uri, "version": version, "champion": champion, "val_kl": val_kl}


def experiment_fingerprint(config: Config, kind: str) -> str:
    """What determines an experiment's results: its kind, the training config and the input tables."""
    import landuse
    from landuse.manifest import fingerprint, read_manifest

    inputs = {}
    for name in ("node_features", "edges_adjacency", "edges_flow", "edges_distance_decay"):
        manifest = read_manifest(config.tables_dir / name)
        inputs[name] = manifest["fingerprint"] if manifest else None
    return fingerprint([kind, landuse.__version__, config.section_hash("seed", "training", "labels"), inputs])


def previous_result(config: Config, kind: str) -> tuple[pd.DataFrame, Path, dict] | None:
    """The results of an identical earlier experiment (same fingerprint), or None."""
    out = results_dir(config, kind)
    try:
        record = json.loads((out / "run.json").read_text())
        table = read_results_csv(out / f"{kind}.csv")
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != experiment_fingerprint(config, kind) or not (out / f"{kind}.md").exists():
        return None
    return table, out / f"{kind}.md", record.get("model", {})


def run_experiment(config: Config, kind: str, force: bool = True) -> tuple[pd.DataFrame, Path, dict]:
    """``train`` | ``ablation`` | ``fusion``: train, track, write tables; returns (table, markdown path, model info).

    With ``force=False`` an experiment whose fingerprint (config + input tables) matches the last
    one of its kind is not rerun: its tables are returned as they are.
    """
    import mlflow

    from landuse.training.tracking import log_config, log_table_artifacts, setup_mlflow

    if not force:
        previous = previous_result(config, kind)
        if previous is not None:
            log.info("%s: config and input tables unchanged since the last run; reusing its results "
                     "(use --force to retrain)", kind)
            return previous
    cfg = config.training
    graph, xy = load_graph_for(config)
    features = tuple(cfg.features)
    if kind == "train":
        plan = [(cfg.variant, features)]
    elif kind == "ablation":
        plan = [(v, features) for v in cfg.variants]
    elif kind == "fusion":
        plan = [(cfg.variant, tuple(MODALITY_CODES[c] for c in code)) for code in cfg.fusion]
    else:
        raise ValueError(kind)
    for _, feats in plan:
        feature_matrix(graph, feats)  # fail before any training if a modality is missing
    setup_mlflow(config)
    out = results_dir(config, kind)
    out.mkdir(parents=True, exist_ok=True)
    by = "features" if kind == "fusion" else "variant"
    title = {"train": f"{cfg.variant} on {'+'.join(features)}",
             "ablation": f"HGCN ablation ({'+'.join(features)} features)",
             "fusion": f"Multimodal fusion ({cfg.variant})"}[kind]
    model_info: dict = {}
    with mlflow.start_run(run_name=f"{kind}:{config.name}") as parent:
        log_config(config)
        mlflow.set_tags({"kind": kind, "selection": cfg.selection, "split": cfg.split})
        if cfg.selection == "test":
            mlflow.set_tag("warning", OPTIMISTIC)
        manifest = config.tables_dir / "node_features" / MANIFEST_FILE
        if manifest.exists():
            mlflow.log_artifact(str(manifest), artifact_path="inputs")
        trials = run_trials(config, graph, xy, plan)
        for trial in trials:
            with mlflow.start_run(run_name=f"{trial.variant}:{trial.code}", nested=True):
                log_trial(trial, out)
                if trial.variant == cfg.variant and trial.features == features:
                    model_info = log_and_register(config, graph, trial)
        table = results_table(trials, cfg.selection)
        text = markdown(table, title, cfg.selection, by=by)
        frames = {kind: table}
        main = next((t for t in trials if t.variant == cfg.variant), trials[0])
        frames["per_class_errors"] = per_class_table(main, graph.classes, graph.y.numpy())
        log_table_artifacts(frames, out, {kind: text})
        best = table.sort_values("kl").iloc[0]
        mlflow.log_metrics({"best_test_kl": float(best["kl"])})
        record = {"run_id": parent.info.run_id, "fingerprint": experiment_fingerprint(config, kind), "model": model_info}
        (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return table, out / f"{kind}.md", model_info
