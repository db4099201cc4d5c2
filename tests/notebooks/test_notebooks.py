"""The Databricks notebooks: source format, and each one executed in order on the tiny synthetic city.

Cells run in one namespace per notebook (as on Databricks) holding small shims for ``dbutils``
(widgets from a dict), ``display`` / ``displayHTML`` (recorders) and the test ``spark`` session.
``# MAGIC`` lines (Markdown cells) are skipped. 01..05 share one work dir, so each runs on what
the ones before it wrote, as a user would run them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
NOTEBOOKS = ["01_ingest_and_quality.py", "02_features.py", "03_training_and_ablation.py",
             "04_evaluation_and_maps.py", "05_prediction_and_monitoring.py"]
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def cells(path: Path) -> list[tuple[int, str]]:
    """(first line index, text) of each cell; the header line is not part of any cell."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0] == HEADER, f"{path.name}: first line must be {HEADER!r}"
    out, start, current = [], 1, []
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == SEPARATOR:
            out.append((start, "\n".join(current)))
            start, current = i + 1, []
        else:
            current.append(line)
    out.append((start, "\n".join(current)))
    return out


def code_of(text: str) -> str:
    """The cell without its ``# MAGIC`` lines (kept as blank lines so line numbers still match)."""
    return "\n".join("" if line.startswith("# MAGIC") else line for line in text.splitlines())


def is_code(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in code_of(text).splitlines())


class Widgets:
    """``dbutils.widgets``: values from a dict, else the widget's default; records what was created."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.created = values, {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.created[name] = ("text", default)

    def dropdown(self, name: str, default: str, choices: list[str], label: str | None = None) -> None:
        assert default in choices
        self.created[name] = ("dropdown", default)

    def get(self, name: str) -> str:
        if name not in self.created:
            raise ValueError(f"InputWidgetNotDefined: {name}")
        return self.values.get(name, self.created[name][1])


class DBUtils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = Widgets(values)


@dataclass
class Run:
    """What one executed notebook displayed."""

    namespace: dict[str, Any]
    widgets: Widgets
    frames: list[pd.DataFrame] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def frame_with(self, *columns: str) -> pd.DataFrame:
        found = [f for f in self.frames if set(columns) <= set(f.columns)]
        assert found, f"no displayed frame has columns {columns}; got {[list(f.columns) for f in self.frames]}"
        return found[0]


@pytest.fixture(scope="module")
def notebooks(spark, repo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Runs the notebooks in order on demand (``run(name)`` runs the ones before it first)."""
    import mlflow

    work = tmp_path_factory.mktemp("notebooks")
    values = {
        "config": str(repo_root / "conf/synthetic_shenzhen.yaml"),
        "overrides": f"work_dir={work} synth.scale=tiny spark.shuffle_partitions=2 training.splits=2 "
                     "training.epochs=10 training.progress=false training.variants=[None,GCN_adj,Adj-Tri-GCN]",
    }
    done: dict[str, Run] = {}
    logger = logging.getLogger("landuse")
    saved_logging = (list(logger.handlers), logger.propagate, logger.level)
    saved_mlflow = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())

    def execute(name: str) -> Run:
        ns: dict[str, Any] = {"__name__": "__main__"}
        run = Run(ns, DBUtils(values).widgets)

        def display(obj: Any) -> None:
            # Databricks' display renders pandas and Spark frames; a Spark one is executed here too
            run.frames.append(obj.toPandas() if hasattr(obj, "toPandas") else pd.DataFrame(obj))

        ns.update(dbutils=DBUtils(values), display=display, displayHTML=run.html.append, spark=spark)
        run.widgets = ns["dbutils"].widgets
        path = NOTEBOOK_DIR / name
        for start, text in cells(path):
            if is_code(text):
                exec(compile("\n" * start + code_of(text), str(path), "exec"), ns)  # noqa: S102
        return run

    def run(name: str) -> Run:
        for earlier in NOTEBOOKS[: NOTEBOOKS.index(name) + 1]:
            if earlier not in done:
                done[earlier] = execute(earlier)
        return done[name]

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo_root)
        yield run
    logger.handlers[:], logger.propagate = saved_logging[0], saved_logging[1]
    logger.setLevel(saved_logging[2])
    mlflow.set_tracking_uri(saved_mlflow[0])
    mlflow.set_registry_uri(saved_mlflow[1])


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py")), ids=lambda p: p.name)
def test_source_format(path: Path) -> None:
    parts = cells(path)
    assert len(parts) >= 2, f"{path.name}: no '{SEPARATOR}' cell separators"
    first = next(text for _, text in parts if is_code(text))
    assert "widgets" in first and '"config"' in first and '"overrides"' in first, \
        f"{path.name}: the first code cell must define the config / overrides widgets"
    compile(code_of(path.read_text(encoding="utf-8")), str(path), "exec")


def test_numbered_notebooks_exist() -> None:
    assert all((NOTEBOOK_DIR / name).is_file() for name in NOTEBOOKS)


@pytest.mark.slow
def test_01_ingest_and_quality(notebooks) -> None:
    run = notebooks("01_ingest_and_quality.py")
    assert set(run.widgets.created) == {"config", "overrides", "force"}
    stages = run.frame_with("stage", "status")
    assert set(stages["stage"]) == {"synth", "regions", "ingest", "flows", "pois", "labels"}
    assert set(stages["status"]) == {"ran"}
    ingest = run.frame_with("rows_in", "kept", "rejected")
    assert len(ingest) >= 3 and (ingest["rows_in"] > 0).all()
    assert (ingest["rows_in"] == ingest["kept"] + ingest["rejected"]).all()
    run.frame_with("source", "reason", "rows")  # reject reasons, grouped in Spark
    flows = run.frame_with("trips_in", "assigned", "unassigned")
    assert (flows["trips_in"] == flows["assigned"] + flows["unassigned"]).all() and (flows["assigned"] > 0).all()
    labels = run.frame_with("what", "value").set_index("what")["value"]
    assert 0 < labels["regions with a label (coverage > 0)"] <= labels["regions"]


@pytest.mark.slow
def test_02_features(notebooks) -> None:
    run = notebooks("02_features.py")
    status = run.frame_with("stage", "status").set_index("stage")["status"]
    assert set(status.drop("pretrain")) == {"ran"} and status["pretrain"] == "disabled"  # H_img: band statistics
    mods = run.frame_with("modality", "dim").set_index("modality")
    assert {"poi", "geo"} <= set(mods.index) and (mods["dim"] > 0).all()
    shapes = run.frame_with("tensor", "shape").set_index("tensor")["shape"]
    n = run.namespace["graph"].num_nodes
    assert shapes["y"] == f"({n}, 8)" and shapes["features[poi]"] == f"({n}, {mods.loc['poi', 'dim']})"


@pytest.mark.slow
def test_03_training_and_ablation(notebooks) -> None:
    run = notebooks("03_training_and_ablation.py")
    table = run.frame_with("variant", "KL")
    assert table["variant"].tolist() == ["None", "GCN_adj", "Adj-Tri-GCN"]
    assert any("| Adj-Tri-GCN |" in h for h in run.html)  # the Markdown table
    assert any("data:image/png;base64," in h for h in run.html)  # training curves
    model = run.namespace["model"]
    assert model["champion"] and model["version"] == "1"


@pytest.mark.slow
def test_04_evaluation_and_maps(notebooks) -> None:
    run = notebooks("04_evaluation_and_maps.py")
    assert run.frame_with("variant", "KL")["variant"].tolist() == ["None", "GCN_adj", "Adj-Tri-GCN"]
    assert "class" in run.frame_with("class").columns  # per-class errors
    config = run.namespace["config"]
    assert (config.tables_dir / "predictions").is_dir()  # predicted first: nothing had predicted before
    images = [h for h in run.html if "data:image/png;base64," in h]
    assert any("dominant_true_vs_predicted.png" in h for h in images) and len(images) >= 3
    assert (config.work_dir / "report" / "report.html").is_file()


@pytest.mark.slow
def test_05_prediction_and_monitoring(notebooks) -> None:
    run = notebooks("05_prediction_and_monitoring.py")
    config = run.namespace["config"]
    predictions = run.namespace["predictions"]
    assert len(predictions) == 400 and set(run.frame_with("dominant_class", "regions")["dominant_class"]) <= \
        set(config.labels.classes)
    assert (config.tables_dir / "monitoring" / "_manifest.json").is_file()
    flagged = run.frame_with("planned_class", "predicted_class", "margin")
    assert flagged["deviation"].all()
    scores = run.frame_with("precision", "recall", "tp", "fp", "fn").iloc[0]
    truth = pd.read_csv(config.synth.dir / "truth" / "planned_deviations.csv")
    assert scores["tp"] + scores["fn"] == int(truth["deviation"].sum())
    assert scores["tp"] + scores["fp"] == len(flagged)


def test_helpers_without_databricks(monkeypatch, capsys) -> None:
    """Plain Python: widget values from $LANDUSE_NB_<NAME> or defaults; frames and images printed."""
    from landuse.notebook import Notebook

    monkeypatch.setenv("LANDUSE_NB_OVERRIDES", "seed=7")
    nb = Notebook({})
    params = nb.widgets({"config": "conf/x.yaml", "overrides": "", "force": ("false", ["false", "true"])})
    assert params == {"config": "conf/x.yaml", "overrides": "seed=7", "force": "false"}
    nb.show(pd.DataFrame({"rows_in": [3], "kept": [2]}), "title")
    nb.image("/nowhere/map.png", "a map")
    out = capsys.readouterr().out
    assert "## title" in out and "rows_in" in out and "a map: /nowhere/map.png" in out


def test_read_results_keeps_the_none_variant(tmp_path: Path) -> None:
    from landuse.notebook import read_results

    (tmp_path / "a.csv").write_text("variant,kl,x\nNone,0.5,\nGCN_adj,0.4,1\n")
    frame = read_results(tmp_path / "a.csv")
    assert frame["variant"].tolist() == ["None", "GCN_adj"] and frame["kl"].dtype == float
    assert pd.isna(frame["x"].iloc[0])
