"""Training loop and evaluation protocol: K splits, epoch selection, mean ± std over splits.

Full-batch transductive training (docs/architecture.md, method facts): every node is in the graph, the KL loss is
masked to the training nodes. Per split, the epoch is chosen on validation KL by default;
``selection: test`` reproduces the paper's rule (the epoch with the lowest *test* KL), which is
optimistic and labelled so in every report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from landuse.config import ConfigError, TrainingConfig
from landuse.data.reader import GraphData
from landuse.models.hgcn import DEFAULT_HEAD_DIMS, HEADS, HGCN, EnsembleHGCN, variant_defaults
from landuse.training.metrics import evaluate, kl_loss
from landuse.training.splits import Split, blocked_splits, random_splits

log = logging.getLogger(__name__)
METRICS = ("kl", "l1_mean", "l1_sum", "cosine")

# operator name -> edge table it is built from (see landuse.data.reader.EDGE_TABLES)
# Below this many nodes a full-batch epoch is a few small products: one thread is faster than
# two, and on a shared machine multi-threaded tiny ops can be ~100x slower (spin-waiting threads).
SMALL_GRAPH = 20_000

OPERATOR_EDGES = {"adj": "adjacency", "dd": "distance_decay", "in": "flow", "out": "flow", "avg": "flow",
                  "nbr": "adjacency"}


def pick_device(choice: str = "auto") -> torch.device:
    """``cuda`` when asked for or available (auto), else CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: cuda requested but no CUDA device is available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def feature_matrix(graph: GraphData, modalities: Iterable[str]) -> torch.Tensor:
    """The node features of the chosen modalities side by side: [N, sum of dims]."""
    parts = []
    for name in modalities:
        if name not in graph.features:
            raise ConfigError(
                f"training.features: modality {name!r} is not in node_features "
                f"(available: {', '.join(graph.features) or 'none'}); enable its input and rerun `landuse run assemble`"
            )
        parts.append(graph.features[name].float())
    return torch.cat(parts, dim=1)


def presence_modalities(graph: GraphData, modalities: Iterable[str]) -> list[str]:
    """The chosen modalities that some (not all) regions lack: each gets a presence column under ``presence``."""
    return [m for m in modalities if m in graph.flags and 0 < float(graph.flags[m].float().mean()) < 1]


def model_input(graph: GraphData, modalities: Iterable[str], presence: bool = False, spatial_lag: int = 0,
                presence_of: Sequence[str] | None = None) -> torch.Tensor:
    """The model's input [N, F']: the modalities' features, then presence indicators, then spatial lags.

    ``presence``: one 0/1 column per chosen modality that some regions lack (its ``has_*`` flag), so
    the model can tell "absent" from "all zeros" (with the first layer linear, this is equivalent to
    imputing the absent rows); ``presence_of`` fixes which modalities get one (a served model keeps
    the training graph's choice), default :func:`presence_modalities`. ``spatial_lag`` k > 0: the neighbour means (adjacency, no self loop)
    of those columns for 1..k hops appended — a region's surroundings as features. Label-free, so
    computed once for all nodes.
    """
    modalities = list(modalities)
    x = feature_matrix(graph, modalities)
    if presence:
        names = presence_modalities(graph, modalities) if presence_of is None else presence_of
        flags = [graph.flags[m].float().unsqueeze(1) for m in names]
        if flags:
            x = torch.cat([x, *flags], dim=1)
    if spatial_lag:
        if "adjacency" not in graph.edges:
            raise ConfigError("training.spatial_lag: needs the adjacency edges, which are not loaded")
        from landuse.data.operators import neighbour_mean_operator

        op = neighbour_mean_operator(graph.edges["adjacency"][0], graph.num_nodes)
        hops, h = [x], x
        for _ in range(spatial_lag):
            h = torch.sparse.mm(op, h)
            hops.append(h)
        x = torch.cat(hops, dim=1)
    return x


def training_input(graph: GraphData, modalities: Iterable[str], cfg: TrainingConfig) -> torch.Tensor:
    """:func:`model_input` with the training config's ``presence`` and ``spatial_lag``."""
    return model_input(graph, modalities, cfg.presence, cfg.spatial_lag)


def label_lag_features(y: torch.Tensor, train: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """Land use around each region from TRAINING labels only: [N, 2C + 2].

    For hops 1 and 2 over the neighbour-mean operator ``nbr`` (no self loop): the mean label
    distribution of the region's training-set neighbours (zeros where it has none) and the share of
    its neighbourhood that is in the training set. A region's own label never enters its features,
    and validation / test labels never enter anyone's.
    """
    mask = torch.zeros(y.shape[0], 1, dtype=y.dtype, device=y.device)
    mask[train] = 1.0
    out = []
    lab, share = y * mask, mask
    for _ in range(2):
        lab, share = torch.sparse.mm(nbr, lab), torch.sparse.mm(nbr, share)
        out += [torch.where(share > 0, lab / share.clamp_min(1e-12), torch.zeros_like(lab)), share]
    return torch.cat(out, dim=1)


def with_label_lag(x: torch.Tensor, graph: GraphData, known: np.ndarray | torch.Tensor) -> torch.Tensor:
    """x with :func:`label_lag_features` of the ``known`` (labelled, usable) nodes appended: the serving input
    of a ``label_lag`` model (registration: its split's training nodes; prediction: every labelled region)."""
    from landuse.data.operators import neighbour_mean_operator

    if "adjacency" not in graph.edges:
        raise ConfigError("training.label_lag: needs the adjacency edges, which are not loaded")
    nbr = neighbour_mean_operator(graph.edges["adjacency"][0], graph.num_nodes)
    return torch.cat([x, label_lag_features(graph.y, torch.as_tensor(known, dtype=torch.long), nbr)], dim=1)


def build_model(in_dim: int, num_classes: int, variant: str, cfg: TrainingConfig) -> HGCN | EnsembleHGCN:
    """The variant's model with the config's dropout and width (every head and trunk width × ``cfg.width``);
    an :class:`EnsembleHGCN` of ``cfg.ensemble`` such models when that is > 1."""
    if cfg.ensemble > 1:
        return EnsembleHGCN([build_hgcn(in_dim, num_classes, variant, cfg) for _ in range(cfg.ensemble)])
    return build_hgcn(in_dim, num_classes, variant, cfg)


def build_hgcn(in_dim: int, num_classes: int, variant: str, cfg: TrainingConfig) -> HGCN:
    """One model of :func:`build_model` (``cfg.ensemble`` is not read)."""
    settings = variant_defaults(variant)
    dims = {**DEFAULT_HEAD_DIMS, **settings["head_dims"]}
    scale = lambda d: max(1, int(round(d * cfg.width)))  # noqa: E731
    return HGCN(in_dim, num_classes, variant=variant, dropout=cfg.dropout,
                head_dims={k: scale(v) for k, v in dims.items()}, trunk_activation=settings["trunk_activation"],
                trunk_dims=tuple(scale(d) for d in (32, 16)), fusion=settings["fusion"])


def needed_operators(variants: Iterable[str]) -> set[str]:
    """Operators (adj, dd, in, out, avg, nbr) the given variants use."""
    return {"nbr" if head == "nbr2" else head for v in variants for head in HEADS[v] if head != "self"}


def training_operators(graph: GraphData, variant: str, cfg: TrainingConfig) -> dict[str, torch.Tensor]:
    """The operators training ``variant`` under ``cfg`` needs: the variant's own, plus the neighbour mean for ``label_lag``."""
    return build_operators(graph, needed_operators([variant]) | ({"nbr"} if cfg.label_lag else set()))


def build_operators(graph: GraphData, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Sparse [N, N] operators from the graph's edge tables (docs/architecture.md, method facts)."""
    from landuse.data.operators import (adjacency_operator, avg_flow_operator, distance_decay_operator, flow_operators,
                                        neighbour_mean_operator)

    names = set(names)
    n = graph.num_nodes
    for name in names:
        if OPERATOR_EDGES[name] not in graph.edges:
            raise ConfigError(f"training: operator {name!r} needs the {OPERATOR_EDGES[name]} edges, which are not loaded")
    ops: dict[str, torch.Tensor] = {}
    if "adj" in names:
        ops["adj"] = adjacency_operator(graph.edges["adjacency"][0], n)
    if "nbr" in names:
        ops["nbr"] = neighbour_mean_operator(graph.edges["adjacency"][0], n)
    if "dd" in names:
        index, weight = graph.edges["distance_decay"]
        ops["dd"] = distance_decay_operator(index, weight, n)
    if names & {"in", "out", "avg"}:
        index, weight = graph.edges["flow"]
        out_op, in_op = flow_operators(index, weight, n)
        ops.update({"out": out_op, "in": in_op})
        if "avg" in names:
            ops["avg"] = avg_flow_operator(out_op, in_op)
    return {k: v for k, v in ops.items() if k in names}


def make_splits(graph: GraphData, cfg: TrainingConfig, seed: int, xy: np.ndarray | None = None) -> list[Split]:
    """K (train, val, test) node-index splits over the labelled nodes."""
    labelled = np.flatnonzero(graph.has_label.numpy())
    if len(labelled) < 10:
        raise ConfigError(f"training: only {len(labelled)} labelled regions; need at least 10 to split")
    if cfg.split == "blocked":
        if xy is None:
            raise ConfigError("training.split: blocked needs region centroids")
        return blocked_splits(labelled, xy[labelled], cfg.block_m, cfg.splits, cfg.train_fraction, cfg.val_fraction, seed)
    return random_splits(labelled, cfg.splits, cfg.train_fraction, cfg.val_fraction, seed)


@dataclass
class SplitRun:
    """One split's outcome: the selected epoch, metrics there, curves, and the model state."""

    split: int
    best_epoch: int
    metrics: dict[str, dict[str, float]]  # "train" / "val" / "test" -> metric -> value
    curves: dict[str, np.ndarray]  # "train_kl" / "val_kl" / "test_kl" -> [epochs]
    state: dict[str, torch.Tensor] = field(repr=False)
    mean: torch.Tensor = field(repr=False)  # standardisation statistics (train nodes)
    std: torch.Tensor = field(repr=False)
    probs: np.ndarray = field(repr=False)  # [N, C] predicted distribution at the selected epoch
    indices: dict[str, np.ndarray] = field(repr=False)


def standardise(x: torch.Tensor, train: torch.Tensor, enabled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the training nodes' features (std 0 -> 1); identity when disabled."""
    if not enabled:
        return torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    mean = x[train].mean(0)
    std = x[train].std(0, unbiased=False)
    return mean, torch.where(std > 1e-12, std, torch.ones_like(std))


def train_split(
    x: torch.Tensor,
    y: torch.Tensor,
    operators: dict[str, torch.Tensor],
    variant: str,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainingConfig,
    seed: int,
    device: torch.device,
    index: int = 0,
    init: Callable[[HGCN], Any] | None = None,
) -> SplitRun:
    """Train one model on one split; keep the epoch chosen by ``cfg.selection``.

    ``init`` is applied to the freshly built model before training (e.g. loading pretrained
    weights for transfer); it must not draw random numbers, so the seed's dropout masks stay the same.
    With ``cfg.ensemble`` K > 1, K members are trained (seeds ``seed + ENSEMBLE_SEED_STEP·k``, each
    with its own epoch selection) and the run describes their averaged distribution.
    """
    if cfg.ensemble > 1:
        return _train_ensemble(x, y, operators, variant, split, cfg, seed, device, index, init)
    torch.manual_seed(seed)
    train, val, test = (torch.as_tensor(s, dtype=torch.long, device=device) for s in split)
    if cfg.label_lag:
        if "nbr" not in operators:
            raise ConfigError("training.label_lag: needs the adjacency edges, which are not loaded")
        x = torch.cat([x, label_lag_features(y, train.cpu(), operators["nbr"])], dim=1)
    mean, std = standardise(x, train.cpu(), cfg.standardize)
    xs = ((x - mean) / std).to(device)
    y = y.to(device)
    ops = {k: v.to(device) for k, v in operators.items()}
    model = build_hgcn(x.shape[1], y.shape[1], variant, cfg)  # cfg.ensemble == 1 here (ensembles: above)
    if init is not None:
        init(model)
    model = model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pick = val if cfg.selection == "validation" else test
    curves = {k: np.empty(cfg.epochs) for k in ("train_kl", "val_kl", "test_kl")}
    best = (math.inf, -1)
    best_state: dict[str, torch.Tensor] = {}
    best_logits = None
    for epoch in range(cfg.epochs):
        model.train()
        optimiser.zero_grad()
        loss = kl_loss(model(xs, ops)[train], y[train])
        loss.backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            logits = model(xs, ops)
            kls = [kl_loss(logits[s], y[s]).item() if len(s) else math.nan for s in (train, val, test)]
        curves["train_kl"][epoch], curves["val_kl"][epoch], curves["test_kl"][epoch] = kls
        score = kl_loss(logits[pick], y[pick]).item()
        if score < best[0]:
            best = (score, epoch)
            best_state = copy.deepcopy(model.state_dict())
            best_logits = logits
    assert best_logits is not None
    metrics = {name: evaluate(best_logits[s], y[s]) for name, s in (("train", train), ("val", val), ("test", test)) if len(s)}
    return SplitRun(
        split=index, best_epoch=best[1], metrics=metrics, curves=curves,
        state={k: v.cpu() for k, v in best_state.items()}, mean=mean, std=std,
        probs=torch.softmax(best_logits, -1).cpu().numpy(),
        indices={"train": split[0], "val": split[1], "test": split[2]},
    )


ENSEMBLE_SEED_STEP = 7919  # member k of an ensemble trains with seed + 7919·k (member 0 = the single model)


def _train_ensemble(x: torch.Tensor, y: torch.Tensor, operators: dict[str, torch.Tensor], variant: str,
                    split: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: TrainingConfig, seed: int,
                    device: torch.device, index: int, init: Callable[[HGCN], Any] | None) -> SplitRun:
    """K members on one split → one SplitRun of their mean distribution (state of an EnsembleHGCN)."""
    single = dataclasses.replace(cfg, ensemble=1)
    members = [train_split(x, y, operators, variant, split, single, seed + ENSEMBLE_SEED_STEP * k, device, index, init)
               for k in range(cfg.ensemble)]
    probs = np.mean([m.probs for m in members], axis=0)
    logits = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-12))
    yt = y.float().cpu()
    metrics = {name: evaluate(logits[torch.as_tensor(part, dtype=torch.long)], yt[torch.as_tensor(part, dtype=torch.long)])
               for name, part in zip(("train", "val", "test"), split) if len(part)}
    state = {f"members.{k}.{name}": value for k, m in enumerate(members) for name, value in m.state.items()}
    return SplitRun(
        split=index, best_epoch=int(np.median([m.best_epoch for m in members])), metrics=metrics,
        curves={key: np.mean([m.curves[key] for m in members], axis=0) for key in members[0].curves},
        state=state, mean=members[0].mean, std=members[0].std, probs=probs, indices=members[0].indices,
    )


def run_protocol(
    graph: GraphData,
    variant: str,
    modalities: Iterable[str],
    cfg: TrainingConfig,
    seed: int,
    xy: np.ndarray | None = None,
    progress: Any = None,
) -> list[SplitRun]:
    """Train ``variant`` on every split; ``progress`` (a tqdm bar) is advanced once per split."""
    device = pick_device(cfg.device)
    x = training_input(graph, modalities, cfg)
    operators = training_operators(graph, variant, cfg)
    runs = []
    with cpu_threads(1 if graph.num_nodes < SMALL_GRAPH else None):
        for i, split in enumerate(make_splits(graph, cfg, seed, xy)):
            runs.append(train_split(x, graph.y, operators, variant, split, cfg, seed + i, device, index=i))
            if progress is not None:
                progress.update(1)
                progress.set_postfix(variant=variant, test_kl=f"{runs[-1].metrics['test']['kl']:.4f}")
    return runs


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (None: unchanged), restoring the setting afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summarise(runs: list[SplitRun], part: str = "test") -> dict[str, tuple[float, float]]:
    """metric -> (mean, std) over splits for one part (train / val / test)."""
    out = {}
    for metric in METRICS:
        values = np.array([r.metrics[part][metric] for r in runs if part in r.metrics])
        out[metric] = (float(values.mean()), float(values.std())) if len(values) else (math.nan, math.nan)
    return out
