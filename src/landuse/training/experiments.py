"""Experiments: train one variant, the 14-variant ablation, the fusion ablation — tracked in MLflow.

Each experiment is one MLflow parent run with a nested run per variant (or feature set): the
resolved config as params, per-epoch mean curves, summary metrics (mean and std over splits),
the tables (CSV + Markdown), the training curves (PNG) and the input tables' manifest as
artifacts. The configured ``training.variant`` on ``training.features`` is logged as a model
(the split with the lowest validation KL), registered, and becomes ``champion`` only if it beats
the current champion's validation KL.

Variants adapt to the edge tables that exist (:func:`variant_blocker`): a city without trips has
no flow edges, so the flow variants cannot run. ``train`` (and ``fusion``) then fall back to the
first runnable variant of :data:`FALLBACK_VARIANTS`, with a warning and the MLflow tag
``variant_fallback``; ``ablation`` trains the runnable variants and lists the others as rows with
status ``skipped`` and a ``reason``. A variant that raises is a row with status ``failed`` (the
one-line error as reason) and the others go on; every row is written (CSV + Markdown) as soon as
it is known. The experiment fails only when every variant it tried failed. After an ablation the
model registered is ``training.variant`` if it ran, else the runnable variant with the lowest
validation KL (tag ``registered_because``), so ``predict`` always finds a model.
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

from landuse.config import Config, ConfigError, fusion_features
from landuse.constants import MANIFEST_FILE, MODALITIES, MODALITY_CODES
from landuse.data.reader import GraphData
from landuse.training.protocol import METRICS, SplitRun, feature_matrix, run_protocol, summarise

from landuse.constants import HGCN
from landuse.training.protocol import OPERATOR_EDGES, needed_operators

log = logging.getLogger(__name__)
OPTIMISTIC = "selection=test: the epoch with the lowest TEST KL (the paper's rule) - optimistic, not a held-out estimate"
MODEL_NAME = "model"
# train / fusion train the first runnable variant of this order when training.variant cannot run
FALLBACK_VARIANTS: tuple[str, ...] = (HGCN, "GCN_adj", "None")
OK, SKIPPED, FAILED = "ok", "skipped", "failed"  # the status column of the results tables
# why an edge set is absent / empty, for the reason column
EDGE_ABSENT = {"flow": "no trips", "adjacency": "no edges_adjacency table; run `landuse run regions`",
               "distance_decay": "no edges_distance_decay table; run `landuse run regions`"}
EDGE_EMPTY = {"flow": "no flows between regions", "adjacency": "no region touches another",
              "distance_decay": "no centroids within regions.decay_radius_m"}


class ExperimentError(ConfigError):
    """Every variant an experiment tried failed (their errors are in the results table)."""


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
        if all(f in letters for f in self.features):
            return "".join(letters[f] for f in self.features)
        return "+".join(self.features)


def read_results_csv(path: Path) -> pd.DataFrame:
    """A results table written by an experiment; the variant named ``None`` stays a string, not NaN.

    Skipped / failed rows (``status``) have no metrics, rank or median epoch: those read as NaN.
    """
    return pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])


def results_dir(config: Config, kind: str) -> Path:
    """Where an experiment's tables and plots are written (also logged to MLflow)."""
    return config.driver_dir / "results" / kind


def load_graph_for(config: Config) -> tuple[GraphData, np.ndarray]:
    """The assembled node/edge tables through Petastorm, plus region centroids (for blocked splits)."""
    from landuse.data.reader import load_graph
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import CENTROID_X, CENTROID_Y, REGION_ID, T_REGIONS

    graph = load_graph(config.tables_dir, classes=list(config.labels.classes))
    regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID, CENTROID_X, CENTROID_Y]).set_index(REGION_ID)
    xy = regions.loc[graph.region_ids.numpy(), [CENTROID_X, CENTROID_Y]].to_numpy(float)
    return graph, xy


def variant_blocker(graph: GraphData, variant: str) -> str | None:
    """Why ``variant`` cannot run on ``graph``, e.g. ``needs flow edges (no trips)``; None when it can.

    Each operator of the variant (:func:`~landuse.training.protocol.needed_operators`) is built from
    an edge set (:data:`~landuse.training.protocol.OPERATOR_EDGES`: adj/dd from the adjacency and
    distance-decay edges, in/out/avg from the flow edges); the set must be loaded and non-empty.
    """
    problems: dict[str, str] = {}
    for edge_set in sorted({OPERATOR_EDGES[op] for op in needed_operators([variant])}):
        if edge_set not in graph.edges:
            problems[edge_set] = EDGE_ABSENT.get(edge_set, f"no {edge_set} edges loaded")
        elif graph.edges[edge_set][0].shape[1] == 0:
            problems[edge_set] = EDGE_EMPTY.get(edge_set, f"edges_{edge_set} is empty")
    if not problems:
        return None
    names = {"flow": "flow", "adjacency": "adjacency", "distance_decay": "distance-decay"}
    return "; ".join(f"needs {names.get(k, k)} edges ({why})" for k, why in problems.items())


def runnable_variants(graph: GraphData, variants: Sequence[str]) -> dict[str, str | None]:
    """``variant -> None`` for each of ``variants`` that can run on ``graph``, else the reason it cannot."""
    return {v: variant_blocker(graph, v) for v in variants}


def choose_variant(graph: GraphData, wanted: str) -> tuple[str, str | None]:
    """(the variant to train, None) when ``wanted`` can run; else (the first runnable variant of
    :data:`FALLBACK_VARIANTS`, a note saying why)."""
    reason = variant_blocker(graph, wanted)
    if reason is None:
        return wanted, None
    for candidate in FALLBACK_VARIANTS:
        if variant_blocker(graph, candidate) is None:
            return candidate, f"training.variant {wanted} cannot run: {reason}; trained {candidate} instead"
    raise ConfigError(f"training.variant: {wanted} cannot run ({reason}) and neither can {', '.join(FALLBACK_VARIANTS)}")


def error_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: first line of the message`` (at most 300 characters)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = text if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return line[:300]


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
    row["status"], row["reason"] = OK, ""
    return row


def status_row(variant: str, code: str, status: str, reason: str, selection: str) -> dict:
    """A row for a variant that was not trained (``skipped``) or raised (``failed``): no metrics, 0 splits."""
    row: dict = {"variant": variant, "features": code}
    for metric in (*METRICS, "val_kl"):
        row[metric] = row[f"{metric}_std"] = math.nan
    return {**row, "splits": 0, "epoch_median": None, "selection": selection, "status": status, "reason": reason}


def results_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows (from :func:`table_row` / :func:`status_row`) as the results table; trained rows ranked
    by mean test KL (1 = best), the others without rank."""
    frame = pd.DataFrame(list(rows))
    if "status" not in frame.columns:
        frame["status"], frame["reason"] = OK, ""
    trained = frame["status"] == OK
    frame.insert(2, "rank", frame["kl"].where(trained).rank(method="min").astype("Int64"))
    frame["splits"] = frame["splits"].fillna(0).astype(int)
    frame["epoch_median"] = pd.array(frame["epoch_median"], dtype="Int64")
    return frame


def results_table(trials: Sequence[Trial], selection: str) -> pd.DataFrame:
    """All trials, ranked by mean test KL (1 = best)."""
    return results_frame([table_row(t, selection) for t in trials])


def markdown(frame: pd.DataFrame, title: str, selection: str, by: str = "variant") -> str:
    """The table as Markdown: metric mean ± std over splits; the optimistic rule flagged."""
    lines = [f"### {title}", ""]
    if selection == "test":
        lines += [f"> **{OPTIMISTIC}**", ""]
    head = [by, "KL", "L1 (mean)", "L1 (sum)", "cosine", "rank"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    status = frame["status"] if "status" in frame.columns else pd.Series(OK, index=frame.index)
    for (_, r), state in zip(frame.iterrows(), status):
        if state == OK:
            cells = [str(r[by])] + [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in METRICS] + [str(r["rank"])]
        else:  # skipped / failed: no metrics; the reason is listed below the table
            cells = [str(r[by])] + ["–"] * len(METRICS) + [str(state)]
        lines.append("| " + " | ".join(cells) + " |")
    trained = frame[status == OK]
    n = int(trained["splits"].max()) if len(trained) else 0
    lines += ["", f"Test metrics, mean ± std over {n} splits; epoch chosen on "
              f"{'validation' if selection == 'validation' else 'test'} KL. KL = KL(y‖ŷ) batchmean; "
              "L1 (mean) = mean |ŷ−y| over regions × classes (the paper's); L1 (sum) = per-region sum over "
              "classes (HGI/RegionDCL's); cosine = mean row-wise cosine similarity."]
    others: dict[tuple[str, str], list[str]] = {}  # (status, reason) -> names, in table order
    for (_, r), state in zip(frame.iterrows(), status):
        if state != OK:
            reason = r.get("reason")
            others.setdefault((str(state), reason if isinstance(reason, str) and reason else "no reason recorded"),
                              []).append(str(r[by]))
    if others:
        lines += ["", "Not trained:", ""]
        lines += [f"- {', '.join(names)}: {state} — {reason}" for (state, reason), names in others.items()]
    return "\n".join(lines) + "\n"


def per_class_table(trial: Trial, classes: Sequence[str], y: np.ndarray) -> pd.DataFrame:
    """The thesis's per-class absolute / relative error table, test nodes, averaged over splits."""
    from landuse.training.metrics import per_class_errors

    frames = [per_class_errors(r.probs[r.indices["test"]], y[r.indices["test"]], classes) for r in trial.runs]
    return pd.concat(frames).groupby(level="class", sort=False).mean().reset_index()


def run_trials(config: Config, graph: GraphData, xy: np.ndarray | None, plan: list[tuple[str, tuple[str, ...]]]) -> list[Trial]:
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


def log_and_register(config: Config, graph: GraphData, trial: Trial, why: str | None = None,
                     kind: str = "train") -> dict:
    """Log the trial's best-validation split as an inductive MLflow region model and register it.

    The version carries the comparability key of ``kind`` (the experiment), the city's evaluation
    data, the classes, the feature set and the protocol; ``champion-<key>`` moves only when it beats
    that key's champion on validation KL (see :func:`landuse.training.tracking.register_model`).
    ``why`` (when the model is not simply ``training.variant``) becomes the ``registered_because``
    tag of the run and of the model version.
    """
    import tempfile

    import mlflow

    from landuse.serving.pyfunc import build_spec, log_region_model
    from landuse.training.protocol import needed_operators
    from landuse.training.tracking import comparability_key, register_model

    cfg = config.training
    best = min(trial.runs, key=lambda r: r.metrics["val"]["kl"] if "val" in r.metrics else r.metrics["test"]["kl"])
    # the model's input width as in training (features, presence flags, spatial and label lags):
    # one standardisation statistic per input column
    spec = build_spec(graph, trial.variant, trial.features, sorted(needed_operators([trial.variant])),
                      int(best.mean.shape[0]), cfg)
    val_kl = best.metrics["val"]["kl"] if "val" in best.metrics else best.metrics["test"]["kl"]
    parts = key_parts(config, kind, graph.classes, trial.features)
    key = comparability_key(parts)
    metadata = {"variant": trial.variant, "features": list(trial.features), "classes": list(graph.classes),
                "split": best.split, "best_epoch": best.best_epoch, "trained_on_regions": graph.num_nodes,
                "comparability_key": key}
    with tempfile.TemporaryDirectory(prefix="landuse-model-") as tmp:
        info = log_region_model(graph, spec, best.state, best.mean, best.std, MODEL_NAME, metadata, Path(tmp))
    mlflow.log_metric("model_val_kl", val_kl)
    mlflow.log_dict({"val": best.indices["val"].tolist(), "test": best.indices["test"].tolist(),
                     "train": best.indices["train"].tolist(), "region_ids": graph.region_ids.tolist()},
                    "model_split.json")
    run = mlflow.active_run()
    assert run is not None, "the caller starts the trial's run before logging its model"
    tags = {"variant": trial.variant, "features": trial.code, "run_id": run.info.run_id}
    if why:
        tags["registered_because"] = why
        mlflow.set_tag("registered_because", why)
    version, champion = register_model(info.model_uri, config.training.registered_model, val_kl, tags, key, parts)
    return {"model_uri": info.model_uri, "version": version, "champion": champion, "val_kl": val_kl,
            "comparability_key": key}


def key_parts(config: Config, kind: str, classes: Sequence[str], features: Sequence[str]) -> dict:
    """What makes two versions' validation KL comparable: the experiment, the city's evaluation data
    (regions and labels fingerprints), the classes, the feature set and the protocol."""
    from landuse.manifest import read_manifest
    from landuse.spark.schemas import T_LABELS, T_REGIONS

    data = {}
    for name in (T_REGIONS, T_LABELS):
        manifest = read_manifest(config.tables_dir / name)
        data[name] = manifest.get("fingerprint") if manifest else None
    cfg = config.training
    protocol = {"split": cfg.split, "train_fraction": cfg.train_fraction, "val_fraction": cfg.val_fraction,
                "selection": cfg.selection, "splits": cfg.splits}
    if cfg.split == "blocked":
        protocol["block_m"] = cfg.block_m
    return {"experiment": kind, "city": config.name, "data": data, "classes": list(classes),
            "features": list(features), "protocol": protocol}


LINEAGE_TABLES = ("node_features", "edges_adjacency", "edges_flow", "edges_distance_decay", "regions", "labels")


def log_inputs(config: Config) -> None:
    """The run's data lineage and the fitted models its features came from: every input table as an
    MLflow dataset (digest = the table's fingerprint) and the embedding models as MLflow models."""
    from landuse.manifest import read_manifest
    from landuse.serving.embeddings import log_embedding_models
    from landuse.training.tracking import log_lineage

    present = {name: config.tables_dir / name for name in LINEAGE_TABLES}
    manifests = {name: read_manifest(path) for name, path in present.items()}
    log_lineage({k: v for k, v in present.items() if manifests[k]}, manifests)
    log_embedding_models(config)


def run_experiment(config: Config, kind: str, out: Path | None = None) -> tuple[pd.DataFrame, Path, dict]:
    """``train`` | ``ablation`` | ``fusion``: train, track, write tables into ``out`` (default
    :func:`results_dir`); returns (table, markdown path, model info).

    Whether an unchanged experiment is rerun is the stage runner's business (landuse.stages.experiments):
    this function always trains. ``out/run.json`` records the MLflow run, the registered model and
    the skipped and failed variants.
    """
    import mlflow

    from landuse.training.tracking import log_config, log_table_artifacts, setup_mlflow

    cfg = config.training
    graph, xy = load_graph_for(config)
    features = tuple(cfg.features)
    variant, fallback = cfg.variant, None
    if kind in ("train", "fusion"):
        variant, fallback = choose_variant(graph, cfg.variant)
        if fallback:
            log.warning("%s: %s", kind, fallback)
    if kind == "train":
        plan = [(variant, features)]
    elif kind == "ablation":
        plan = [(v, features) for v in cfg.variants]
    elif kind == "fusion":
        known = {*MODALITIES, *config.inputs.embeddings}
        plan = [(variant, fusion_features(code, known)) for code in cfg.fusion]
    else:
        raise ValueError(kind)
    for _, feats in plan:
        feature_matrix(graph, feats)  # fail before any training if a modality is missing
    blockers = runnable_variants(graph, [v for v, _ in plan])
    if all(blockers.values()):
        raise ConfigError(f"{kind}: none of the variants can run on {config.tables_dir}: "
                          + "; ".join(f"{v} {why}" for v, why in blockers.items())
                          + f" (add one of {', '.join(FALLBACK_VARIANTS)} to training.variants)")
    setup_mlflow(config)
    out = Path(out) if out is not None else results_dir(config, kind)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").unlink(missing_ok=True)  # written last: its presence means the run completed
    by = "features" if kind == "fusion" else "variant"
    title = {"train": f"{variant} on {'+'.join(features)}",
             "ablation": f"HGCN ablation ({'+'.join(features)} features)",
             "fusion": f"Multimodal fusion ({variant})"}[kind]
    model_info: dict = {}
    with mlflow.start_run(run_name=f"{kind}:{config.name}") as parent:
        log_config(config)
        mlflow.set_tags({"kind": kind, "selection": cfg.selection, "split": cfg.split})
        if cfg.selection == "test":
            mlflow.set_tag("warning", OPTIMISTIC)
        if fallback:
            mlflow.set_tag("variant_fallback", fallback)
        skipped = {v: why for v, why in blockers.items() if why}
        if skipped:
            mlflow.set_tag("skipped_variants", ", ".join(skipped))
            log.warning("%s: skipping %d variant(s) that cannot run on these tables: %s", kind, len(skipped),
                        "; ".join(f"{v} {why}" for v, why in skipped.items()))
        manifest = config.tables_dir / "node_features" / MANIFEST_FILE
        if manifest.exists():  # log_text: the work dir may be on an object store
            mlflow.log_text(manifest.read_text(), f"inputs/{MANIFEST_FILE}")
        log_inputs(config)

        rows: list[dict] = []
        trials: list[Trial] = []
        child_runs: dict[tuple[str, tuple[str, ...]], str] = {}
        failed: dict[str, str] = {}
        errors: list[BaseException] = []

        def write_partial() -> pd.DataFrame:
            """The rows so far as CSV + Markdown (a crash later never loses them)."""
            frame = results_frame(rows)
            frame.to_csv(out / f"{kind}.csv", index=False)
            (out / f"{kind}.md").write_text(markdown(frame, title, cfg.selection, by=by))
            return frame

        from tqdm.auto import tqdm

        runnable = sum(1 for v, _ in plan if not blockers[v])
        with tqdm(total=runnable * cfg.splits, desc="training", unit="split", disable=not cfg.progress,
                  leave=False) as bar:
            for v, feats in plan:
                code = Trial(v, feats, []).code
                if blocked := blockers[v]:
                    rows.append(status_row(v, code, SKIPPED, blocked, cfg.selection))
                    write_partial()
                    continue
                try:
                    trial, run_id = train_and_log(config, graph, xy, v, feats, out, bar)
                except Exception as exc:  # noqa: BLE001 - one variant's failure must not lose the others
                    line = error_line(exc)
                    log.error("%s: variant %s on %s failed: %s", kind, v, code, line)
                    log.debug("%s: variant %s traceback", kind, v, exc_info=True)
                    failed[f"{v}:{code}"] = line
                    errors.append(exc)
                    rows.append(status_row(v, code, FAILED, line, cfg.selection))
                else:
                    trials.append(trial)
                    child_runs[(v, feats)] = run_id
                    rows.append(table_row(trial, cfg.selection))
                write_partial()
        if failed:
            mlflow.set_tag("failed_variants", ", ".join(failed))
        if not trials:
            write_partial()
            if len(errors) == 1:
                raise errors[0]
            raise ExperimentError(f"{kind}: every variant that could run failed ({len(errors)}); first: "
                                  f"{next(iter(failed))}: {next(iter(failed.values()))}; table: {out / (kind + '.md')}")

        chosen, why = registration_choice(kind, cfg.variant, features, trials, blockers, failed, fallback)
        if chosen is not None:
            with mlflow.start_run(run_id=child_runs[(chosen.variant, chosen.features)], nested=True):
                model_info = log_and_register(config, graph, chosen, why, kind)
            if why:
                mlflow.set_tags({"registered_variant": chosen.variant, "registered_because": why})
                log.warning("%s: registered %s: %s", kind, chosen.variant, why)
        table = write_partial()
        text = markdown(table, title, cfg.selection, by=by)
        frames = {kind: table}
        main = chosen or next((t for t in trials if t.variant == variant), trials[0])
        frames["per_class_errors"] = per_class_table(main, graph.classes, graph.y.numpy())
        log_table_artifacts(frames, out, {kind: text})
        best = table[table["status"] == OK].sort_values("kl").iloc[0]
        mlflow.log_metrics({"best_test_kl": float(best["kl"])})
        record = {"run_id": parent.info.run_id,
                  "model": model_info, "fallback": fallback, "skipped": skipped, "failed": failed}
        (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return table, out / f"{kind}.md", model_info


def train_and_log(config: Config, graph: GraphData, xy: np.ndarray, variant: str, features: tuple[str, ...],
                  directory: Path, bar=None) -> tuple[Trial, str]:
    """Train one (variant, features) over the splits in its own nested MLflow run; (trial, run id).

    When training raises, the nested run carries the one-line error (tag ``error``) and ends FAILED.
    """
    import mlflow

    code = Trial(variant, features, []).code
    with mlflow.start_run(run_name=f"{variant}:{code}", nested=True) as run:
        mlflow.set_tags({"variant": variant, "features": code})
        try:
            trial = Trial(variant, features, run_protocol(graph, variant, features, config.training, config.seed, xy, bar))
            log_trial(trial, directory)
        except Exception as exc:
            mlflow.set_tag("error", error_line(exc))
            raise
    return trial, run.info.run_id


def mean_val_kl(trial: Trial) -> float:
    """Mean validation KL over the splits (test KL when there is no validation part)."""
    val = summarise(trial.runs, "val")["kl"][0]
    return val if math.isfinite(val) else summarise(trial.runs, "test")["kl"][0]


def registration_choice(kind: str, wanted: str, features: tuple[str, ...], trials: Sequence[Trial],
                        blockers: dict[str, str | None], failed: dict[str, str],
                        fallback: str | None) -> tuple[Trial | None, str | None]:
    """The trial whose model is registered, and why when it is not simply ``training.variant``.

    train: its one trial (a fallback says so). fusion: ``training.variant`` (or its fallback) on
    ``training.features`` when that set was trained, else nothing. ablation: ``training.variant``
    if it ran, else the trained variant with the lowest mean validation KL.
    """
    if kind == "train":
        return trials[0], fallback
    if kind == "fusion":
        match = next((t for t in trials if t.features == features), None)
        return match, (fallback if match is not None else None)
    match = next((t for t in trials if t.variant == wanted and t.features == features), None)
    if match is not None:
        return match, None
    best = min(trials, key=mean_val_kl)
    code = Trial(wanted, features, []).code
    if blockers.get(wanted):
        state = f"cannot run ({blockers[wanted]})"
    elif f"{wanted}:{code}" in failed:
        state = f"failed ({failed[f'{wanted}:{code}']})"
    else:
        state = "is not in training.variants"
    return best, (f"training.variant {wanted} {state}; registered {best.variant}, the trained variant with the "
                  f"lowest validation KL ({mean_val_kl(best):.5f})")
