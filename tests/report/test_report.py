"""The HTML report on a small hand-written work dir (no Spark stages): content, self-containment, MLflow.

The browser check runs headless Chromium when a binary is installed (Debian package ``chromium``)
and skips with that reason otherwise. "No broken images" is checked twice: without a browser,
every ``<img>`` must be a ``data:image/png;base64`` URI that decodes to a PNG Pillow can load;
with one, a copy of the page with a test-only load hook reports how many images the browser
failed to decode, and the screenshot must be non-empty and not a single colour.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.config import Config, ConfigError, load_config
from landuse.constants import LANDUSE_CLASSES
from landuse.manifest import write_manifest
from landuse.spark.io import write_geoparquet, write_pandas

CLASSES = list(LANDUSE_CLASSES)
SIDE, CELL = 5, 250.0  # a 5 x 5 grid of 250 m cells
RUN_ID = "0123456789abcdef0123456789abcdef"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell")


class Page(HTMLParser):
    """Collects tags, their attributes and the visible text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data) -> None:
        self.text.append(data)

    def images(self) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def write_table(tables: Path, name: str, frame: pd.DataFrame, manifest: dict) -> None:
    write_pandas(frame, tables / name)
    write_manifest(tables / name, manifest)


def make_work_dir(work: Path, *, optional: bool = True) -> None:
    """regions + predictions; with ``optional`` also labels, stage manifests and ablation results."""
    import geopandas as gpd
    from PIL import Image
    from shapely.geometry import box

    from landuse.serving.predict import prediction_table

    rng = np.random.default_rng(7)
    tables = work / "tables"
    x0, y0 = 200_000.0, 2_490_000.0
    cells = [(i, j) for j in range(SIDE) for i in range(SIDE)]
    ids = np.arange(len(cells), dtype=np.int64) + 100
    regions = gpd.GeoDataFrame(
        {"region_id": ids, "source_id": [str(i) for i in ids]},
        geometry=[box(x0 + i * CELL, y0 + j * CELL, x0 + (i + 1) * CELL, y0 + (j + 1) * CELL) for i, j in cells],
        crs="EPSG:32650",
    )
    write_geoparquet(regions, tables / "regions")
    write_manifest(tables / "regions", {"stage": "regions", "regions": len(ids), "crs": "EPSG:32650",
                                        "total_area_km2": len(ids) * CELL * CELL / 1e6, "adjacency_edges": 144,
                                        "fingerprint": "regions-1"})
    for edges in ("edges_adjacency", "edges_distance_decay"):  # the regions stage's other outputs (runner upstream)
        write_manifest(_mkdir(tables / edges), {"stage": "regions", "fingerprint": "regions-1"})
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=len(ids))
    write_table(tables, "predictions", prediction_table(ids, probs, CLASSES),
                {"stage": "predict", "model_uri": "models:/landuse-hgcn@champion", "classes": CLASSES,
                 "variant": "Adj-Tri-GCN", "features": ["poi"], "rows": len(ids), "fingerprint": "predict-1"})
    if not optional:
        return
    y = rng.dirichlet(np.full(len(CLASSES), 0.3), size=len(ids))
    coverage = np.where(np.arange(len(ids)) < 3, 0.0, 1.0)  # three regions without land-use polygons
    y[coverage == 0] = 0.0
    labels = pd.DataFrame(y, columns=CLASSES)
    labels.insert(0, "region_id", ids)
    labels["coverage"] = coverage
    write_table(tables, "labels", labels, {
        "stage": "labels", "regions": len(ids), "regions_covered": int((coverage > 0).sum()), "mean_coverage": 0.88,
        "ingest": [{"source": "landuse", "table": "landuse_polygons", "rows_in": 60, "kept": 58, "rejected": 2,
                    "by_reason": {"unmapped_code": 2}}]})
    write_manifest(_mkdir(tables / "trips"), {"stage": "ingest", "ingest": [
        {"source": "bikes", "table": "trips", "rows_in": 1000, "kept": 990, "rejected": 10,
         "by_reason": {"bad_timestamp": 7, "<script>x</script>": 3}},
        {"source": "pois", "table": "pois", "rows_in": 300, "kept": 300, "rejected": 0, "by_reason": {}}]})
    write_manifest(_mkdir(tables / "flows"), {"stage": "flows", "flows": {"bikes": {
        "trips_in": 990, "trips_assigned": 891, "trips_unassigned": 99, "cells": 120, "days": 7,
        "trips_suppressed": 0, "cells_suppressed": 0}}})
    write_manifest(_mkdir(tables / "poi_counts"), {"stage": "pois", "pois_in": 300, "pois_assigned": 297,
                                                    "pois_outside_regions": 3, "regions_with_pois": 20})
    write_manifest(_mkdir(tables / "node_features"), {"stage": "assemble", "regions": len(ids), "labelled": 22,
                                                       "modalities": {"poi": {"dim": 72, "regions": 20}}})
    out = work / "results" / "ablation"
    out.mkdir(parents=True)
    rows = []
    for rank, variant in enumerate(["None", "GCN_adj", "Adj-Tri-GCN"][::-1], start=1):
        row = {"variant": variant, "features": "P", "rank": rank}
        for k, metric in enumerate(("kl", "l1_mean", "l1_sum", "cosine", "val_kl")):
            row[metric], row[f"{metric}_std"] = 0.5 + 0.01 * rank + k, 0.01
        rows.append({**row, "splits": 2, "epoch_median": 30, "selection": "validation"})
    pd.DataFrame(rows).to_csv(out / "ablation.csv", index=False)
    pd.DataFrame({"class": CLASSES, "true_share": 1 / 8, "pred_share": 1 / 8, "mae": 0.05,
                  "relative_error": [0.4] * 7 + [np.nan]}).to_csv(out / "per_class_errors.csv", index=False)
    (out / "run.json").write_text(json.dumps({"run_id": RUN_ID, "fingerprint": "feedfacefeedface", "model": {
        "model_uri": "models:/m-1", "version": "3", "champion": True, "val_kl": 0.41}}))
    Image.new("RGB", (60, 40), (200, 30, 30)).save(out / "curves_Adj-Tri-GCN_P.png")
    (out / "curves_Adj-Tri-GCN_PI.png").write_bytes(b"not a png")  # must never become a broken <img>


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_config(repo_root: Path, work: Path, *overrides: str) -> Config:
    return load_config(repo_root / "conf/synthetic_shenzhen.yaml", [f"work_dir={work}", *overrides],
                       check_inputs=False)


def check_images(page: Page) -> list[bytes]:
    """Every <img> has alt text and a data:image/png;base64 src that decodes to a loadable PNG."""
    from PIL import Image

    pngs = []
    for attrs in page.images():
        assert attrs.get("alt", "").strip(), attrs.keys()
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 100
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.width > 0 and image.height > 0
        pngs.append(data)
    return pngs


def check_self_contained(text: str, page: Page) -> None:
    """Nothing loads from elsewhere: no scripts, stylesheets links, or remote src/href."""
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    for _, attrs in page.tags:
        for key in ("src", "href"):
            if key not in attrs:
                continue
            value = attrs[key]
            assert not value.startswith(("http://", "https://", "//", "file:")), value[:80]
            if key == "href":
                assert value.startswith("#"), value


def run_report(config: Config, **kw):
    """The report stage through the runner (no MLflow unless the config asks for it)."""
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    return run_stage(STAGES["report"], config, STAGES, **kw)


@pytest.fixture()
def full_report(tmp_path: Path, repo_root: Path) -> tuple[Config, Path]:
    work = tmp_path / "work"
    make_work_dir(work)
    config = make_config(repo_root, work, "report.mlflow=false")
    result = run_report(config)
    assert result.status == "ran"
    return config, result.outputs["report"] / "report.html"


def test_report_content_and_self_contained(full_report) -> None:
    config, path = full_report
    assert path == config.work_dir / "report" / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(text, page)
    pngs = check_images(page)
    # true vs predicted, error, entropy, one curve (the unreadable curve file is left out, not embedded)
    assert len(pngs) == 4
    assert sorted(p.name for p in path.parent.glob("*.png")) == sorted(
        ["dominant_true_vs_predicted.png", "error_l1.png", "entropy.png", "ablation_curves_Adj-Tri-GCN_P.png"])
    visible = page.visible()
    assert "Land-use report: synthetic_shenzhen" in visible and "seed 42" in visible
    # ablation table as mean ± std, per-class errors, the run id
    assert "Adj-Tri-GCN" in visible and "0.5100 ± 0.0100" in visible
    assert "Per-class errors (Adj-Tri-GCN on P" in visible and "relative_error" in visible
    assert RUN_ID in visible and "landuse-hgcn v3" in visible
    # data summary: rows in / kept / rejected, join coverage, POIs, labels
    assert "rows in" in visible and "990" in visible and "1.0%" in visible
    assert "join coverage" in visible and "90.0%" in visible
    assert "297 / 300 (99.0%)" in visible and "22 / 25 (88.0%)" in visible
    # text from manifests is escaped, never markup
    assert "<script>x</script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    # what is missing is said, with the command that makes it
    assert "fusion results" in visible and "landuse run fusion" in visible
    assert "landuse run train" in visible and "image_features" in visible and "landuse run imagery" in visible
    assert "curves_Adj-Tri-GCN_PI.png: not a readable PNG" in visible
    manifest = json.loads((path.parent / "_manifest.json").read_text())
    assert manifest["stage"] == "report" and len(manifest["figures"]) == 4
    assert "mlflow_run_id" not in manifest  # report.mlflow=false
    # the runner's manifest: the file list, and the fingerprint over the stages the report read
    assert set(manifest["parts"]) == {"report.html", *manifest["figures"]}
    assert {"regions", "predictions", "labels"} <= set(manifest["upstream_fingerprints"])


def test_error_map_values(full_report) -> None:
    """The in-sample summary is computed from labels (coverage > 0) and predictions."""
    import pyarrow.parquet as pq

    config, path = full_report
    labels = pq.read_table(config.tables_dir / "labels").to_pandas().set_index("region_id")
    preds = pq.read_table(config.tables_dir / "predictions").to_pandas().set_index("region_id")
    covered = labels[labels["coverage"] > 0]
    error = (preds.loc[covered.index, CLASSES] - covered[CLASSES]).abs().sum(1)
    visible = Page(path.read_text()).visible()
    assert f"{error.mean():.4f}" in visible and f"{len(covered)}" in visible


def test_report_with_only_required_tables(tmp_path: Path, repo_root: Path) -> None:
    from landuse.report.html import build_report

    work = tmp_path / "work"
    make_work_dir(work, optional=False)
    built = build_report(make_config(repo_root, work), tmp_path / "out")  # into the given dir only
    path = built.path
    assert path == tmp_path / "out" / "report.html" and not (work / "report").exists()
    assert built.figures == ["dominant_predicted.png", "entropy.png"] and built.missing
    text = path.read_text()
    page = Page(text)
    check_self_contained(text, page)
    assert len(check_images(page)) == 2  # predicted dominant class and entropy
    visible = page.visible()
    for missing in ("labels (true land use)", "landuse run labels", "ablation results", "train results",
                    "fusion results", "landuse run ingest", "landuse run flows", "landuse run pois"):
        assert missing in visible, missing


def test_report_replaces_previous_figures(tmp_path: Path, repo_root: Path) -> None:
    """A rebuilt report never keeps a figure of an earlier one (the runner swaps the directory atomically)."""
    work = tmp_path / "work"
    make_work_dir(work)
    config = make_config(repo_root, work, "report.mlflow=false")
    assert run_report(config).status == "ran"
    shutil.rmtree(config.tables_dir / "labels")  # an optional upstream output went away: the report reruns
    result = run_report(config)
    assert result.status == "ran"
    path = result.outputs["report"] / "report.html"
    assert not (path.parent / "error_l1.png").exists()
    assert not list(path.parent.parent.glob(".staging-*")) and not list(path.parent.parent.glob(".old-*"))


@pytest.mark.parametrize("table, command", [("predictions", "landuse run predict"), ("regions", "landuse run regions")])
def test_required_table_missing_is_one_line_error(tmp_path: Path, repo_root: Path, table: str, command: str) -> None:
    from landuse.report.html import build_report

    work = tmp_path / "work"
    make_work_dir(work, optional=False)
    shutil.rmtree(work / "tables" / table)
    with pytest.raises(ConfigError) as info:
        build_report(make_config(repo_root, work), tmp_path / "out")
    message = str(info.value)
    assert f"table {table} not found" in message and command in message and "\n" not in message
    assert not (tmp_path / "out" / "report.html").exists()


def test_entrypoint_errors_without_predictions(tmp_path: Path, repo_root: Path, capsys, monkeypatch) -> None:
    from landuse.entrypoints.report import main

    monkeypatch.chdir(repo_root)  # the config's class map path is relative to the repository root
    work = tmp_path / "work"
    make_work_dir(work, optional=False)
    shutil.rmtree(work / "tables" / "predictions")
    assert main(["--config", "conf/synthetic_shenzhen.yaml", f"work_dir={work}", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors  # one line, no traceback (the rest of stderr is the log)
    assert errors[0].startswith("error: table predictions not found") and "landuse run predict" in errors[0]


def test_entrypoint_builds_and_logs_to_mlflow(tmp_path: Path, repo_root: Path, capsys, monkeypatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from landuse.entrypoints.report import main

    monkeypatch.chdir(repo_root)
    work = tmp_path / "work"
    make_work_dir(work)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # artifacts in tmp, not ./mlruns of the working directory
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("report-test", artifact_location=(tmp_path / "artifacts").as_uri())
    argv = ["--config", "conf/synthetic_shenzhen.yaml", f"work_dir={work}", f"mlflow.tracking_uri={uri}",
            "mlflow.experiment=report-test"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"report: {work / 'report' / 'report.html'}" in out
    run_id = out.split("logged to MLflow run ")[1].split()[0]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "report:synthetic_shenzhen" and run.data.tags["kind"] == "report"
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "figures"} <= top
    figures = {Path(a.path).name for a in client.list_artifacts(run_id, "figures")}
    assert "dominant_true_vs_predicted.png" in figures and "entropy.png" in figures
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report.html", dst_path=str(tmp_path / "dl"))
    assert Path(local).read_text() == (work / "report" / "report.html").read_text()


def test_unchanged_report_is_skipped_and_not_rewritten(tmp_path: Path, repo_root: Path, capsys, monkeypatch) -> None:
    """`landuse run report` on unchanged inputs: status unchanged, the committed page untouched; a new
    prediction (predict's fingerprint) or a new zero-shot table (the stage's extra) rebuilds it."""
    from landuse.entrypoints.report import main

    monkeypatch.chdir(repo_root)
    work = tmp_path / "work"
    make_work_dir(work)
    argv = ["--config", "conf/synthetic_shenzhen.yaml", f"work_dir={work}", "--no-mlflow"]
    page = work / "report" / "report.html"
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"report: {page}" in out and f"report: ran report -> {page.parent}" in out
    assert "logged to MLflow" not in out
    before = (page.stat().st_ino, page.stat().st_mtime_ns, page.read_bytes())
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"report: unchanged report -> {page.parent}" in out and "unchanged since the last run" in out
    assert (page.stat().st_ino, page.stat().st_mtime_ns, page.read_bytes()) == before

    predictions = work / "tables" / "predictions"
    write_manifest(predictions, {**json.loads((predictions / "_manifest.json").read_text()), "fingerprint": "predict-2"})
    assert main(argv) == 0
    assert f"report: ran report -> {page.parent}" in capsys.readouterr().out
    assert main(argv) == 0
    assert f"report: unchanged report -> {page.parent}" in capsys.readouterr().out
    write_manifest(_mkdir(work / "tables" / "zeroshot_text"), {"stage": "zeroshot", "method": "text"})
    assert main(argv) == 0
    assert f"report: ran report -> {page.parent}" in capsys.readouterr().out


# --- headless Chromium (Debian package `chromium`) ---

LOAD_HOOK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken", String(broken));
});
</script>"""


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not installed (Debian package `chromium`)")


def run_browser(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(full_report, tmp_path: Path) -> None:
    """The page loads, every image decodes in the browser, and the screenshot is not blank."""
    from PIL import Image

    exe = browser()
    _, path = full_report
    shot = tmp_path / "shot.png"
    done = run_browser(exe, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri())
    assert shot.is_file() and shot.stat().st_size > 0, done.stderr[-2000:]
    with Image.open(shot) as image:
        extrema = image.convert("RGB").getextrema()
    assert any(low != high for low, high in extrema), "screenshot is a single colour"
    # a copy with a test-only load hook: the browser counts images that failed to decode
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", LOAD_HOOK + "</body>"))
    dom = run_browser(exe, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = next(attrs for tag, attrs in Page(dom.stdout).tags if tag == "body")
    assert body.get("data-images") == str(len(Page(path.read_text()).images())), body
    assert body.get("data-broken") == "0", body
