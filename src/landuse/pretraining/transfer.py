"""Cross-city transfer: pretrain an HGCN variant on a source city, fine-tune it on a target city.

For each target training fraction f (default 10 %, 30 %, …, 90 % of the labelled regions) and
each of K random target splits (train f, validation 10 % — ``min(0.1, 1 − f − 0.05)`` above
f = 0.8 — test the rest), the same variant is trained twice with the same epochs, learning rate
and seed: from scratch, and initialised from the source weights (every layer fine-tuned). Both are
scored on the target's test regions with :func:`landuse.training.metrics.evaluate` (the thesis's
transfer table).

Feature spaces. The two cities' node features must mean the same thing column by column. The
statistical image features (``image``: the same band / index statistics when both cities use the
same sensor adapter, e.g. ``landsat8_oli``) and ``geo`` (a location encoding normalised to each
city's extent) are comparable; the POI Doc2Vec and flow Word2Vec embeddings (``poi``, ``flow``)
are trained per city, so their axes are arbitrary and do **not** line up across cities — hence
the default ``features = ("image", "geo")``. ``poi_text`` (a sentence embedding of the POI
categories' text, one fixed model for every city) and ``poi_density`` (counts per area, entropy)
line up across cities whatever their POI taxonomies (Amap, OS PointX, OSM, CommonPlace), so
``--features image,geo,poi_text`` transfers POI semantics too; ``poi_counts`` / ``poi_tfidf`` columns
are each city's own tokens and do not. Different widths are refused with a clear error.
Each city is standardised with its own training-node statistics (the protocol's rule).

Classes. When the two cities' class lists are equal the whole network transfers; otherwise
(e.g. NYC's 5 classes against the synthetic cities' 8) only the graph heads and the hidden trunk
transfer and the output Linear keeps its fresh initialisation.

Pretraining uses the source config's training section (lr, dropout, weight decay, epochs) with the
target's variant, on all labelled source regions split 90 / 10 for epoch selection on validation KL.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from landuse.config import Config, ConfigError, TrainingConfig, TransferConfig
from landuse.data.reader import GraphData
from landuse.models.hgcn import HGCN
from landuse.training.protocol import (
    METRICS, OPERATOR_EDGES, SMALL_GRAPH, SplitRun, build_operators, cpu_threads, feature_matrix,
    needed_operators, pick_device, train_split,
)
from landuse.training.splits import random_splits

log = logging.getLogger(__name__)
# the config's defaults (transfer.features, transfer.fractions): one source of truth
DEFAULT_FEATURES: tuple[str, ...] = TransferConfig().features
DEFAULT_FRACTIONS: tuple[float, ...] = TransferConfig().fractions
METHODS = ("scratch", "transfer")
SOURCE_VAL_FRACTION = 0.1
NOT_TRANSFERABLE = {"poi": "Doc2Vec is trained per city", "flow": "Word2Vec is trained per city",
                    "poi_counts": "its columns are this city's category tokens",
                    "poi_tfidf": "its columns are this city's category tokens"}


def val_fraction_for(fraction: float) -> float:
    """Validation share beside a training share ``fraction``: 10 %, less above 80 % so a test set remains."""
    if not 0 < fraction < 0.95:
        raise ConfigError(f"transfer: training fractions must lie in (0, 0.95), got {fraction}")
    return 0.1 if fraction <= 0.8 else min(0.1, 1 - fraction - 0.05)


def output_layer(model: HGCN) -> str:
    """State-dict prefix of the model's last Linear (the class layer), e.g. ``trunk.5``."""
    index = max(i for i, layer in enumerate(model.trunk) if isinstance(layer, torch.nn.Linear))
    return f"trunk.{index}"


def transfer_state(model: HGCN, source_state: dict[str, torch.Tensor], reinit_head: bool) -> list[str]:
    """Load ``source_state`` into ``model``; with ``reinit_head`` the last Linear keeps its own init.

    Returns the names of the parameters left at their fresh initialisation. Raises ConfigError when
    any other parameter's shape differs (e.g. different feature widths or variants).
    """
    head = output_layer(model) + "."
    own = model.state_dict()
    kept = [k for k in own if reinit_head and k.startswith(head)]
    for key, value in own.items():
        if key in kept:
            continue
        if key not in source_state or source_state[key].shape != value.shape:
            got = tuple(source_state[key].shape) if key in source_state else "missing"
            raise ConfigError(f"transfer: source weights do not fit the target model at {key} "
                              f"(target {tuple(value.shape)}, source {got}); same variant and feature widths needed")
    model.load_state_dict({**own, **{k: v for k, v in source_state.items() if k not in kept and k in own}})
    return kept


def train_split_from(
    x: torch.Tensor,
    y: torch.Tensor,
    operators: dict[str, torch.Tensor],
    variant: str,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainingConfig,
    seed: int,
    device: torch.device,
    init_state: dict[str, torch.Tensor] | None = None,
    reinit_head: bool = False,
    index: int = 0,
) -> SplitRun:
    """:func:`landuse.training.protocol.train_split`, optionally starting from ``init_state``.

    Without ``init_state`` this *is* ``train_split``. With it the loop is the same (same seed,
    so the same dropout masks; the same epoch rule) but the model starts from the given weights
    (see :func:`transfer_state`) and every layer is fine-tuned.
    """
    init = None
    if init_state is not None:
        source = {k: v.cpu() for k, v in init_state.items()}
        init = lambda model: transfer_state(model, source, reinit_head)  # noqa: E731
    return train_split(x, y, operators, variant, split, cfg, seed, device, index=index, init=init)


@dataclass
class City:
    """One city's graph prepared for training: features of the chosen modalities and operators."""

    name: str
    graph: GraphData
    x: torch.Tensor  # [N, F]
    operators: dict[str, torch.Tensor]

    @property
    def labelled(self) -> np.ndarray:
        """Indices of the labelled nodes."""
        return np.flatnonzero(self.graph.has_label.numpy())


def prepare_city(name: str, graph: GraphData, features: Sequence[str], variant: str) -> City:
    """Feature matrix and the variant's operators for one city."""
    return City(name, graph, feature_matrix(graph, features), build_operators(graph, needed_operators([variant])))


def check_compatible(source: City, target: City, features: Sequence[str]) -> bool:
    """Raise ConfigError when the feature widths differ; return whether the class head must be reinitialised."""
    for name in features:
        a, b = source.graph.features[name].shape[1], target.graph.features[name].shape[1]
        if a != b:
            raise ConfigError(f"transfer: feature {name!r} has {a} columns in {source.name} but {b} in {target.name}; "
                              "transfer needs the same feature space (same image adapter / geo scales)")
    for name in features:
        if name in NOT_TRANSFERABLE:
            log.warning("transfer: feature %r is not comparable across cities (%s); its columns do not line up",
                        name, NOT_TRANSFERABLE[name])
    reinit = list(source.graph.classes) != list(target.graph.classes)
    if reinit:
        log.info("transfer: classes differ (%d in %s, %d in %s); the output layer is reinitialised",
                 len(source.graph.classes), source.name, len(target.graph.classes), target.name)
    return reinit


def pretrain(source: City, variant: str, cfg: TrainingConfig, seed: int, device: torch.device) -> SplitRun:
    """Train ``variant`` on every labelled source region (90 / 10 train / validation, epoch on validation KL)."""
    labelled = source.labelled
    if len(labelled) < 10:
        raise ConfigError(f"transfer: only {len(labelled)} labelled regions in {source.name}; need at least 10")
    split = random_splits(labelled, 1, 1 - SOURCE_VAL_FRACTION, SOURCE_VAL_FRACTION, seed)[0]
    cfg = dataclasses.replace(cfg, selection="validation")
    return train_split(source.x, source.graph.y, source.operators, variant, split, cfg, seed, device)


@dataclass
class TransferResult:
    """Per-split rows (fraction, method, split, metrics), the summary table, and the source run."""

    splits: pd.DataFrame
    table: pd.DataFrame
    source: SplitRun
    reinit_head: bool
    run_id: str | None = None  # the MLflow run transfer:<source>-><target> (set by transfer_experiment)


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """fraction, method, metric means and stds over splits (population std, as the protocol)."""
    grouped = rows.groupby(["fraction", "method"], sort=True)
    out = grouped[list(METRICS)].mean()
    std = grouped[list(METRICS)].std(ddof=0).fillna(0.0)
    for metric in METRICS:
        out[f"{metric}_std"] = std[metric]
    out["n_train"] = grouped["n_train"].median().astype(int)
    out["splits"] = grouped.size()
    out = out.reset_index()
    out["method"] = pd.Categorical(out["method"], METHODS, ordered=True)
    return out.sort_values(["fraction", "method"]).reset_index(drop=True).astype({"method": str})


def run_transfer(
    source: City,
    target: City,
    variant: str,
    features: Sequence[str],
    source_cfg: TrainingConfig,
    target_cfg: TrainingConfig,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    splits: int = 5,
    seed: int = 0,
) -> TransferResult:
    """Pretrain on ``source``; per fraction and split train scratch and transfer models on ``target``.

    Single models only (``ensemble`` is set to 1): the transfer compares one initialisation with another.
    """
    source_cfg = dataclasses.replace(source_cfg, ensemble=1, label_lag=False)
    target_cfg = dataclasses.replace(target_cfg, ensemble=1, label_lag=False)
    reinit = check_compatible(source, target, features)
    device = pick_device(target_cfg.device)
    labelled = target.labelled
    if len(labelled) < 10:
        raise ConfigError(f"transfer: only {len(labelled)} labelled regions in {target.name}; need at least 10")
    small = max(source.graph.num_nodes, target.graph.num_nodes) < SMALL_GRAPH
    with cpu_threads(1 if small else None):
        src = pretrain(source, variant, source_cfg, seed, device)
        log.info("transfer: pretrained %s on %s (val KL %.4f, epoch %d)", variant, source.name,
                 src.metrics["val"]["kl"], src.best_epoch)
        rows = []
        for fraction in fractions:
            val = val_fraction_for(fraction)
            for i, split in enumerate(random_splits(labelled, splits, fraction, val, seed)):
                if not len(split[0]) or not len(split[2]) or (target_cfg.selection == "validation" and not len(split[1])):
                    raise ConfigError(f"transfer: fraction {fraction} leaves an empty train / validation / test set "
                                      f"of {len(labelled)} labelled regions in {target.name}")
                for method in METHODS:
                    init = src.state if method == "transfer" else None
                    run = train_split_from(target.x, target.graph.y, target.operators, variant, split, target_cfg,
                                           seed + i, device, init_state=init, reinit_head=reinit, index=i)
                    rows.append({"fraction": float(fraction), "method": method, "split": i, "n_train": len(split[0]),
                                 "best_epoch": run.best_epoch, **run.metrics["test"]})
    frame = pd.DataFrame(rows)
    return TransferResult(frame, summary_table(frame), src, reinit)


def markdown(table: pd.DataFrame, title: str, selection: str, note: str = "") -> str:
    """The transfer table as Markdown, metric mean ± std over splits."""
    from landuse.training.experiments import OPTIMISTIC

    lines = [f"### {title}", ""]
    if selection == "test":
        lines += [f"> **{OPTIMISTIC}**", ""]
    head = ["train fraction", "method", "n train", "KL", "L1 (mean)", "L1 (sum)", "cosine"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [f"{r['fraction']:.0%}", str(r["method"]), str(r["n_train"])]
        cells += [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    n = int(table["splits"].iloc[0]) if len(table) else 0
    lines += ["", f"Target test metrics, mean ± std over {n} splits; scratch and transfer share splits, seeds, "
              "epochs and learning rate. KL = KL(y‖ŷ) batchmean; L1 (mean) over regions × classes; "
              "L1 (sum) per region; cosine row-wise." + (f" {note}" if note else "")]
    return "\n".join(lines) + "\n"


def plot_transfer(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Test KL against the training fraction for scratch and transfer, mean ± std bands (PNG)."""
    from landuse.training.tracking import plot_bands

    series = {}
    for method in METHODS:
        part = table[table["method"] == method].sort_values("fraction")
        series[method] = (part["fraction"].to_numpy() * 100, part["kl"].to_numpy(), part["kl_std"].to_numpy())
    return plot_bands(series, path, title, "target training regions (% of labelled)", "test KL(y || y_hat)", marker="o")


def load_city(config: Config, variant: str, features: Sequence[str]) -> City:
    """A city's tables (node_features and the edge sets ``variant`` needs) prepared for transfer."""
    from landuse.data.reader import load_graph

    edges = sorted({OPERATOR_EDGES[op] for op in needed_operators([variant])})
    try:
        graph = load_graph(config.tables_dir, classes=list(config.labels.classes), edges=edges)
    except ValueError as exc:  # a missing table names the stage to run: a user error
        raise ConfigError(f"transfer: {config.name}: {exc}") from exc
    return prepare_city(config.name, graph, features, variant)


def load_source_config(target: Config, origin: str = "config") -> Config:
    """The source city's config: ``transfer.source_config`` files layered, ``transfer.source_set`` applied.

    Only its assembled tables are read, so its raw inputs need not be present. Raises ConfigError
    (naming ``origin``, the target's config file) when the target names no source config.
    """
    from landuse.config import load_config

    settings = target.transfer
    if not settings.source_config:
        raise ConfigError(f"{origin}: transfer.source_config: required: the source city's config "
                          "(--source-config SOURCE.yaml or transfer.source_config: [SOURCE.yaml])")
    return load_config(list(settings.source_config), list(settings.source_set), check_inputs=False)


def transfer_experiment(
    target_config: Config,
    source_config: Config,
    fractions: Sequence[float] | None = None,
    splits: int | None = None,
    features: Sequence[str] | None = None,
    out: Path | None = None,
) -> tuple[TransferResult, Path]:
    """Load both cities, run the transfer, write and log (MLflow) the table and plot; returns (result, markdown path).

    ``fractions``, ``splits`` and ``features`` default to the target config's ``transfer`` section
    (``transfer.splits`` null: ``training.splits``).

    Results go to ``out`` (default ``<target work_dir>/results/transfer/``; the transfer stage passes its
    staging directory, which the runner commits: landuse.stages.transfer); MLflow (the target's tracking URI and
    experiment) gets a run ``transfer:<source>-><target>`` with the table (CSV + Markdown), the
    per-split rows, the plot, and metrics ``<method>_<metric>`` at step = fraction in percent.
    """
    import mlflow

    from landuse.training.experiments import results_dir
    from landuse.training.tracking import flatten, log_config, log_table_artifacts, setup_mlflow

    cfg = target_config.training
    settings = target_config.transfer
    fractions = tuple(settings.fractions if fractions is None else fractions)
    features = tuple(features or settings.features)
    splits = splits or settings.splits or cfg.splits
    # the logged config (params transfer.*) shows what ran: arguments and training.splits resolved
    target_config = dataclasses.replace(target_config, transfer=dataclasses.replace(
        settings, fractions=fractions, splits=splits, features=features))
    for f in fractions:
        val_fraction_for(f)
    source = load_city(source_config, cfg.variant, features)
    target = load_city(target_config, cfg.variant, features)
    setup_mlflow(target_config)
    name = f"{source_config.name}->{target_config.name}"
    out = results_dir(target_config, "transfer") if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name=f"transfer:{name}") as run:
        log_config(target_config)
        mlflow.log_dict(source_config.redacted_dict(), "source_config.json")
        mlflow.set_tags({"kind": "transfer", "source": source_config.name, "target": target_config.name,
                         "features": ",".join(features), "variant": cfg.variant, "selection": cfg.selection})
        # transfer.fractions / splits / features are params of log_config (the target's transfer section)
        mlflow.log_params({f"source.{k}": v for k, v in flatten({"training": source_config.training.__dict__}).items()})
        result = run_transfer(source, target, cfg.variant, features, source_config.training, cfg,
                              fractions, splits, target_config.seed)
        mlflow.set_tag("reinit_head", str(result.reinit_head))
        mlflow.log_metrics({"source_val_kl": result.source.metrics["val"]["kl"],
                            "source_best_epoch": result.source.best_epoch})
        for _, row in result.table.iterrows():
            step = int(round(row["fraction"] * 100))
            mlflow.log_metrics({f"{row['method']}_{m}": float(row[m]) for m in METRICS}, step=step)
            mlflow.log_metrics({f"{row['method']}_{m}_std": float(row[f"{m}_std"]) for m in METRICS}, step=step)
        note = ("Classes differ: the output layer was reinitialised." if result.reinit_head else "")
        text = markdown(result.table, f"Transfer {name} ({cfg.variant} on {'+'.join(features)})", cfg.selection, note)
        log_table_artifacts({"transfer": result.table, "transfer_splits": result.splits}, out, {"transfer": text})
        png = plot_transfer(result.table, out / "transfer_kl.png", f"{name} ({cfg.variant})")
        mlflow.log_artifact(str(png))
        result.run_id = run.info.run_id
    return result, out / "transfer.md"
