"""MLflow tracking and the model registry.

The tracking URI comes from the config (default: a SQLite store under the work dir; a remote or
Databricks URI works unchanged). Registry: models are registered under ``training.registered_model``
and the alias ``champion`` moves only when a new version beats the current champion on validation
KL — aliases and tags only, never the deprecated stages.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from landuse.config import Config
from landuse.constants import TELEMETRY_ENV

log = logging.getLogger(__name__)
CHAMPION = "champion"
VAL_KL_TAG = "val_kl"


def setup_mlflow(config: Config) -> str:
    """Point MLflow at the config's tracking URI and experiment; returns the experiment id."""
    for key, value in TELEMETRY_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(config.mlflow_uri)
    if config.mlflow.tracking_uri is None:
        mlflow.set_registry_uri(config.mlflow_uri)
        # the local store keeps its artifacts beside it, not in ./mlruns of whatever cwd the command ran in
        if mlflow.get_experiment_by_name(config.mlflow.experiment) is None:
            artifacts = (config.driver_dir / "mlartifacts").resolve()
            mlflow.create_experiment(config.mlflow.experiment, artifact_location=artifacts.as_uri())
    return mlflow.set_experiment(config.mlflow.experiment).experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``a.b.c`` keys with string values (MLflow params)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)
    return {prefix.rstrip("."): text[:6000]}


def log_config(config: Config) -> None:
    """The resolved config as params (batched: the REST API caps a call at 100 params)."""
    import mlflow

    params = list(flatten(config.to_dict()).items())
    for start in range(0, len(params), 100):
        mlflow.log_params(dict(params[start:start + 100]))


def log_curves(run_id: str, curves: dict[str, np.ndarray], prefix: str = "") -> None:
    """Per-epoch metric curves in batches (one ``log_batch`` per 1000 points)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    import time

    client, now = MlflowClient(), int(time.time() * 1000)
    points = [Metric(f"{prefix}{name}", float(v), now, step) for name, values in curves.items()
              for step, v in enumerate(values) if np.isfinite(v)]
    for start in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[start:start + 1000])


def log_table_artifacts(frames: dict[str, Any], directory: Path, markdown: dict[str, str] | None = None) -> list[Path]:
    """Write tables as CSV (and Markdown) into ``directory`` and log them to the active run."""
    import mlflow

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in frames.items():
        files.append(directory / f"{name}.csv")
        frame.to_csv(files[-1], index=False)
    for name, text in (markdown or {}).items():
        files.append(directory / f"{name}.md")
        files[-1].write_text(text)
    for file in files:
        mlflow.log_artifact(str(file))
    return files


def champion_val_kl(name: str) -> float | None:
    """Validation KL recorded on the current champion version, or None when there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    value = version.tags.get(VAL_KL_TAG)
    return float(value) if value is not None else None


def register_model(model_uri: str, name: str, val_kl: float, tags: dict[str, str]) -> tuple[str, bool]:
    """Register ``model_uri`` under ``name``; move ``champion`` only if ``val_kl`` beats it.

    Returns (version, became_champion).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    current = champion_val_kl(name)
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    for key, value in {**tags, VAL_KL_TAG: repr(float(val_kl))}.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    better = current is None or val_kl < current
    if better:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        log.info("registry: %s v%s is the new champion (val KL %.5f, was %s)", name, version.version, val_kl,
                 "none" if current is None else f"{current:.5f}")
    else:
        log.info("registry: %s v%s (val KL %.5f) does not beat the champion (%.5f); alias unchanged",
                 name, version.version, val_kl, current)
    return str(version.version), better


def plot_bands(series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str,
               xlabel: str, ylabel: str, marker: str | None = None) -> Path:
    """Lines with ±std bands, ``{label: (x, mean, std)}``, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (x, mean, std) in series.items():
        ax.plot(x, mean, marker=marker, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, Iterable[np.ndarray]], path: Path, title: str) -> Path:
    """Mean ± std training curves over splits as a PNG."""
    series = {}
    for name, runs in curves.items():
        stack = np.vstack(list(runs))
        series[name] = (np.arange(stack.shape[1]), np.nanmean(stack, 0), np.nanstd(stack, 0))
    return plot_bands(series, path, title, "epoch", "KL(y || y_hat)")
