"""Model selection: variant × learning rate × dropout × weight decay × width, on validation KL only.

``landuse run tune`` loads the graph once, drops the variants whose operators need edges that are
not loaded (listed as skipped, with the reason), and searches the ``tune:`` space either on a
grid (every combination, in a fixed order) or with Optuna's TPE sampler seeded with ``seed``.
Every trial trains ``tune.splits`` splits for ``tune.epochs`` epochs and is scored by the mean over
splits of the validation KL at the epoch chosen on validation KL. A trial's test metrics are never
read, logged or shown: the test set is touched once, when the best setting is retrained on the full
protocol (``training.splits`` splits, the seed of ``landuse run train``), evaluated and registered
like ``landuse run train`` does, tagged ``selected_by=tune``.

MLflow: one parent run ``tune:<name>`` with a nested run per trial (its settings as params,
``val_kl`` mean and std, trial number and state as tags; a failed trial keeps its one-line error)
and one nested ``final:<variant>`` run holding the final model. Files: ``results/tune/trials.csv``,
``best.json`` and ``tune.md``.

The ``tune`` stage (:mod:`landuse.stages.tune`) runs :func:`run_tune` into its staging directory; the
runner commits it and skips the search while the ``tune`` / ``training`` / ``labels`` config, the seed
and the assembled tables are unchanged (``--force`` searches again).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError, TrainingConfig
from landuse.data.reader import GraphData
from landuse.training.protocol import METRICS, SplitRun, feature_matrix, run_protocol, summarise

log = logging.getLogger(__name__)
KIND = "tune"
PARAMS = ("variant", "lr", "dropout", "weight_decay", "width")
COMPLETE, FAILED, REPEAT = "complete", "failed", "repeat"


@dataclass(frozen=True)
class Setting:
    """One point of the search space."""

    variant: str
    lr: float
    dropout: float
    weight_decay: float
    width: float

    def as_dict(self) -> dict[str, Any]:
        """``{variant, lr, dropout, weight_decay, width}``."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """``variant=... lr=... dropout=... weight_decay=... width=...``."""
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.as_dict().items())


@dataclass
class TrialRecord:
    """A trial's outcome: validation KL (mean, std over splits) or a one-line error."""

    number: int
    setting: Setting
    state: str  # complete | failed | repeat (a setting already evaluated: its score reused, not retrained)
    val_kl: float = math.nan
    val_kl_std: float = math.nan
    seconds: float = 0.0
    epoch_median: float = math.nan
    error: str = ""
    repeat_of: int | None = None

    @property
    def ok(self) -> bool:
        """Completed (or a repeat of a completed trial) with a finite score."""
        return self.state != FAILED and math.isfinite(self.val_kl)

    def row(self) -> dict[str, Any]:
        """The trials.csv row: settings, validation score, state, seconds. No test metric, ever."""
        return {"trial": self.number, **self.setting.as_dict(), "val_kl": self.val_kl, "val_kl_std": self.val_kl_std,
                "state": self.state, "seconds": round(self.seconds, 3), "epoch_median": self.epoch_median,
                "repeat_of": self.repeat_of, "error": self.error}


@dataclass
class TuneResult:
    """What ``landuse run tune`` produced."""

    trials: list[TrialRecord]
    best: TrialRecord
    skipped: dict[str, str]
    final: dict[str, Any]  # settings, validation and test metrics of the final model, registry info
    table: pd.DataFrame
    markdown_path: Path
    best_path: Path

    def summary_line(self) -> str:
        """``best_variant=... lr=... dropout=... weight_decay=... width=... val_kl=... test_kl=...``."""
        return summary_line(self.best.setting.as_dict(), self.best.val_kl, self.final["test"]["kl"]["mean"])


def summary_line(setting: dict[str, Any], val_kl: float, test_kl: float) -> str:
    """The command's last stdout line: ``best_variant=... lr=... dropout=... weight_decay=... width=... val_kl=...
    test_kl=...`` (from a :class:`TuneResult`, or from ``best.json`` via :func:`summary_line_of`)."""
    s = setting
    return (f"best_variant={s['variant']} lr={_fmt(s['lr'])} dropout={_fmt(s['dropout'])} "
            f"weight_decay={_fmt(s['weight_decay'])} width={_fmt(s['width'])} val_kl={val_kl:.6g} test_kl={test_kl:.6g}")


def summary_line_of(best: dict[str, Any]) -> str:
    """:func:`summary_line` from a ``best.json`` record (what ``landuse run tune`` prints when the search is unchanged)."""
    return summary_line(best["setting"], best["validation"]["val_kl"], best["final"]["test"]["kl"]["mean"])


class TrialFailed(Exception):
    """A trial raised; it is recorded as failed and the search goes on."""


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------


def variant_problem(graph: GraphData, variant: str) -> str | None:
    """Why ``variant`` cannot run on ``graph`` (:func:`experiments.variant_blocker`: edges not loaded or
    empty; or a variant / operator this build does not know), or None."""
    from landuse.models.hgcn import HEADS
    from landuse.training.experiments import variant_blocker

    if variant not in HEADS:
        return "not implemented by this build's HGCN (landuse.models.hgcn.HEADS)"
    try:
        return variant_blocker(graph, variant)
    except KeyError as exc:
        return f"operator {exc} has no known edge set (landuse.training.protocol.OPERATOR_EDGES)"


def runnable_variants(graph: GraphData, variants: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(variants that can run, {variant: reason} for those that cannot), order kept, duplicates dropped."""
    keep, skipped = [], {}
    for variant in dict.fromkeys(variants):
        problem = variant_problem(graph, variant)
        if problem is None:
            keep.append(variant)
        else:
            skipped[variant] = problem
    return keep, skipped


def search_space(config: Config, variants: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``{param: candidate values}`` in the configured order (duplicates dropped); ConfigError if any is empty."""
    tune = config.tune
    space = {"variant": tuple(variants), "lr": tune.lr, "dropout": tune.dropout,
             "weight_decay": tune.weight_decay, "width": tune.width}
    space = {k: tuple(dict.fromkeys(v)) for k, v in space.items()}
    empty = [k for k, v in space.items() if not v and k != "variant"]
    if empty:
        raise ConfigError(f"tune.{empty[0]}: empty search space (list at least one value)")
    if not space["variant"]:
        raise ConfigError("tune.variants: empty search space (list at least one variant)")
    ranges = {"lr": (lambda v: v > 0, "> 0"), "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
              "weight_decay": (lambda v: v >= 0, ">= 0"), "width": (lambda v: v > 0, "> 0")}
    for key, (ok, rule) in ranges.items():
        bad = [v for v in space[key] if not ok(v)]
        if bad:
            raise ConfigError(f"tune.{key}: {bad[0]!r} is out of range (must be {rule})")
    if config.tune.epochs is not None and config.tune.epochs <= 0:
        raise ConfigError("tune.epochs: must be > 0 (or null for training.epochs)")
    return space


def grid(space: dict[str, tuple[Any, ...]]) -> list[Setting]:
    """Every combination, variants outermost, then lr, dropout, weight decay, width (each in listed order)."""
    return [Setting(*values) for values in itertools.product(*(space[p] for p in PARAMS))]


def trial_training(config: Config, setting: Setting) -> TrainingConfig:
    """The training config of one trial: the setting, ``tune.splits`` splits, ``tune.epochs``, validation selection."""
    return dataclasses.replace(config.training, **setting.as_dict(), splits=config.tune.splits,
                               epochs=config.tune.epochs or config.training.epochs, selection="validation")


def final_training(config: Config, setting: Setting) -> TrainingConfig:
    """The final model's training config: the setting on the full protocol (training.splits, training.epochs)."""
    return dataclasses.replace(config.training, **setting.as_dict(), selection="validation")


# --------------------------------------------------------------------------------------------
# Trials
# --------------------------------------------------------------------------------------------


def score(runs: Sequence[SplitRun]) -> tuple[float, float]:
    """Mean and std over splits of the validation KL at the selected epoch (the only number a trial yields)."""
    values = np.array([r.metrics["val"]["kl"] for r in runs], dtype=float)
    if not len(values) or not np.isfinite(values).all():
        raise ValueError("validation KL is missing or not finite")
    return float(values.mean()), float(values.std())


def evaluate_setting(config: Config, graph: GraphData, xy: np.ndarray | None, setting: Setting) -> tuple[float, float, float, dict]:
    """Train one setting over ``tune.splits`` splits: (val KL mean, std, median epoch, mean train/val curves)."""
    cfg = trial_training(config, setting)
    runs = run_protocol(graph, setting.variant, config.training.features, cfg, config.seed, xy)
    mean, std = score(runs)
    curves = {k: np.nanmean(np.vstack([r.curves[k] for r in runs]), 0) for k in ("train_kl", "val_kl")}
    return mean, std, float(np.median([r.best_epoch for r in runs])), curves


class TrialRunner:
    """Runs, records and logs trials (as nested MLflow runs of the active parent run)."""

    def __init__(self, config: Config, graph: GraphData, xy: np.ndarray | None, *, track: bool = True,
                 evaluate: Callable[[Setting], tuple[float, float, float, dict]] | None = None) -> None:
        self.config, self.graph, self.xy, self.track = config, graph, xy, track
        self.evaluate = evaluate or (lambda s: evaluate_setting(config, graph, xy, s))
        self.records: list[TrialRecord] = []
        self.seen: dict[Setting, TrialRecord] = {}
        self.bar: Any = None

    def __call__(self, setting: Setting) -> TrialRecord:
        from landuse.training.experiments import error_line

        number = len(self.records)
        previous = self.seen.get(setting)
        curves: dict = {}
        if previous is not None:  # optuna may propose a setting again: training is deterministic, reuse it
            record = dataclasses.replace(previous, number=number, state=REPEAT if previous.ok else FAILED,
                                         seconds=0.0, repeat_of=previous.number)
        else:
            start = time.perf_counter()
            try:
                mean, std, epoch, curves = self.evaluate(setting)
                record = TrialRecord(number, setting, COMPLETE, mean, std, epoch_median=epoch)
            except Exception as exc:  # noqa: BLE001 - a failing trial is recorded and the search goes on
                record = TrialRecord(number, setting, FAILED, error=error_line(exc))
                log.warning("tune: trial %d (%s) failed: %s", number, setting.describe(), record.error)
            record.seconds = time.perf_counter() - start
            self.seen[setting] = record
        self.records.append(record)
        if self.track:
            self._log(record, curves)
        if record.ok:
            log.info("tune: trial %d %s: val KL %.5f ± %.5f (%.1fs)", number, setting.describe(), record.val_kl,
                     record.val_kl_std, record.seconds)
        if self.bar is not None:
            self.bar.update(1)
            best = min((r.val_kl for r in self.records if r.ok), default=math.nan)
            self.bar.set_postfix(best_val_kl=f"{best:.4f}", failed=sum(r.state == FAILED for r in self.records))
        return record

    def _log(self, record: TrialRecord, curves: dict[str, np.ndarray]) -> None:
        import mlflow

        from landuse.training.tracking import log_curves

        cfg = trial_training(self.config, record.setting)
        run = mlflow.start_run(run_name=f"trial {record.number}: {record.setting.variant}", nested=True)
        try:
            mlflow.log_params({**record.setting.as_dict(), "epochs": cfg.epochs, "splits": cfg.splits,
                               "features": "+".join(cfg.features)})
            tags = {"role": "trial", "trial": str(record.number), "state": record.state, "variant": record.setting.variant}
            if record.error:
                tags["error"] = record.error
            if record.repeat_of is not None:
                tags["repeat_of"] = str(record.repeat_of)
            mlflow.set_tags(tags)
            mlflow.log_metric("trial", record.number)
            if record.ok:
                mlflow.log_metrics({"val_kl": record.val_kl, "val_kl_std": record.val_kl_std,
                                    "epoch_median": record.epoch_median, "seconds": record.seconds})
            if curves:  # train and validation only: a trial's test curve is never logged
                log_curves(run.info.run_id, curves, prefix="mean_")
        finally:
            mlflow.end_run(status="FAILED" if record.state == FAILED else "FINISHED")


# --------------------------------------------------------------------------------------------
# Search drivers
# --------------------------------------------------------------------------------------------


def run_grid(space: dict[str, tuple[Any, ...]], runner: Callable[[Setting], TrialRecord]) -> None:
    """Every combination of the space, in :func:`grid` order."""
    for setting in grid(space):
        runner(setting)


def optuna_available() -> bool:
    """Whether Optuna can be imported."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def run_optuna(space: dict[str, tuple[Any, ...]], runner: Callable[[Setting], TrialRecord], trials: int, seed: int,
               timeout_s: float | None = None) -> None:
    """``trials`` TPE trials (sampler seeded with ``seed``) over the categorical space; failed trials are kept."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("tune.method: optuna is not installed (pip install 'optuna>=5,<6'), "
                          "or use tune.method=grid") from None

    def objective(trial: "optuna.Trial") -> float:
        setting = Setting(**{p: trial.suggest_categorical(p, list(space[p])) for p in PARAMS})
        record = runner(setting)
        trial.set_user_attr("state", record.state)
        if not record.ok:
            raise TrialFailed(record.error or "failed")
        return record.val_kl

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=(TrialFailed,))
    finally:
        optuna.logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------------------------
# Tables and reports
# --------------------------------------------------------------------------------------------


def trials_table(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial (settings, val_kl mean/std, state, seconds), in trial order."""
    columns = ["trial", *PARAMS, "val_kl", "val_kl_std", "state", "seconds", "epoch_median", "repeat_of", "error"]
    return pd.DataFrame([r.row() for r in records], columns=columns)


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord:
    """The trial with the lowest mean validation KL (the earliest on ties)."""
    ok = [r for r in records if r.ok]
    if not ok:
        first = next((r.error for r in records if r.error), "no trial ran")
        raise ConfigError(f"tune: all {len(records)} trials failed (first error: {first})")
    return min(ok, key=lambda r: (r.val_kl, r.number))


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def tune_markdown(config: Config, records: Sequence[TrialRecord], best: TrialRecord, skipped: dict[str, str],
                  final: dict[str, Any], top: int = 20) -> str:
    """The search (trials ranked by validation KL) and the final model's test metrics."""
    cfg = trial_training(config, best.setting)
    lines = [f"### Model selection: {config.name}", "",
             f"{config.tune.method} search, {len(records)} trials "
             f"({sum(r.state == FAILED for r in records)} failed) on {'+'.join(config.training.features)} features; "
             f"each trial scored by the mean validation KL over {cfg.splits} splits, {cfg.epochs} epochs "
             f"(seed {config.seed}). Trials never read the test set.", ""]
    if skipped:
        lines += ["Skipped variants:", ""] + [f"- `{v}`: {why}" for v, why in skipped.items()] + [""]
    head = ["trial", *PARAMS, "val KL", "state"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = sorted(records, key=lambda r: (not r.ok, r.val_kl if r.ok else 0.0, r.number))
    for r in ranked[:top]:
        kl = f"{r.val_kl:.4f} ± {r.val_kl_std:.4f}" if r.ok else "—"
        state = r.state if not r.error else f"{r.state}: {r.error[:80]}"
        lines.append("| " + " | ".join([str(r.number), *(_fmt(v) for v in r.setting.as_dict().values()), kl, state]) + " |")
    if len(ranked) > top:
        lines += ["", f"({len(ranked) - top} more trials in trials.csv)"]
    test = final["test"]
    lines += ["", f"**Selected:** {best.setting.describe()} (trial {best.number}, validation KL "
              f"{best.val_kl:.4f} ± {best.val_kl_std:.4f}).", "",
              f"**Final model** (the selected setting retrained once on {final['splits']} splits, "
              f"{final['epochs']} epochs, seed {config.seed}; epoch chosen on validation KL) — the only test evaluation:", "",
              "| KL | L1 (mean) | L1 (sum) | cosine | val KL |", "|---|---|---|---|---|",
              "| " + " | ".join(f"{test[m]['mean']:.4f} ± {test[m]['std']:.4f}" for m in METRICS)
              + f" | {final['val']['kl']['mean']:.4f} ± {final['val']['kl']['std']:.4f} |"]
    model = final.get("model") or {}
    if model.get("version"):
        lines += ["", f"Registered {config.training.registered_model} v{model['version']} "
                  f"({'new champion' if model.get('champion') else 'champion unchanged'}), tagged selected_by=tune."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _final_model(config: Config, graph: GraphData, xy: np.ndarray | None, best: TrialRecord, out: Path,
                 parent_id: str) -> dict[str, Any]:
    """Retrain the selected setting on the full protocol, evaluate on test (once), log and register it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from landuse.training.experiments import log_and_register, log_trial, per_class_table, run_trials
    from landuse.training.tracking import log_table_artifacts

    final_config = dataclasses.replace(config, training=final_training(config, best.setting))
    features = tuple(config.training.features)
    trial = run_trials(final_config, graph, xy, [(best.setting.variant, features)])[0]
    with mlflow.start_run(run_name=f"final:{best.setting.variant}", nested=True) as run:
        mlflow.log_params({**best.setting.as_dict(), "epochs": final_config.training.epochs,
                           "splits": final_config.training.splits, "features": "+".join(features)})
        mlflow.set_tags({"role": "final", "selected_by": KIND, "tune_trial": str(best.number)})
        log_trial(trial, out)
        why = f"selected by landuse run tune (trial {best.number}, validation KL {best.val_kl:.5f})"
        model = log_and_register(final_config, graph, trial, why=why, kind=KIND)
        if model.get("version"):
            client = MlflowClient()
            tags = {"selected_by": KIND, "tune_run_id": parent_id, "tune_trial": best.number,
                    "tune_val_kl": repr(best.val_kl), **{f"tune_{k}": v for k, v in best.setting.as_dict().items()}}
            for key, value in tags.items():
                client.set_model_version_tag(config.training.registered_model, model["version"], key, str(value))
        log_table_artifacts({"final_per_class_errors": per_class_table(trial, graph.classes, graph.y.numpy())}, out)
        run_id = run.info.run_id
    test, val = summarise(trial.runs, "test"), summarise(trial.runs, "val")
    return {
        "setting": best.setting.as_dict(), "splits": len(trial.runs), "epochs": final_config.training.epochs,
        "seed": config.seed, "run_id": run_id,
        "test": {m: {"mean": v[0], "std": v[1]} for m, v in test.items()},
        "val": {m: {"mean": v[0], "std": v[1]} for m, v in val.items()},
        "epoch_median": float(np.median([r.best_epoch for r in trial.runs])),
        "model": {k: v for k, v in model.items() if k in ("model_uri", "version", "champion", "val_kl")},
    }


def run_tune(config: Config, graph: GraphData | None = None, xy: np.ndarray | None = None,
             out: Path | None = None) -> TuneResult:
    """Search on validation KL, retrain the best setting once on the full protocol, register it.

    ``graph``/``xy``: an already loaded graph (default: :func:`experiments.load_graph_for`, once).
    ``out``: where trials.csv, best.json and tune.md go (default ``results/tune``; the tune stage passes
    its staging directory, which the runner commits: landuse.stages.tune).
    """
    import mlflow
    from tqdm.auto import tqdm

    from landuse.training.experiments import load_graph_for, log_inputs, results_dir
    from landuse.training.tracking import log_config, log_table_artifacts, setup_mlflow

    tune = config.tune
    if config.training.val_fraction <= 0:
        raise ConfigError("training.val_fraction: tune scores trials on validation KL; must be > 0")
    search_space(config, tune.variants)  # empty lists fail before the graph is read
    if tune.method == "optuna" and not optuna_available():
        raise ConfigError("tune.method: optuna is not installed (pip install 'optuna>=5,<6'), or use tune.method=grid")
    if graph is None:
        graph, xy = load_graph_for(config)
    feature_matrix(graph, config.training.features)  # a missing modality fails once, not in every trial
    variants, skipped = runnable_variants(graph, tune.variants)
    for variant, why in skipped.items():
        log.warning("tune: skipping variant %s: %s", variant, why)
    if not variants:
        reasons = "; ".join(f"{v}: {why}" for v, why in skipped.items())
        raise ConfigError(f"tune.variants: no runnable variant on this graph ({reasons or 'none listed'})")
    space = search_space(config, variants)
    size = math.prod(len(v) for v in space.values())
    total = size if tune.method == "grid" else tune.trials
    log.info("tune: %s search over %d settings (%d trials), %d variants%s", tune.method, size, total, len(variants),
             f", skipped {', '.join(skipped)}" if skipped else "")

    setup_mlflow(config)
    out = results_dir(config, KIND) if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    runner = TrialRunner(config, graph, xy)
    with mlflow.start_run(run_name=f"{KIND}:{config.name}") as parent:
        log_config(config)
        log_inputs(config)
        mlflow.set_tags({"kind": KIND, "method": tune.method, "selection": "validation",
                         "variants": ",".join(variants), "grid_size": str(size)})
        if skipped:
            mlflow.set_tag("skipped_variants", json.dumps(skipped)[:5000])
        with tqdm(total=total, desc="tune", unit="trial", disable=not config.training.progress, leave=False) as bar:
            runner.bar = bar
            if tune.method == "grid":
                run_grid(space, runner)
            else:
                run_optuna(space, runner, tune.trials, config.seed, tune.timeout_s)
        records = runner.records
        best = best_trial(records)  # raises when every trial failed
        table = trials_table(records)
        mlflow.log_metrics({"best_val_kl": best.val_kl, "best_val_kl_std": best.val_kl_std,
                            "trials_failed": sum(r.state == FAILED for r in records), "trials": len(records)})
        mlflow.set_tags({f"best_{k}": str(v) for k, v in best.setting.as_dict().items()})
        log.info("tune: best %s (trial %d, val KL %.5f); retraining it on %d splits — the one test evaluation",
                 best.setting.describe(), best.number, best.val_kl, config.training.splits)
        final = _final_model(config, graph, xy, best, out, parent.info.run_id)
        mlflow.log_metrics({"final_test_kl": final["test"]["kl"]["mean"], "final_test_kl_std": final["test"]["kl"]["std"],
                            "final_val_kl": final["val"]["kl"]["mean"]})
        text = tune_markdown(config, records, best, skipped, final)
        record = {
            "setting": best.setting.as_dict(), "trial": best.number,
            "validation": {"val_kl": best.val_kl, "val_kl_std": best.val_kl_std, "splits": tune.splits,
                           "epochs": tune.epochs or config.training.epochs},
            "final": final, "method": tune.method, "seed": config.seed, "trials": len(records),
            "failed": sum(r.state == FAILED for r in records), "skipped": skipped, "run_id": parent.info.run_id,
        }
        best_path = out / "best.json"
        best_path.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
        log_table_artifacts({"trials": table}, out, {KIND: text})
        mlflow.log_artifact(str(best_path))
    return TuneResult(records, best, skipped, final, table, out / f"{KIND}.md", best_path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

