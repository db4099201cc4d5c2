"""The registered region model: an inductive MLflow ``pyfunc`` over a region table.

Artifacts (nothing pickled; the model is logged as MLflow "models from code", the code being
:mod:`landuse.serving.model_code`, which imports this module from the installed package):

* ``spec.json`` — what the model expects and how to rebuild it: variant, classes, the feature layout
  (modality, column, flag column, width), which modalities carry presence columns, spatial / label
  lags, the operators and edge sets, and the network's constructor settings;
* ``weights.safetensors`` — the network's state dict (``model.*``) and the training nodes' feature
  standardisation (``mean``, ``std``).

Its size depends on the feature width, never on the number of regions. ``predict`` takes a region
table (:mod:`landuse.serving.region_table`) and returns one row per region: ``region_id``, one
probability column per class, ``dominant_class``, ``confidence``, ``entropy``, ``entropy_norm``.
Params: ``unknown_neighbours`` (``error`` | ``drop``) and ``classes`` (if given, must equal the
model's class list — a guard for callers that expect a taxonomy).

Integrity: :func:`log_region_model` records the sha256 of every artifact in the run, registration
records them in the model version, and :func:`load_region_model` loads only a local copy verified
against that record, with landuse's loader and nothing else (:mod:`landuse.serving.integrity`;
:class:`ArtifactIntegrityError` otherwise, before any file of the model runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from landuse.data.reader import GraphData
from landuse.serving.integrity import ArtifactIntegrityError, load_verified_pyfunc, record_logged_model
from landuse.serving.region_table import (EDGE_COLUMNS, LABELS, REGION_ID, RegionTableError, graph_from_table,
                                          region_table)

__all__ = ["ArtifactIntegrityError", "ModelSpec", "build_spec", "load_region_model", "log_region_model",
           "table_for_graph"]
log = logging.getLogger(__name__)
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "landuse-region-model"
FORMAT_VERSION = 1
MODEL_CODE = Path(__file__).with_name("model_code.py")
EXAMPLE_ROWS = 5


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a served region model expects and how to rebuild its network."""

    variant: str
    classes: tuple[str, ...]
    features: tuple[str, ...]  # modalities, in input order
    layout: tuple[dict, ...]  # per modality: {"modality", "column", "flag", "width"}
    presence: tuple[str, ...]  # modalities with a presence column (training graph's choice)
    use_presence: bool
    spatial_lag: int
    label_lag: bool
    operators: tuple[str, ...]
    in_dim: int
    network: dict  # build_model settings: ensemble, width, dropout
    format: str = FORMAT
    version: int = FORMAT_VERSION

    @property
    def edge_sets(self) -> tuple[str, ...]:
        """Edge sets the region table must carry: those of the operators, plus adjacency for the lags."""
        from landuse.training.protocol import OPERATOR_EDGES

        names = {OPERATOR_EDGES[op] for op in self.operators}
        if self.spatial_lag or self.label_lag:
            names.add("adjacency")
        return tuple(name for name in EDGE_COLUMNS if name in names)

    def to_json(self) -> str:
        """The spec as JSON text."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "spec.json") -> ModelSpec:
        """Parse a spec; a one-line error for another format or a newer version."""
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"{where}: not a landuse region model (format {data.get('format')!r})")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{where}: model format version {data['version']} is newer than this landuse "
                             f"({FORMAT_VERSION}); upgrade landuse")
        for key in ("classes", "features", "layout", "presence", "operators"):
            data[key] = tuple(data[key])
        return cls(**data)


def build_spec(graph: GraphData, variant: str, features: Sequence[str], operators: Sequence[str], in_dim: int,
               cfg: Any) -> ModelSpec:
    """The spec of a model trained on ``graph`` with training config ``cfg`` (a TrainingConfig)."""
    from landuse.data.tables import modality_columns
    from landuse.training.protocol import presence_modalities

    layout = tuple({"modality": m, "column": modality_columns(m)[0], "flag": modality_columns(m)[1],
                    "width": int(graph.features[m].shape[1])} for m in features)
    return ModelSpec(variant=variant, classes=tuple(graph.classes), features=tuple(features), layout=layout,
                     presence=tuple(presence_modalities(graph, features)) if cfg.presence else (),
                     use_presence=bool(cfg.presence), spatial_lag=int(cfg.spatial_lag), label_lag=bool(cfg.label_lag),
                     operators=tuple(sorted(operators)), in_dim=int(in_dim),
                     network={"ensemble": int(cfg.ensemble), "width": float(cfg.width), "dropout": float(cfg.dropout)})


def save_artifacts(directory: Path, spec: ModelSpec, state: Mapping[str, torch.Tensor], mean: torch.Tensor,
                   std: torch.Tensor) -> dict[str, str]:
    """Write spec.json and weights.safetensors into ``directory``; returns MLflow's ``artifacts`` mapping."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(spec.to_json())
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}
    tensors["mean"], tensors["std"] = mean.detach().float().cpu().contiguous(), std.detach().float().cpu().contiguous()
    save_file(tensors, str(directory / WEIGHTS_FILE))
    return {"spec": str(directory / SPEC_FILE), "weights": str(directory / WEIGHTS_FILE)}


def load_network(spec: ModelSpec, weights: Path):
    """The :class:`RegionModel` described by ``spec`` with the weights file loaded (no pickle)."""
    from safetensors.torch import load_file

    from landuse.config import TrainingConfig
    from landuse.models.serving import RegionModel
    from landuse.training.protocol import build_model

    cfg = dataclasses.replace(TrainingConfig(), variant=spec.variant, **spec.network)
    tensors = load_file(str(weights))
    network = build_model(spec.in_dim, len(spec.classes), spec.variant, cfg)
    network.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    return RegionModel(network, tensors["mean"], tensors["std"]).eval()


def score(network, spec: ModelSpec, graph: GraphData) -> np.ndarray:
    """Predicted distributions [N, C] for the graph's nodes: the model input as in training, operators from its edges."""
    from landuse.training.protocol import build_operators, model_input, with_label_lag

    x = model_input(graph, spec.features, spec.use_presence, spec.spatial_lag, presence_of=spec.presence)
    if spec.label_lag:  # every region with a known label informs its neighbours (never itself)
        x = with_label_lag(x, graph, np.flatnonzero(graph.has_label.numpy()))
    if x.shape[1] != spec.in_dim:
        raise RegionTableError(f"region table: the model input has {x.shape[1]} columns; the model expects {spec.in_dim}")
    with torch.no_grad():
        return torch.softmax(network(x, build_operators(graph, spec.operators)), dim=-1).numpy()


def python_model():
    """The ``mlflow.pyfunc.PythonModel`` instance that :mod:`landuse.serving.model_code` registers."""
    import mlflow.pyfunc
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    class LanduseRegionModel(mlflow.pyfunc.PythonModel):
        """An inductive landuse region model (see :mod:`landuse.serving.pyfunc`)."""

        def load_context(self, context) -> None:
            self.spec = ModelSpec.from_json(Path(context.artifacts["spec"]).read_text())
            self.network = load_network(self.spec, Path(context.artifacts["weights"]))

        def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            params = params or {}
            try:
                expected = params.get("classes") or []
                if len(expected) and list(expected) != list(self.spec.classes):
                    raise RegionTableError(f"classes {list(expected)} do not match the model's {list(self.spec.classes)}")
                graph = graph_from_table(pd.DataFrame(model_input), self.spec.layout, self.spec.edge_sets,
                                         self.spec.classes, labels=self.spec.label_lag,
                                         unknown_neighbours=params.get("unknown_neighbours") or "error")
                probs = score(self.network, self.spec, graph)
            except RegionTableError as exc:
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
            from landuse.serving.predict import prediction_table

            return prediction_table(graph.region_ids.numpy(), probs, list(self.spec.classes))

    return LanduseRegionModel()


def signature(spec: ModelSpec):
    """Input (every column of the region table the model needs), output and params schemas."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    # every column is needed, but declared optional: the model's own check then names the missing
    # column in one line instead of MLflow's schema error, which prints the whole table
    columns: list[tuple[str | Array, str]] = [("long", REGION_ID)]
    for item in spec.layout:
        columns += [(Array("double"), item["column"]), ("boolean", item["flag"])]
    for name in spec.edge_sets:
        to_col, weight_col = EDGE_COLUMNS[name]
        columns += [(Array("long"), to_col)] + ([(Array("double"), weight_col)] if weight_col else [])
    if spec.label_lag:
        columns.append((Array("double"), LABELS))
    inputs: list[ColSpec | TensorSpec] = [ColSpec(kind, name, required=False) for kind, name in columns]
    outputs: list[ColSpec | TensorSpec] = [ColSpec("long", REGION_ID), *(ColSpec("double", c) for c in spec.classes),
               ColSpec("string", "dominant_class"), *(ColSpec("double", c) for c in ("confidence", "entropy", "entropy_norm"))]
    params = ParamSchema([ParamSpec("unknown_neighbours", "string", "error"),
                          ParamSpec("classes", "string", [], shape=(-1,))])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


def example_rows(graph: GraphData, spec: ModelSpec, k: int = EXAMPLE_ROWS) -> np.ndarray:
    """Node positions of a small self-contained example: the best-connected node and its neighbours."""
    n = graph.num_nodes
    if not spec.edge_sets:
        return np.arange(min(k, n))
    index = graph.edges[spec.edge_sets[0]][0].numpy()
    if index.shape[1] == 0:
        return np.arange(min(k, n))
    centre = int(np.bincount(index[0], minlength=n).argmax())
    nbrs = index[1][index[0] == centre]
    return np.unique(np.concatenate([[centre], nbrs[nbrs != centre][: k - 1]]))


def log_region_model(graph: GraphData, spec: ModelSpec, state: Mapping[str, torch.Tensor], mean: torch.Tensor,
                     std: torch.Tensor, name: str, metadata: dict, workdir: Path):
    """Log the region model to the active MLflow run and record its artifacts' sha256 in the run
    (tag ``landuse.artifact_sha256.<name>``); returns MLflow's ModelInfo."""
    import mlflow

    artifacts = save_artifacts(workdir, spec, state, mean, std)
    example = region_table(graph, spec.layout, spec.edge_sets, labels=spec.label_lag, rows=example_rows(graph, spec))
    info = mlflow.pyfunc.log_model(name=name, python_model=str(MODEL_CODE), artifacts=artifacts,
                                   signature=signature(spec), input_example=example,
                                   metadata={**metadata, "format": FORMAT, "format_version": FORMAT_VERSION})
    record_logged_model(info, name)
    return info


def load_region_model(model_uri: str):
    """(pyfunc model, spec) for an MLflow model URI; ValueError (one line) if it is not a landuse region model.

    The artifacts are verified against the registry's (or run's) sha256 record and loaded from that
    verified local copy; ArtifactIntegrityError (one line, naming the model version and the file)
    when they differ or describe another loader — nothing of the model runs before that check.
    """
    model = load_verified_pyfunc(model_uri)
    meta = model.metadata.metadata or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{model_uri}: not an inductive landuse region model (logged by an older landuse?); "
                         "retrain with `landuse run train`")
    spec = model.unwrap_python_model().spec
    return model, spec


def table_for_graph(graph: GraphData, spec: ModelSpec) -> pd.DataFrame:
    """Every region of ``graph`` as the model's region table (what ``landuse run predict`` scores)."""
    return region_table(graph, spec.layout, spec.edge_sets, labels=spec.label_lag)
