"""``landuse run predict --regions NEW.gpkg``: embed and score regions that were not in the training run.

The new regions get their own work dir, ``<driver_dir>/new_regions/<stem>-<hash of the file>``, and
a config derived from the training config (:func:`derived_config`): ``inputs.regions`` is the
polygons adapter on the new file (the training regions' id column, ``on_duplicate_id`` and ``crs``
options, the id column overridable), the synthetic generator off, bring-your-own embeddings
dropped (they are keyed by the training regions), and ``inference.training_tables`` pointing at the
training run's tables. The pipeline runner then runs every stage up to ``assemble`` there, so a
second call with the same file skips them all. Per modality:

* ``poi`` (Doc2Vec): the new regions' tours are built exactly as in training, then the training
  Doc2Vec *infers* each one (its training epochs, the RNG reset to ``seed`` per region) — inference
  is not lookup, so even a training region gets a close but not equal vector;
* ``flow`` (Word2Vec over walks) is transductive — its tokens are the training regions — so a new
  region's H_flow is the area-weighted mean of the vectors of the training regions with flow it
  overlaps (exact for a region equal to a training region; no overlap: zeros, ``has_flow`` False);
* ``geo``: the centroid encoded in the training run's extent (the training regions' centroid box);
* ``image``, ``building``, ``poi_text``: per-region functions, computed on the new regions as they are;
* ``poi_counts``, ``poi_tfidf``, ``poi_density`` depend on the region set (the ``max_tokens`` most
  frequent tokens become the columns, the idf comes from all regions, the entropy is normalised by
  the vocabulary size), so for scoring they are recomputed with the TRAINING run's vocabulary and
  idf (:func:`aligned_poi_features`; tokens the training run never saw count under its
  ``__other__`` column when it has one, else not at all). The derived ``node_features`` keep the
  stage's own values; the scored region table carries the aligned ones.

Labels: ``inputs.landuse`` is kept, so where the land-use polygons cover the new regions the
``labels`` stage runs there too and the result reports the KL divergence on them. The flows are
recomputed for the new regions (``edges_flow``), as are adjacency and distance decay, so the
graph operators see the new regions' own neighbourhoods. Then the new regions' region table
(:func:`landuse.serving.pyfunc.table_for_graph`) goes through the registered pyfunc, and the
predictions are written to the derived work dir where the predict stage puts them (``tables/predictions``,
``maps/predictions/predictions.geojson``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError, InferenceConfig, SourceConfig

if TYPE_CHECKING:
    from landuse.runner import StageResult
    from landuse.serving.pyfunc import ModelSpec

log = logging.getLogger(__name__)
SUBDIR = "new_regions"  # under the training run's driver dir
HASH_CHARS = 10
# modalities whose columns / scaling depend on the set of regions they were computed over
REGION_SET_MODALITIES = ("poi_counts", "poi_tfidf", "poi_density")
# the training regions' options that carry over to the new file (layer names are per file)
CARRIED_OPTIONS = ("id_column", "on_duplicate_id", "crs")


@dataclass(frozen=True)
class NewRegionsResult:
    """What :func:`predict_new_regions` did: the derived config, its stages, the predictions and where they went."""

    config: Config  # the derived config (work dir of the new regions)
    stages: list[StageResult]  # per stage: ran or unchanged (skipped)
    table: pd.DataFrame  # the prediction table, one row per new region
    parquet: Path
    geojson: Path
    aligned: tuple[str, ...]  # modalities recomputed with the training vocabulary for scoring
    labelled: int  # new regions with a land-use label
    kl: float | None  # mean KL(label || prediction) over them; None without labels


def content_hash(path: Path, chars: int = HASH_CHARS) -> str:
    """A short sha256 of the file's bytes: the same file always maps to the same work dir."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:chars]


def regions_options(config: Config, id_column: str | None) -> dict[str, Any]:
    """Options of the polygons adapter on the new file: the training regions' where they apply, id column overridable."""
    source = config.inputs.regions
    options: dict[str, Any] = {}
    if source is not None and source.adapter == "polygons":
        options = {k: v for k, v in source.options.items() if k in CARRIED_OPTIONS}
    elif source is not None and source.options.get("crs"):
        options["crs"] = source.options["crs"]  # grid: its boundary's CRS; the grid's ids are row numbers here
    if id_column is not None:
        options["id_column"] = id_column
    return options


def check_regions_file(path: Path, options: dict[str, Any]) -> int:
    """The number of polygons in ``path``; a one-line ConfigError for a missing or unreadable file, a
    missing id column, a non-polygon or null geometry, or no CRS (null or duplicate ids: the regions stage)."""
    from landuse.ingest.errors import IngestError
    from landuse.ingest.polygons import read_polygons
    from landuse.spatial.regions import ROW_NUMBER

    if not path.is_file():
        raise ConfigError(f"--regions {path}: file not found")
    id_column = options.get("id_column") or None
    id_column = None if id_column == ROW_NUMBER else id_column
    try:
        # ids are checked by the regions stage (null / duplicate ids, on_duplicate_id), as in training
        gdf = read_polygons(path, crs=options.get("crs"))
    except IngestError as exc:
        raise ConfigError(f"--regions {exc}") from None
    if id_column is not None and id_column not in gdf.columns:
        columns = ", ".join(str(c) for c in gdf.columns if c != gdf.geometry.name) or "none"
        raise ConfigError(f"--regions {path}: no id column {id_column!r} (the training regions' id column; has: "
                          f"{columns}); pass --regions-id-column COL, or row_number to number them 0..N-1")
    if gdf.empty:
        raise ConfigError(f"--regions {path}: no polygons")
    return len(gdf)


def derived_config(config: Config, regions_path: Path, id_column: str | None = None) -> Config:
    """The config of the new regions: own work dir, the new file as ``inputs.regions``, inference mode."""
    path = Path(regions_path)
    if config.inputs.regions is None:
        raise ConfigError("--regions: the training config has no inputs.regions (nothing was trained on regions)")
    options = regions_options(config, id_column)
    check_regions_file(path, options)
    work_dir = config.driver_dir / SUBDIR / f"{path.stem}-{content_hash(path)}"
    source = SourceConfig(adapter="polygons", path=path.resolve(), options=types.MappingProxyType(options))
    return dataclasses.replace(
        config,
        work_dir=work_dir,
        synth=dataclasses.replace(config.synth, enabled=False),  # the city's files exist: read them, never regenerate
        inputs=dataclasses.replace(config.inputs, regions=source, embeddings=types.MappingProxyType({})),
        inference=InferenceConfig(training_tables=config.tables_dir),
    )


def check_model(config: Config, spec: ModelSpec) -> None:
    """One-line refusal when the model needs a modality the new regions cannot get, or the training
    work dir lacks its tables — before any stage runs."""
    from landuse.manifest import read_manifest
    from landuse.stages.regions import study_crs

    external = [m for m in spec.features if m in config.inputs.embeddings]
    if external:
        raise ConfigError(f"--regions: the model uses the bring-your-own embedding {external[0]!r} (keyed by the training "
                          "regions); it cannot embed new regions")
    if "image" in spec.features and config.embeddings.image.source == "encoder":
        raise ConfigError("--regions: the model's H_img comes from the pretrained image encoder "
                          "(embeddings.image.source: encoder), which --regions does not run yet; "
                          "use a model trained with embeddings.image.source: statistics")
    study_crs(config)  # a one-line error when unset
    for table in ("regions", "node_features"):
        if read_manifest(config.tables_dir / table) is None:
            raise ConfigError(f"--regions: the training work dir {config.work_dir} has no {table} table; "
                              "run `landuse pipeline` there first")


def run_stages(derived: Config, force: bool = False) -> list[StageResult]:
    """Every stage up to ``assemble`` in the derived work dir (unchanged ones skipped)."""
    from landuse.runner import run_pipeline
    from landuse.stages import STAGES

    derived.work_dir.mkdir(parents=True, exist_ok=True)
    (derived.work_dir / "resolved_config.json").write_text(json.dumps(derived.redacted_dict(), indent=2, sort_keys=True) + "\n")
    # the data stages only: training, evaluation and publishing belong to the training run
    return run_pipeline(derived, STAGES, force=force, until="assemble",
                        only=[name for name in STAGES if name != "synth"])


def _matrix_for_tokens(counts: pd.DataFrame, region_ids: np.ndarray, tokens: Sequence[str]):
    """Sparse counts [N, len(tokens)] in the column order of ``tokens`` (a training vocabulary):
    tokens outside it go to ``__other__`` when the vocabulary has one, else they are not counted."""
    import scipy.sparse as sp

    from landuse.features.poi_features import N_POIS, OTHER, TOKEN
    from landuse.spark.schemas import REGION_ID

    column = {t: i for i, t in enumerate(tokens) if t != OTHER}
    other = len(tokens) - 1 if tokens and tokens[-1] == OTHER else -1
    col = counts[TOKEN].astype(str).map(column).fillna(other).to_numpy(np.int64)
    row = np.searchsorted(region_ids, counts[REGION_ID].to_numpy(np.int64))
    inside = (row < len(region_ids)) & (col >= 0)
    inside[inside] = region_ids[row[inside]] == counts[REGION_ID].to_numpy(np.int64)[inside]
    values = counts[N_POIS].to_numpy(np.float64)[inside]
    return sp.coo_matrix((values, (row[inside], col[inside])), shape=(len(region_ids), len(tokens))).tocsr()


def aligned_poi_features(train: Config, derived: Config, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """``poi_counts`` / ``poi_tfidf`` / ``poi_density`` of the new regions in the training run's columns.

    As the ``poi-features`` stage computes them, except that the vocabulary (the ``max_tokens`` most
    frequent tokens per level) and the idf are the training run's, so column j means the same
    category as in training and the model's weights apply. Rows in region-id order.
    """
    from sklearn.feature_extraction.text import TfidfTransformer

    from landuse.features.poi_features import count_matrix, density, level_token_counts, shares
    from landuse.spark.io import read_pandas, read_table
    from landuse.spark.schemas import AREA_M2, REGION_ID, T_POI_REGIONS, T_REGIONS
    from landuse.spark.session import build_session

    cfg = train.embeddings.poi_features
    spark = build_session(derived)
    levels = sorted(cfg.levels)
    train_ids = np.sort(read_pandas(train, T_REGIONS, "regions", columns=[REGION_ID])[REGION_ID].to_numpy(np.int64))
    regions = read_pandas(derived, T_REGIONS, "regions", columns=[REGION_ID, AREA_M2]).sort_values(REGION_ID)
    ids = regions[REGION_ID].to_numpy(np.int64)
    train_pois = read_table(spark, train, T_POI_REGIONS, "pois")
    new_pois = read_table(spark, derived, T_POI_REGIONS, "pois")
    matrices, weighted = [], []
    for level in levels:
        # one row per (region, token): the aggregate the stage collects too
        train_matrix, tokens = count_matrix(level_token_counts(train_pois, level).toPandas(), train_ids, cfg.max_tokens)
        matrix = _matrix_for_tokens(level_token_counts(new_pois, level).toPandas(), ids, tokens)
        matrices.append(matrix)
        if matrix.shape[1] == 0:
            weighted.append(np.zeros(matrix.shape, dtype=np.float32))
        else:
            idf = TfidfTransformer(sublinear_tf=True, smooth_idf=True, norm="l2").fit(train_matrix)
            weighted.append(np.asarray(idf.transform(matrix).todense(), dtype=np.float32))
    out = {"poi_counts": np.hstack([shares(m) for m in matrices]), "poi_tfidf": np.hstack(weighted),
           "poi_density": density(matrices, regions[AREA_M2].to_numpy(float))[0]}
    return {name: out[name] for name in modalities}


def label_kl(graph: Any, table: pd.DataFrame) -> tuple[int, float | None]:
    """(labelled regions, mean KL(label ‖ prediction) over them) — the training protocol's metric."""
    import torch

    from landuse.training.metrics import evaluate

    known = graph.has_label.numpy()
    if not known.any():
        return 0, None
    ids = graph.region_ids.numpy()[known]
    probs = table.set_index("region_id").loc[ids, list(graph.classes)].to_numpy(np.float64)
    logits = torch.log(torch.from_numpy(np.clip(probs, 1e-12, 1.0))).float()
    return int(known.sum()), float(evaluate(logits, graph.y[torch.from_numpy(known)])["kl"])


def predict_new_regions(config: Config, model_uri: str, regions_path: Path, id_column: str | None = None,
                        force: bool = False) -> NewRegionsResult:
    """Embed the regions of ``regions_path`` with the training run of ``config`` and score them with the model.

    ``config`` is the TRAINING config (its work dir holds the fitted models); see the module docstring.
    """
    import torch

    from landuse.data.reader import load_graph
    from landuse.serving.pyfunc import table_for_graph
    from landuse.serving.predict import GEOJSON_FILE, MAP_OUTPUT, T_PREDICTIONS, load_served_model, score_table

    derived = derived_config(config, regions_path, id_column)
    model, spec = load_served_model(model_uri)
    check_model(config, spec)
    stages = run_stages(derived, force=force)
    try:
        graph = load_graph(derived.tables_dir, classes=list(spec.classes), edges=spec.edge_sets)
    except ValueError as exc:
        raise ConfigError(f"--regions: {str(exc).splitlines()[0]}") from None
    aligned = tuple(m for m in spec.features if m in REGION_SET_MODALITIES)
    if aligned:
        for name, matrix in aligned_poi_features(config, derived, aligned).items():
            graph.features[name] = torch.from_numpy(matrix)
    table = score_table(model, table_for_graph(graph, spec), model_uri)
    meta = {"model_uri": model_uri, "variant": spec.variant, "features": list(spec.features),
            "classes": list(spec.classes), "regions_file": str(Path(regions_path).resolve()),
            "training_work_dir": str(config.work_dir), "aligned_to_training": list(aligned)}
    outputs = write_scores(derived, table, meta)
    parquet, geojson = outputs[T_PREDICTIONS], outputs[MAP_OUTPUT] / GEOJSON_FILE
    labelled, kl = label_kl(graph, table)
    if kl is not None:
        log.info("predict --regions: KL on %d labelled new regions: %.5f", labelled, kl)
    return NewRegionsResult(derived, stages, table, parquet, geojson, aligned, labelled, kl)


def write_scores(derived: Config, table: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Path]:
    """Commit the new regions' predictions through the runner, where the predict stage puts them in the
    derived work dir (``tables/predictions``, ``maps/predictions/predictions.geojson``); always rewritten."""
    from landuse.runner import Stage, StageContext, no_spark, run_stage
    from landuse.stages.predict import outputs
    from landuse.serving.predict import MAP_OUTPUT, T_PREDICTIONS, write_predictions

    @no_spark
    def write(ctx: StageContext) -> None:
        write_predictions(derived, table, ctx.out(T_PREDICTIONS), ctx.out(MAP_OUTPUT))
        ctx.summary.update(meta, regions=len(table))

    stage = Stage(name="predict", description="scores of the new regions (landuse run predict --regions)",
                  run=write, outputs=outputs, group="report")
    return dict(run_stage(stage, derived, force=True).outputs)
