"""``landuse run zeroshot``: prompts → method → tables, GeoJSON, metrics against labels, MLflow run.

Outputs of method ``<m>`` (``text``, ``llm``, ``image``):

* ``tables/zeroshot_<m>``: one row per region, the prediction table's columns (``region_id``, one
  probability per class, ``dominant_class``, ``confidence``, ``entropy``, ``entropy_norm``) and
  ``scored``; unscored regions have zero probabilities and null dominant class / confidence /
  entropy. Its manifest holds the method's usage (requests, tokens, cost, cache hits, model), the
  counts (regions = scored + rejected, rejects by reason) and the metrics;
* ``tables/zeroshot_<m>_rejects``: ``region_id``, ``reason``, ``raw`` for every unscored region;
* ``zeroshot_<m>.geojson`` beside the work dir's other driver files;
* an MLflow run (tag ``kind=zeroshot``): the config as params, the metrics on the labelled scored
  regions (dominant-class ``accuracy``, ``macro_f1``, ``kl``, ``l1_sum``, ``l1_mean``, ``cosine``),
  the usage, and the first :data:`PROMPT_ARTIFACT_ROWS` prompts as an artifact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from landuse.config import Config, ConfigError
from landuse.zeroshot.base import REJECT_COLUMNS, RegionPrompts, ZeroShotOutput

log = logging.getLogger(__name__)

KIND = "zeroshot"
SCORED = "scored"
NOT_SCORED = "not_scored"  # reason for an unscored region the method gave no reject row for
PROMPT_ARTIFACT_ROWS = 20
METHODS = ("text", "llm", "image")


@dataclass
class ZeroShotResult:
    """What one run wrote and measured."""

    method: str
    table: pd.DataFrame
    rejects: pd.DataFrame
    manifest: dict[str, Any]
    metrics: dict[str, float]
    table_path: Path
    rejects_path: Path
    geojson: Path
    run_id: str | None = None
    prompts: RegionPrompts | None = field(default=None, repr=False)


def table_name(method: str) -> str:
    """``zeroshot_<method>``: the table of a method's distributions."""
    return f"{KIND}_{method}"


# ------------------------------------------------------------------------------------------
# Tables (pure)
# ------------------------------------------------------------------------------------------


def check_output(out: ZeroShotOutput, n: int, c: int, method: str) -> None:
    """ValueError unless ``out`` has [n, c] finite probabilities, rows summing to 1 where scored, [n] flags."""
    probs, scored = np.asarray(out.probs), np.asarray(out.scored)
    if probs.shape != (n, c) or scored.shape != (n,):
        raise ValueError(f"zeroshot method {method}: probs {probs.shape} and scored {scored.shape}, "
                         f"expected ({n}, {c}) and ({n},)")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"zeroshot method {method}: probabilities must be finite and >= 0")
    sums = probs[scored.astype(bool)].sum(axis=1)
    if sums.size and not np.allclose(sums, 1.0, atol=1e-4):
        raise ValueError(f"zeroshot method {method}: a scored row sums to {sums[np.argmax(abs(sums - 1))]:.6f}, not 1")


def zeroshot_table(region_ids: np.ndarray, probs: np.ndarray, scored: np.ndarray,
                   classes: Sequence[str]) -> pd.DataFrame:
    """The prediction table's columns plus ``scored``, ascending region id; unscored rows: zero
    probabilities, null dominant class, confidence and entropies."""
    from landuse.serving.predict import CONFIDENCE, DOMINANT, ENTROPY, ENTROPY_NORM, prediction_table

    ids = np.asarray(region_ids, dtype=np.int64)
    scored = np.asarray(scored, dtype=bool)
    probs = np.where(scored[:, None], np.asarray(probs, dtype=np.float64), 0.0)
    table = prediction_table(ids, probs, list(classes))
    table[DOMINANT] = table[DOMINANT].astype(object).where(scored, None)
    for column in (CONFIDENCE, ENTROPY, ENTROPY_NORM):
        table[column] = table[column].where(scored, np.nan)
    table[SCORED] = scored
    return table.sort_values("region_id", kind="stable").reset_index(drop=True)


def reject_table(region_ids: np.ndarray, scored: np.ndarray, rejects: pd.DataFrame) -> pd.DataFrame:
    """One row per unscored region (``region_id``, ``reason``, ``raw``): the method's row for it (its
    last, when several), else reason :data:`NOT_SCORED`. Rows about scored regions are dropped."""
    ids = np.asarray(region_ids, dtype=np.int64)
    unscored = ids[~np.asarray(scored, dtype=bool)]
    columns = list(REJECT_COLUMNS)
    given = pd.DataFrame(columns=columns) if rejects is None else rejects.reindex(columns=columns)
    given = given.dropna(subset=[REJECT_COLUMNS[0]])
    given[REJECT_COLUMNS[0]] = given[REJECT_COLUMNS[0]].astype(np.int64)
    given = given[given[REJECT_COLUMNS[0]].isin(unscored)].drop_duplicates(REJECT_COLUMNS[0], keep="last")
    absent = np.setdiff1d(unscored, given[REJECT_COLUMNS[0]].to_numpy(np.int64))
    filler = pd.DataFrame({REJECT_COLUMNS[0]: absent, REJECT_COLUMNS[1]: NOT_SCORED, REJECT_COLUMNS[2]: ""})
    out = pd.concat([given, filler], ignore_index=True) if len(filler) else given
    out[REJECT_COLUMNS[1]] = out[REJECT_COLUMNS[1]].astype(str)
    out[REJECT_COLUMNS[2]] = out[REJECT_COLUMNS[2]].map(lambda v: "" if pd.isna(v) else str(v))
    return out.astype({REJECT_COLUMNS[0]: np.int64}).sort_values(REJECT_COLUMNS[0]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Metrics (pure)
# ------------------------------------------------------------------------------------------


def dominant_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Dominant-class ``accuracy`` and ``macro_f1`` of predicted [N, C] vs true [N, C] distributions.

    Macro-F1 averages the per-class F1 over the classes that are the dominant class of some
    region, true or predicted (scikit-learn's default label set).
    """
    pred, y = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    if pred.shape != y.shape or pred.ndim != 2 or len(y) == 0:
        raise ValueError(f"dominant_metrics needs pred and y of one non-empty [N, C] shape, "
                         f"got {pred.shape} and {y.shape}")
    p, t = pred.argmax(1), y.argmax(1)
    f1 = []
    for k in np.union1d(p, t):
        tp = float(((p == k) & (t == k)).sum())
        fp, fn = float(((p == k) & (t != k)).sum()), float(((p != k) & (t == k)).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float((p == t).mean()), "macro_f1": float(np.mean(f1))}


def label_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 (:func:`dominant_metrics`) and KL, L1 (sum and mean), cosine
    (:func:`landuse.training.metrics.evaluate`) of predicted distributions against labels."""
    import torch

    from landuse.training.metrics import evaluate

    pred = np.asarray(pred, dtype=np.float64)
    logits = torch.from_numpy(np.log(np.clip(pred, 1e-12, 1.0)))  # softmax(log p) = p; zeros stay ~0
    return {**dominant_metrics(pred, y), **evaluate(logits, torch.from_numpy(np.asarray(y, dtype=np.float64)))}


def read_labels(config: Config, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(region ids, [L, C] label distributions, rows summing to 1) of the labelled regions (coverage > 0),
    or None when there is no labels table or it lacks a class."""
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import REGION_ID, T_LABELS

    if not (config.tables_dir / T_LABELS).is_dir():
        return None
    labels = read_pandas(config, T_LABELS, "labels")
    absent = [c for c in classes if c not in labels.columns]
    if absent:
        log.warning("zeroshot: labels have no column(s) %s; no metrics", ", ".join(absent))
        return None
    y = labels[list(classes)].to_numpy(np.float64)
    total = y.sum(axis=1)
    keep = total > 0
    if "coverage" in labels.columns:
        keep &= labels["coverage"].to_numpy(np.float64) > 0
    return labels[REGION_ID].to_numpy(np.int64)[keep], y[keep] / total[keep, None]


def evaluate_table(table: pd.DataFrame, labels: tuple[np.ndarray, np.ndarray] | None,
                   classes: Sequence[str]) -> dict[str, float]:
    """Metrics on the labelled regions the method scored, plus ``labelled`` and ``labelled_scored``
    counts; only the counts when nothing labelled was scored."""
    if labels is None:
        return {}
    ids, y = labels
    frame = table.set_index("region_id")
    known = np.isin(ids, frame.index.to_numpy())
    ids, y = ids[known], y[known]
    scored = frame.loc[ids, SCORED].to_numpy(bool)
    out = {"labelled": float(len(ids)), "labelled_scored": float(scored.sum())}
    if scored.any():
        out.update(label_metrics(frame.loc[ids[scored], list(classes)].to_numpy(np.float64), y[scored]))
    return out


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def _reject_schema() -> pa.Schema:
    """region_id int64, reason and raw strings (an empty rejects table keeps its types)."""

    return pa.schema([(REJECT_COLUMNS[0], pa.int64()), (REJECT_COLUMNS[1], pa.string()),
                      (REJECT_COLUMNS[2], pa.string())])


def write_zeroshot(config: Config, method: str, table: pd.DataFrame, rejects: pd.DataFrame,
                   manifest: dict[str, Any]) -> tuple[Path, Path, Path]:
    """Commit ``tables/zeroshot_<method>`` (with ``manifest``) and its rejects table; write the GeoJSON."""
    from landuse.manifest import commit_dir, staging_dir, write_manifest
    from landuse.spark.io import read_geoparquet, write_pandas
    from landuse.spark.schemas import REGION_ID, T_REGIONS

    name = table_name(method)
    rejects_out = config.tables_dir / f"{name}_rejects"
    staged = staging_dir(rejects_out)
    write_pandas(rejects, staged, schema=_reject_schema())
    write_manifest(staged, {"stage": KIND, "method": method, "rows": len(rejects),
                            "by_reason": rejects["reason"].value_counts().to_dict()})
    commit_dir(staged, rejects_out)

    out = config.tables_dir / name
    staged = staging_dir(out)
    write_pandas(table, staged)
    write_manifest(staged, {"stage": KIND, "rows": len(table), **manifest})
    commit_dir(staged, out)

    regions = read_geoparquet(config, T_REGIONS, "regions")[[REGION_ID, "geometry"]]
    geo = regions.merge(table, on=REGION_ID, how="inner").to_crs("EPSG:4326")
    geojson = config.driver_dir / f"{name}.geojson"
    geojson.parent.mkdir(parents=True, exist_ok=True)
    geo.to_file(geojson, driver="GeoJSON")
    log.info("zeroshot %s: %d regions -> %s, %s", method, len(table), out, geojson)
    return out, rejects_out, geojson


def prompts_text(prompts: RegionPrompts, rows: int = PROMPT_ARTIFACT_ROWS) -> str:
    """The class texts and the first ``rows`` prompts, as one readable text (the MLflow artifact)."""
    shown = min(rows, len(prompts.prompts))
    lines = ["# class texts", *prompts.class_texts, "", f"# prompts (first {shown} of {len(prompts.prompts)})"]
    for rid, text in zip(prompts.region_ids[:rows], prompts.prompts[:rows]):
        lines += ["", f"## region {int(rid)}", text]
    return "\n".join(lines) + "\n"


def _track(config: Config, method: str, manifest: dict[str, Any], metrics: dict[str, float],
           prompts: RegionPrompts, table_path: Path) -> str:
    """One MLflow run (kind zeroshot): params, metrics, usage, prompts; returns its id."""
    import mlflow

    from landuse.training.tracking import log_config, setup_mlflow

    setup_mlflow(config)
    with mlflow.start_run(run_name=f"{KIND}-{method}:{config.name}") as run:
        log_config(config)
        usage = manifest.get("usage", {})
        mlflow.set_tags({"kind": KIND, "method": method, "model": str(usage.get("model", "")),
                         "table": str(table_path)})
        values = dict(metrics)
        values.update({f"usage_{k}": float(v) for k, v in usage.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)})
        values.update({k: float(manifest["counts"][k]) for k in ("regions", "scored", "rejected")})
        mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)})
        mlflow.log_text(prompts_text(prompts), f"{KIND}/prompts.txt")
        mlflow.log_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), f"{KIND}/manifest.json")
        return run.info.run_id


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


def run_zeroshot(config: Config, method_name: str | None = None, source: Any = None, track: bool = True,
                 prompts: RegionPrompts | None = None) -> ZeroShotResult:
    """Prompts of every region → the method → tables, GeoJSON, metrics and (``track``) an MLflow run.

    ``method_name``: default ``config.zeroshot.method``. ``source``: as for
    :func:`landuse.zeroshot.prompts.region_prompts`. ``prompts``: already built prompts (skips that step).
    """
    from landuse.zeroshot.base import method as make_method
    from landuse.zeroshot.prompts import config_template, region_prompts

    name = method_name or config.zeroshot.method
    if name not in METHODS:
        raise ConfigError(f"--method: unknown zero-shot method {name!r} (choose from {', '.join(METHODS)})")
    template = config_template(config)
    prompts = prompts if prompts is not None else region_prompts(config, source)
    classes = list(prompts.classes)
    out = make_method(name, config).score(prompts)
    check_output(out, len(prompts.region_ids), len(classes), name)
    scored = np.asarray(out.scored, dtype=bool)
    table = zeroshot_table(prompts.region_ids, out.probs, scored, classes)
    rejects = reject_table(prompts.region_ids, scored, out.rejects)
    metrics = evaluate_table(table, read_labels(config, classes), classes)
    counts = {"regions": len(table), "scored": int(scored.sum()), "rejected": len(rejects),
              "by_reason": {str(k): int(v) for k, v in rejects["reason"].value_counts().items()}}
    manifest = {"method": name, "classes": classes, "level": config.zeroshot.level,
                "max_categories": config.zeroshot.max_categories, "language": template.language,
                "template": template.source, "temperature": config.zeroshot.temperature,
                "usage": dict(out.usage), "counts": counts, "metrics": metrics}
    table_path, rejects_path, geojson = write_zeroshot(config, name, table, rejects, manifest)
    run_id = _track(config, name, manifest, metrics, prompts, table_path) if track else None
    return ZeroShotResult(method=name, table=table, rejects=rejects, manifest=manifest, metrics=metrics,
                          table_path=table_path, rejects_path=rejects_path, geojson=geojson, run_id=run_id,
                          prompts=prompts)
