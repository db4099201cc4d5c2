"""Glue shared by the Databricks source-format notebooks in ``notebooks/``.

A notebook starts with ``nb = Notebook(globals())``: the helper finds what the host put in the
notebook's namespace and falls back when it is absent, so the same notebook runs on Databricks,
in Jupyter and as plain Python:

- ``dbutils`` (Databricks): :meth:`Notebook.widgets` creates text/dropdown widgets and reads
  them; elsewhere a widget's value is ``$LANDUSE_NB_<NAME>`` or its default;
- ``display`` / ``displayHTML`` (Databricks): :meth:`Notebook.show`, :meth:`Notebook.image` and
  :meth:`Notebook.markdown` use them; in Jupyter IPython's display; otherwise they print;
- ``spark`` (Databricks): :meth:`Notebook.spark` reuses it, otherwise builds the session through
  :func:`landuse.spark.session.build_session`.

The small summary functions below turn stage manifests into tables for display; they read only
manifests and driver-sized tables.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, MutableMapping, Sequence, Union

import pandas as pd

from landuse.config import Config
from landuse.manifest import read_manifest

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from landuse.runner import StageResult

ENV_PREFIX = "LANDUSE_NB_"
DEFAULT_CONFIG = "conf/synthetic_shenzhen.yaml"
LABELS = {
    "config": "config file(s), comma-separated",
    "overrides": "key=value overrides, space-separated",
    "force": "rerun unchanged stages / experiments",
    "model": "MLflow model URI (empty: the champion)",
}
WidgetSpec = Union[str, tuple[str, Sequence[str]]]  # text default, or (default, dropdown choices)


class Notebook:
    """Host-aware helpers for one notebook; ``namespace`` is the notebook's ``globals()``."""

    def __init__(self, namespace: MutableMapping[str, Any]) -> None:
        self.ns = namespace
        self.argv: list[str] = []  # ``--config ... key=value ...`` of the loaded config (for entry points)

    # ---- widgets and config ------------------------------------------------------------------

    def widgets(self, defaults: Mapping[str, WidgetSpec]) -> dict[str, str]:
        """Create the widgets (Databricks) and return their values, by name.

        A spec is a text default or ``(default, choices)`` for a dropdown. Without ``dbutils`` the
        value is ``$LANDUSE_NB_<NAME>`` when set, else the default.
        """
        dbutils = self.ns.get("dbutils")
        values: dict[str, str] = {}
        for name, spec in defaults.items():
            default, choices = (spec, None) if isinstance(spec, str) else (spec[0], list(spec[1]))
            label = LABELS.get(name, name)
            if dbutils is not None:
                if choices is None:
                    dbutils.widgets.text(name, default, label)
                else:
                    dbutils.widgets.dropdown(name, default, choices, label)
                values[name] = dbutils.widgets.get(name)
            else:
                values[name] = os.environ.get(ENV_PREFIX + name.upper(), default)
        return values

    def load(self, params: Mapping[str, str]) -> Config:
        """The config named by the ``config`` / ``overrides`` widgets; logging set up, resolved config written.

        Relative paths resolve against the repository root: when the notebook runs from
        ``notebooks/`` (Databricks Repos sets the notebook's folder as the working directory) the
        working directory moves to the repository root first.
        """
        from landuse.entrypoints.common import load_from_args
        from landuse.spark.session import disable_telemetry

        disable_telemetry()
        files = [f.strip() for f in params.get("config", DEFAULT_CONFIG).split(",") if f.strip()]
        overrides = shlex.split(params.get("overrides", ""))
        _to_repo_root(files)
        config = load_from_args(argparse.Namespace(config=files, overrides=overrides))
        self.argv = [arg for f in files for arg in ("--config", f)] + overrides
        print(f"config {', '.join(files)}: work dir {config.work_dir.resolve()}")
        return config

    def spark(self, config: Config) -> "SparkSession":
        """The host's ``spark`` session when there is one, else the session built for ``config``."""
        session = self.ns.get("spark")
        if session is not None:
            return session
        from landuse.spark.session import build_session

        return build_session(config)

    # ---- display -----------------------------------------------------------------------------

    def show(self, obj: Any, title: str | None = None, rows: int = 50) -> None:
        """Display a pandas or Spark DataFrame (Databricks ``display``; else IPython / a printed head)."""
        if title:
            self._title(title)
        display = self.ns.get("display")
        if display is not None:
            display(obj)
            return
        frame = obj.limit(rows).toPandas() if hasattr(obj, "toPandas") else obj
        if _ipython() is not None:
            from IPython.display import display as ipy_display

            ipy_display(frame.head(rows) if isinstance(frame, pd.DataFrame) else frame)
            return
        if isinstance(frame, pd.DataFrame):
            with pd.option_context("display.width", 160, "display.max_columns", 30):
                print(frame.head(rows).to_string(index=False))
        else:
            print(frame)

    def html(self, text: str) -> None:
        """Render HTML (Databricks ``displayHTML``; IPython HTML; else printed)."""
        display_html = self.ns.get("displayHTML")
        if display_html is not None:
            display_html(text)
        elif _ipython() is not None:
            from IPython.display import HTML, display

            display(HTML(text))
        else:
            print(text)

    def markdown(self, text: str) -> None:
        """Show Markdown text (preformatted on Databricks, rendered in Jupyter, printed otherwise)."""
        if self.ns.get("displayHTML") is not None:
            self.ns["displayHTML"](f"<pre>{html.escape(text)}</pre>")
        elif _ipython() is not None:
            from IPython.display import Markdown, display

            display(Markdown(text))
        else:
            print(text)

    def image(self, path: Path | str, caption: str = "") -> None:
        """Show a PNG file inline (``displayHTML`` / IPython); as plain Python, print its path."""
        path = Path(path)
        if self.ns.get("displayHTML") is None and _ipython() is None:
            print(f"{caption or path.name}: {path}")
            return
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.html(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption or path.name)}" '
                  f'style="max-width:100%">{cap}</figure>')

    def _title(self, title: str) -> None:
        if self.ns.get("displayHTML") is not None:
            self.ns["displayHTML"](f"<h3>{html.escape(title)}</h3>")
        else:
            print(f"\n## {title}")


def _ipython() -> Any:
    """The running IPython shell (Jupyter), or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _to_repo_root(files: Sequence[str]) -> None:
    """chdir to the parent when the relative config paths exist only there (run from ``notebooks/``)."""
    relative = [Path(f) for f in files if not Path(f).is_absolute()]
    if relative and not all(p.exists() for p in relative) and all((Path.cwd().parent / p).exists() for p in relative):
        os.chdir(Path.cwd().parent)
        print(f"working directory -> {Path.cwd()} (config paths are relative to the repository root)")


# ---- summaries for display -------------------------------------------------------------------


def stage_results(results: Sequence["StageResult"]) -> pd.DataFrame:
    """One row per stage output: stage, status (ran / unchanged / disabled), seconds, output path."""
    rows = [{"stage": r.name, "status": r.status, "seconds": round(r.seconds, 1), "output": path}
            for r in results for path in ([str(p) for p in r.outputs.values()] or ["-"])]
    return pd.DataFrame(rows, columns=["stage", "status", "seconds", "output"])


def ingest_summary(config: Config) -> pd.DataFrame:
    """Rows in / kept / rejected per source and table (ingest and labels manifests)."""
    rows = []
    for table in ("trips", "labels"):
        for entry in (read_manifest(config.tables_dir / table) or {}).get("ingest", []):
            rows_in, kept, rejected = (int(entry.get(k, 0) or 0) for k in ("rows_in", "kept", "rejected"))
            rows.append({"source": entry.get("source"), "table": entry.get("table"), "rows_in": rows_in,
                         "kept": kept, "rejected": rejected,
                         "rejected_pct": round(100.0 * rejected / rows_in, 2) if rows_in else 0.0})
    return pd.DataFrame(rows, columns=["source", "table", "rows_in", "kept", "rejected", "rejected_pct"])


def reject_reasons(spark: "SparkSession", config: Config, top: int = 20) -> "DataFrame":
    """Spark: the most frequent ``(source, reason)`` of the rows under ``tables/rejects/*``."""
    from functools import reduce

    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    root = config.tables_dir / "rejects"
    dirs = sorted(p for p in root.glob("*") if p.is_dir() and any(p.glob("*.parquet"))) if root.is_dir() else []
    frames = [spark.read.parquet(str(d)).select("source", "reason") for d in dirs]
    if not frames:
        schema = StructType([StructField("source", StringType()), StructField("reason", StringType()),
                             StructField("rows", LongType())])
        return spark.createDataFrame([], schema)
    rejects = reduce(lambda a, b: a.unionByName(b), frames)
    return (rejects.groupBy("source", "reason").agg(F.count(F.lit(1)).alias("rows"))
            .orderBy(F.desc("rows"), "source", "reason").limit(top))


def flow_coverage(config: Config) -> pd.DataFrame:
    """Per trip source: trips in, assigned to an origin and destination region, unassigned, coverage."""
    flows = (read_manifest(config.tables_dir / "flows") or {}).get("flows") or {}
    rows = []
    for source, s in flows.items():
        trips_in, assigned = int(s.get("trips_in", 0)), int(s.get("trips_assigned", 0))
        rows.append({"source": source, "trips_in": trips_in, "assigned": assigned,
                     "unassigned": int(s.get("trips_unassigned", trips_in - assigned)),
                     "coverage_pct": round(100.0 * assigned / trips_in, 2) if trips_in else 0.0,
                     "suppressed": s.get("trips_suppressed"), "od_cells": s.get("cells"), "days": s.get("days")})
    return pd.DataFrame(rows, columns=["source", "trips_in", "assigned", "unassigned", "coverage_pct",
                                       "suppressed", "od_cells", "days"])


def label_coverage(config: Config) -> pd.DataFrame:
    """Regions, labelled regions (coverage > 0), mean coverage and each class's mean share."""
    m = read_manifest(config.tables_dir / "labels") or {}
    rows = [("regions", m.get("regions")), ("regions with a label (coverage > 0)", m.get("regions_covered")),
            ("mean coverage", m.get("mean_coverage"))]
    rows += [(f"mean share: {c}", v) for c, v in (m.get("class_means") or {}).items()]
    return pd.DataFrame(rows, columns=["what", "value"], dtype=object)


def modalities(config: Config) -> pd.DataFrame:
    """The node_features manifest per modality: column, flag, dim, regions that have it."""
    m = read_manifest(config.tables_dir / "node_features") or {}
    n = m.get("regions")
    rows = [{"modality": name, "column": s.get("column"), "flag": s.get("flag"), "dim": s.get("dim"),
             "regions": s.get("regions"), "of": n} for name, s in (m.get("modalities") or {}).items()]
    return pd.DataFrame(rows, columns=["modality", "column", "flag", "dim", "regions", "of"])


def graph_shapes(graph: Any) -> pd.DataFrame:
    """Tensor shapes of a :class:`landuse.data.reader.GraphData` (features, labels, edge sets)."""
    rows: list[tuple[str, tuple[int, ...] | int]] = [(f"features[{k}]", tuple(v.shape)) for k, v in graph.features.items()]
    rows += [("y", tuple(graph.y.shape)), ("labelled nodes", int(graph.has_label.sum()))]
    rows += [(f"edges[{k}]", tuple(index.shape)) for k, (index, _) in graph.edges.items()]
    return pd.DataFrame([(k, str(v)) for k, v in rows], columns=["tensor", "shape"])


def read_results(path: Path | str) -> pd.DataFrame:
    """An experiment CSV (``results/<kind>/*.csv``); the variant named ``None`` stays a string.

    pandas' default NA strings include ``"None"``, the thesis name of the graph-free variant.
    """
    from landuse.training.experiments import read_results_csv

    return read_results_csv(Path(path))
