"""Planned-vs-actual monitoring: read a plan, overlay it onto regions, flag deviations, score and map them.

Deviation rule. For region r with predicted distribution p_r, predicted class d = argmax_k p_rk and
planned class c, the *margin* is p_rd − p_rc ≥ 0: by how much the model prefers the use it sees
over the planned use. r deviates when d ≠ c and margin ≥ ``threshold``. A small margin means the
model is torn between the two (mixed use, or an uncertain model), which is not evidence against
the plan; :data:`DEFAULT_THRESHOLD` = 0.5 asks for a clear preference. Chosen on real HGCN output
for the synthetic Shenzhen ``small`` city (predictions of all regions, train ones included): at 0.2
/ 0.3 / 0.4 / 0.5 precision was 0.62 / 0.69 / 0.75 / 0.81 with POI features only and 0.74 / 0.81 /
0.87 / 0.91 with POI+image+geo+flow, recall ≥ 0.975 throughout (``tests/stages/test_representations_small.py``
checks the end-to-end path; ``tests/monitoring/test_planned.py`` the logic in isolation).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from landuse.ingest.files import value_text
from landuse.ingest.polygons import geometry_problems, read_class_mapping, read_polygons
from landuse.spark.schemas import RAW, REASON, REGION_ID, SOURCE
from landuse.spatial.overlay import COVERAGE, class_area_proportions

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
PLAN_SOURCE = "planned"  # SOURCE value of rejected plan rows
PLAN_ID = "plan_id"
PLANNED_CLASS = "planned_class"
PLANNED_SHARE = "planned_share"
PLANNED_COVERAGE = "planned_coverage"
PREDICTED_CLASS = "predicted_class"
P_PLANNED = "p_planned"
P_PREDICTED = "p_predicted"
MARGIN = "margin"
DEVIATION = "deviation"
FLAG_COLUMNS = [REGION_ID, PLANNED_CLASS, PREDICTED_CLASS, P_PLANNED, P_PREDICTED, MARGIN, DEVIATION,
                PLANNED_SHARE, PLANNED_COVERAGE]

# Row-level reasons for rejected plan polygons (besides the geometry reasons of ingest.polygons).
MISSING_CLASS = "missing_class"
UNKNOWN_CLASS = "unknown_class"

_TOLERANCE = 1e-9  # margins are differences of floats: 0.6 - 0.4 must reach a 0.2 threshold

COLOURS = {"consistent": "#b0b0b0", "deviation": "#d62728", "no plan": "#ffffff"}


class MonitoringError(ValueError):
    """Monitoring inputs that cannot be compared (missing columns or tables, bad threshold), in one line."""


def _class_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = value_text(value).strip()
    return text or None


def read_planned(path: Path | str, class_column: str, classes: Sequence[str], id_column: str | None = None,
                 crs: str | None = None, class_map_path: Path | str | None = None,
                 ) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """(plan polygons, rejected rows) from a vector file of planned land use.

    ``class_column`` holds either class names from ``classes`` or, with ``class_map_path`` (a
    ``code,name,landuse_class`` CSV as used for land-use surveys), codes mapped to them. Kept rows:
    ``plan_id`` (``id_column`` as text, else the row number), ``planned_class``, geometry (file CRS,
    or ``crs`` when given). Rows with a missing or unknown class, or a null / non-polygon geometry,
    are returned in the second frame (``source``, ``reason``, ``raw`` JSON) and logged with a count.

    Raises:
        ValueError: (one line naming the file) missing file, missing ``class_column`` or
            ``id_column``, no CRS, null or duplicate ids, or a bad class map.
    """
    path = Path(path)
    classes = list(classes)
    gdf = read_polygons(path, id_column=id_column, crs=crs, required_columns=[class_column], strict=False)
    values = gdf[class_column].map(_class_text)
    if class_map_path is not None:
        mapping = read_class_mapping(class_map_path, classes)
        mapped = values.map(dict(zip(mapping["code"], mapping["landuse_class"])))
    else:
        mapped = values.where(values.isin(classes))
    reasons = geometry_problems(gdf)
    reasons[reasons.isna() & values.isna()] = MISSING_CLASS
    reasons[reasons.isna() & mapped.isna()] = UNKNOWN_CLASS
    ids = gdf[id_column].map(value_text) if id_column else pd.Series(gdf.index.astype(str), index=gdf.index)
    bad = reasons.notna()
    rejects = pd.DataFrame({SOURCE: PLAN_SOURCE, REASON: reasons[bad].astype(str).to_list(),
                            RAW: [json.dumps({PLAN_ID: i, class_column: v}, ensure_ascii=False)
                                  for i, v in zip(ids[bad], values[bad])]}, columns=[SOURCE, REASON, RAW])
    if bad.any():
        unknown = values[reasons == UNKNOWN_CLASS].value_counts()
        examples = ", ".join(f"{c!r} ({n})" for c, n in unknown.head(5).items())
        log.warning("%s: %d of %d plan polygon(s) rejected (%s)%s", path, int(bad.sum()), len(gdf),
                    ", ".join(f"{k}: {n}" for k, n in reasons[bad].value_counts().items()),
                    f"; unknown classes: {examples}" if examples else "")
    plan = gpd.GeoDataFrame({PLAN_ID: ids[~bad].to_list(), PLANNED_CLASS: mapped[~bad].to_list()},
                            geometry=gdf.geometry[~bad].to_list(), crs=gdf.crs)
    return plan, rejects


def planned_per_region(regions: gpd.GeoDataFrame, planned: gpd.GeoDataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Per region: the planned class with the largest planned area share (exact area-weighted overlay).

    ``regions``: ``region_id`` + polygons in a projected CRS; ``planned``: ``planned_class`` +
    polygons (reprojected to the regions' CRS). Returns ``region_id``, ``planned_class`` (null where
    no plan polygon touches the region; ties go to the earlier class of ``classes``),
    ``planned_share`` (that class's share of the region's planned area) and ``planned_coverage``
    (planned area / region area; above 1 only if plan polygons overlap), sorted by ``region_id``.
    """
    if regions.crs is None or not regions.crs.is_projected:
        raise MonitoringError(f"regions must be in a projected CRS for area shares, got {regions.crs}")
    classes = list(classes)
    table = class_area_proportions(regions, planned, class_column=PLANNED_CLASS, classes=classes,
                                   id_column=REGION_ID)
    shares = table[classes].to_numpy(dtype=np.float64)
    has_plan = table[COVERAGE].to_numpy() > 0
    planned_class = np.asarray(classes, dtype=object)[shares.argmax(axis=1)]
    planned_class[~has_plan] = None
    return pd.DataFrame({
        REGION_ID: table[REGION_ID].to_numpy(np.int64),
        PLANNED_CLASS: planned_class,
        PLANNED_SHARE: np.where(has_plan, shares.max(axis=1), np.nan),
        PLANNED_COVERAGE: table[COVERAGE].to_numpy(np.float64),
    })


def flag_deviations(predictions: pd.DataFrame, planned: pd.DataFrame, classes: Sequence[str],
                    threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """One row per predicted region: planned vs predicted class, their probabilities, margin, ``deviation``.

    ``predictions``: ``region_id`` and one probability column per class (the ``predictions``
    table); ``planned``: the output of :func:`planned_per_region`. ``deviation`` is true where
    the predicted class differs from the planned one and ``margin`` = p_predicted − p_planned ≥
    ``threshold``; regions without a plan have a null ``planned_class`` and are never flagged.
    Columns: :data:`FLAG_COLUMNS`, sorted by ``region_id``.
    """
    classes = list(classes)
    if not 0.0 <= threshold <= 1.0:
        raise MonitoringError(f"monitoring threshold must be in [0, 1], got {threshold}")
    for name in [REGION_ID, *classes]:
        if name not in predictions.columns:
            has = ", ".join(map(str, predictions.columns))
            raise MonitoringError(f"predictions have no column {name!r} (has: {has})")
    if REGION_ID not in planned.columns or PLANNED_CLASS not in planned.columns:
        raise MonitoringError(f"planned table needs columns {REGION_ID!r} and {PLANNED_CLASS!r} "
                              f"(has: {', '.join(map(str, planned.columns))})")
    unknown = sorted(set(planned[PLANNED_CLASS].dropna()) - set(classes))
    if unknown:
        raise MonitoringError(f"planned class(es) not among the predicted classes {classes}: {', '.join(unknown)}")
    plan_columns = [c for c in (PLANNED_CLASS, PLANNED_SHARE, PLANNED_COVERAGE) if c in planned.columns]
    frame = predictions[[REGION_ID, *classes]].merge(planned[[REGION_ID, *plan_columns]], on=REGION_ID, how="left")
    frame = frame.sort_values(REGION_ID, kind="stable").reset_index(drop=True)
    probs = frame[classes].to_numpy(dtype=np.float64)
    rows = np.arange(len(frame))
    predicted = probs.argmax(axis=1)
    has_plan = frame[PLANNED_CLASS].notna().to_numpy()
    plan_index = pd.Categorical(frame[PLANNED_CLASS], categories=classes).codes.astype(np.int64)
    p_predicted = probs[rows, predicted]
    p_planned = np.where(has_plan, probs[rows, np.maximum(plan_index, 0)], np.nan)
    margin = p_predicted - p_planned
    with np.errstate(invalid="ignore"):
        deviation = has_plan & (predicted != plan_index) & (margin >= threshold - _TOLERANCE)
    out = pd.DataFrame({
        REGION_ID: frame[REGION_ID].to_numpy(np.int64),
        PLANNED_CLASS: frame[PLANNED_CLASS].astype(object).where(has_plan, None),
        PREDICTED_CLASS: np.asarray(classes, dtype=object)[predicted],
        P_PLANNED: p_planned,
        P_PREDICTED: p_predicted,
        MARGIN: margin,
        DEVIATION: deviation,
        PLANNED_SHARE: frame[PLANNED_SHARE].to_numpy(np.float64) if PLANNED_SHARE in frame else np.nan,
        PLANNED_COVERAGE: frame[PLANNED_COVERAGE].to_numpy(np.float64) if PLANNED_COVERAGE in frame else np.nan,
    })
    return out[FLAG_COLUMNS]


def precision_recall(flags: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float | int]:
    """Precision and recall of ``flags.deviation`` against ``truth.deviation`` (both keyed by ``region_id``).

    A region missing from either side counts as not deviating there. Returns ``precision``,
    ``recall`` (NaN when undefined: nothing flagged / nothing to find), ``tp``, ``fp``, ``fn``.
    """
    both = flags[[REGION_ID, DEVIATION]].merge(truth[[REGION_ID, DEVIATION]], on=REGION_ID, how="outer",
                                              suffixes=("_flag", "_true"))
    flagged = both[f"{DEVIATION}_flag"].eq(True).to_numpy()  # a region missing on one side is NaN there
    actual = both[f"{DEVIATION}_true"].eq(True).to_numpy()
    tp, fp, fn = int((flagged & actual).sum()), int((flagged & ~actual).sum()), int((~flagged & actual).sum())
    return {"precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"), "tp": tp, "fp": fp, "fn": fn}


def deviation_map(regions_gdf: gpd.GeoDataFrame, flags: pd.DataFrame, path_png: Path | str, title: str) -> Path:
    """Save a PNG map: regions grey (consistent with the plan), red (deviation), white (no plan)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path_png = Path(path_png)
    geo = regions_gdf[[REGION_ID, regions_gdf.geometry.name]].merge(
        flags[[REGION_ID, PLANNED_CLASS, DEVIATION]], on=REGION_ID, how="left")
    status = np.where(geo[DEVIATION].fillna(False).astype(bool), "deviation",
                      np.where(geo[PLANNED_CLASS].notna(), "consistent", "no plan"))
    # A Figure with its own Agg canvas: no pyplot global state, safe in worker threads and tests.
    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    geo.plot(ax=ax, color=[COLOURS[s] for s in status], edgecolor="#707070", linewidth=0.2)
    counts = pd.Series(status).value_counts()
    ax.legend(handles=[Patch(facecolor=c, edgecolor="#707070", label=f"{name} ({int(counts.get(name, 0))})")
                       for name, c in COLOURS.items()], loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title)
    ax.set_axis_off()
    path_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=150, bbox_inches="tight")
    return path_png
