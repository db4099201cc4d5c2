"""The run report: one self-contained HTML page from a work dir's tables and results.

What it shows, from what exists under ``<work_dir>``:

- maps (matplotlib, PNG embedded as ``data:`` URIs): true vs predicted dominant land use side by
  side with one colour per class, per-region error (L1 sum |ŷ−y| over classes) and mixed-use
  entropy (normalised Shannon entropy of the predicted distribution);
- per ``tables/zeroshot_<method>`` present: its dominant-class map beside the supervised one (grey:
  not scored) and its agreement / mean L1 with the supervised predictions on the regions both
  scored, plus each one's dominant-class accuracy against the labels where they exist;
- the train / ablation / fusion tables (mean ± std over splits), their per-class errors, curves
  and MLflow run ids;
- data summaries from the stage manifests: rows in / kept / rejected per source, flow join
  coverage, POI assignment, imagery and label coverage, node-feature modalities.

``regions`` and ``predictions`` are required (a one-line error names the command that makes the
missing one); every other part is optional and, when absent, listed under "Not available" with the
command that produces it. The page has no scripts and nothing that loads from elsewhere.

The ``report`` stage (landuse.stages.report) writes it, with its figures beside it, into
``<driver_dir>/report/`` and logs it to MLflow when ``report.mlflow`` is true.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

import landuse
from landuse.config import Config, ConfigError
from landuse.manifest import now_iso, read_manifest
from landuse.training.experiments import read_results_csv

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_FILE = "report.html"
RESULT_KINDS = ("train", "ablation", "fusion")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_DATA = "#d9d9d9"  # regions without a label / prediction; no class colour is grey
# Conventional land-use map colours for the 8 thesis classes; other class sets use PALETTE.
CLASS_COLOURS = {
    "commercial": "#e41a1c",
    "residential": "#ffd92f",
    "industrial": "#984ea3",
    "public_service": "#377eb8",
    "utilities": "#a65628",
    "green_space": "#4daf4a",
    "transport": "#ff7f00",
    "non_construction": "#66c2a5",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:0 1.2em 3em;color:#222;line-height:1.45}
h1{margin:.8em 0 .1em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555;margin:.2em 0}nav a{margin-right:1em}
table.data{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}
table.data th,table.data td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.data th{background:#f2f2f2}table.data td:first-child,table.data th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:.9em}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:.4em .8em}
"""


@dataclass
class EmbeddedFigure:
    """One embedded figure: PNG bytes, file name beside the report, alt text and caption."""

    name: str
    png: bytes
    alt: str
    caption: str


@dataclass
class Page:
    """What the report accumulates while its sections are built."""

    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, html body)
    missing: list[str] = field(default_factory=list)
    figures: list[EmbeddedFigure] = field(default_factory=list)

    def add(self, anchor: str, title: str, parts: Sequence[str]) -> None:
        """Append a section whose body is the concatenation of ``parts``."""
        self.sections.append((anchor, title, "\n".join(p for p in parts if p)))

    def figure(self, name: str, png: bytes, alt: str, caption: str) -> str:
        """Register a figure and return its ``<figure>`` element (the PNG inlined as a data URI)."""
        self.figures.append(EmbeddedFigure(name, png, alt, caption))
        return img_tag(png, alt, caption)


# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def img_tag(png: bytes, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with the PNG inlined as a base64 ``data:`` URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def table_html(frame: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (no index)."""
    return frame.to_html(index=False, escape=True, border=0, classes="data", na_rep="–")


def para(text: str, cls: str = "note") -> str:
    """An escaped paragraph."""
    return f'<p class="{cls}">{esc(text)}</p>'


def pct(part: float, whole: float) -> str:
    """``part / whole`` as a percentage string, or ``–`` when ``whole`` is 0."""
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def redact_uri(uri: str) -> str:
    """A URI without user:password (tracking URIs may carry credentials)."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def class_colours(classes: Sequence[str]) -> dict[str, str]:
    """One fixed colour per class: conventional ones for the thesis classes, a palette otherwise."""
    known = [c for c in classes if c in CLASS_COLOURS]
    spare = iter(c for c in PALETTE if c not in {CLASS_COLOURS[k] for k in known})
    # more classes than colours: reuse the palette rather than fail (a map with 19+ classes is unreadable anyway)
    return {c: CLASS_COLOURS[c] if c in CLASS_COLOURS else next(spare, PALETTE[i % len(PALETTE)])
            for i, c in enumerate(classes)}


def fig_png(fig: "Figure") -> bytes:
    """Render and close a matplotlib figure; PNG bytes without the default software metadata."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_size(regions: "gpd.GeoDataFrame", width: float) -> float:
    """Height of a map panel of ``width`` inches that keeps the regions' aspect ratio."""
    minx, miny, maxx, maxy = regions.total_bounds
    ratio = (maxy - miny) / (maxx - minx) if maxx > minx else 1.0
    return float(np.clip(width * ratio, 2.5, 12.0))


def dominant_map(regions: "gpd.GeoDataFrame", panels: list[tuple[str, pd.Series]], classes: Sequence[str],
                 no_data: str) -> bytes:
    """Side-by-side maps of a dominant class per region (same colours per class, one legend).

    ``regions`` is indexed by region id; each panel is (title, class name per region id).
    """
    from matplotlib.patches import Patch

    plt = _pyplot()
    colours = class_colours(classes)
    width = 6.0
    height = _panel_size(regions, width)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height + 1.0), squeeze=False)
    for ax, (title, dominant) in zip(axes[0], panels):
        colour = dominant.reindex(regions.index).map(colours).fillna(NO_DATA)
        regions.plot(ax=ax, color=colour.tolist(), edgecolor="none", linewidth=0)
        ax.set_title(title)
        ax.set_axis_off()
        ax.set_aspect("equal")
    handles = [Patch(facecolor=colours[c], label=c) for c in classes] + [Patch(facecolor=NO_DATA, label=no_data)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig_png(fig)


def value_map(regions: "gpd.GeoDataFrame", values: pd.Series, title: str, label: str, cmap: str,
              vmin: float, vmax: float) -> bytes:
    """One map of a numeric value per region (sequential colormap + colorbar; missing in grey)."""
    plt = _pyplot()
    width = 7.0
    fig, ax = plt.subplots(figsize=(width + 1.2, _panel_size(regions, width)))
    frame = regions.assign(value=values.reindex(regions.index).to_numpy(dtype=float))
    frame.plot(ax=ax, color=NO_DATA, edgecolor="none", linewidth=0)
    known = frame[np.isfinite(frame["value"])]
    if len(known):
        known.plot(ax=ax, column="value", cmap=cmap, vmin=vmin, vmax=vmax, edgecolor="none", linewidth=0,
                   legend=True, legend_kwds={"label": label, "shrink": 0.7})
    ax.set_title(title)
    ax.set_axis_off()
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig_png(fig)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_required(config: Config) -> tuple["gpd.GeoDataFrame", pd.DataFrame, dict]:
    """Regions (indexed by region id, geometry only), predictions and the predictions manifest."""
    from landuse.spark.io import read_geoparquet, read_pandas
    from landuse.spark.schemas import REGION_ID, T_REGIONS
    from landuse.serving.predict import T_PREDICTIONS

    regions = read_geoparquet(config, T_REGIONS, "regions")[[REGION_ID, "geometry"]].set_index(REGION_ID)
    predictions = read_pandas(config, T_PREDICTIONS, "predict")
    manifest = read_manifest(config.tables_dir / T_PREDICTIONS) or {}
    return regions, predictions, manifest


def load_labels(config: Config, classes: Sequence[str]) -> pd.DataFrame | None:
    """Labels of regions with coverage > 0 (indexed by region id, the prediction classes), or None."""
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import REGION_ID, T_LABELS

    if not (config.tables_dir / T_LABELS).is_dir():
        return None
    labels = read_pandas(config, T_LABELS, "labels").set_index(REGION_ID)
    absent = [c for c in classes if c not in labels.columns]
    if absent:
        raise ConfigError(f"table labels at {config.tables_dir / T_LABELS} has no column(s) {', '.join(absent)} "
                          "of the predicted classes: rerun `landuse run labels` and `landuse run predict`")
    covered = labels["coverage"] > 0 if "coverage" in labels.columns else labels[list(classes)].sum(1) > 0
    return labels.loc[covered, list(classes)].astype(float)


def prediction_classes(config: Config, predictions: pd.DataFrame, manifest: dict) -> list[str]:
    """The predicted classes, in the model's order."""
    classes = list(manifest.get("classes") or [c for c in config.labels.classes if c in predictions.columns])
    absent = [c for c in classes if c not in predictions.columns]
    if not classes or absent:
        raise ConfigError(f"table predictions at {config.tables_dir / 'predictions'} lacks class columns "
                          f"({', '.join(absent) or 'none found'}): rerun `landuse run predict`")
    return classes


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def maps_section(page: Page, config: Config, regions: "gpd.GeoDataFrame", predictions: pd.DataFrame,
                 manifest: dict) -> None:
    """True vs predicted dominant land use, per-region error, mixed-use entropy, prediction summary."""
    from landuse.spark.schemas import REGION_ID
    from landuse.serving.predict import DOMINANT, ENTROPY_NORM

    classes = prediction_classes(config, predictions, manifest)
    pred = predictions.set_index(REGION_ID)
    probs = pred[classes].astype(float)
    pred_dominant = pred[DOMINANT] if DOMINANT in pred.columns else probs.idxmax(axis=1)
    labels = load_labels(config, classes)
    parts = [para(f"{len(pred)} regions predicted with {manifest.get('model_uri', 'an unrecorded model')}"
                  f" (variant {manifest.get('variant', '?')}, features {', '.join(manifest.get('features', [])) or '?'}); "
                  f"{len(regions)} regions in the study area. Geometry in {config.study.crs or 'the study CRS'}.")]
    if labels is None:
        page.missing.append("labels (true land use): the true-vs-predicted map and the error map need "
                            "`landuse run labels`")
        png = dominant_map(regions, [("predicted dominant land use", pred_dominant)], classes, "no prediction")
        parts.append(page.figure("dominant_predicted.png", png, "Map of the predicted dominant land-use class per region",
                                 "Predicted dominant class per region (grey: no prediction)."))
    else:
        true_dominant = labels.idxmax(axis=1)
        png = dominant_map(regions, [("true dominant land use", true_dominant),
                                     ("predicted dominant land use", pred_dominant)], classes, "no label / no prediction")
        parts.append(page.figure(
            "dominant_true_vs_predicted.png", png,
            "Two maps side by side: true dominant land-use class per region (left) and predicted (right)",
            "Dominant class per region: true (labels, regions with coverage > 0; grey: no label) "
            "vs predicted (grey: no prediction). Same colour per class in both."))
        common = labels.index.intersection(probs.index)
        error = (probs.loc[common] - labels.loc[common]).abs().sum(axis=1)
        png = value_map(regions, error, "per-region error: L1 sum |ŷ − y| over classes", "L1 (sum over classes)",
                        "magma_r", 0.0, max(float(error.max()) if len(error) else 1.0, 1e-9))
        parts.append(page.figure(
            "error_l1.png", png, "Map of the per-region prediction error (L1 sum over classes)",
            "Per-region L1 error Σ_c |ŷ_c − y_c| (0 = exact, 2 = disjoint) on labelled regions; grey: no label. "
            "All labelled regions are shown, training regions included, so this is in-sample error: "
            "use the result tables for held-out metrics."))
        agree = (true_dominant.loc[common] == pred_dominant.loc[common]).mean() if len(common) else float("nan")
        summary = pd.DataFrame({
            "labelled regions compared": [len(common)],
            "dominant class agrees": [f"{100 * agree:.1f}%" if len(common) else "–"],
            "mean L1 (sum)": [f"{error.mean():.4f}" if len(common) else "–"],
            "median L1 (sum)": [f"{error.median():.4f}" if len(common) else "–"],
        })
        parts += ["<h3>Predicted vs true (all labelled regions, in-sample)</h3>", table_html(summary)]
        counts = pd.DataFrame({
            "class": classes,
            "true dominant (regions)": [int((true_dominant.loc[common] == c).sum()) for c in classes],
            "predicted dominant (regions)": [int((pred_dominant.loc[common] == c).sum()) for c in classes],
            "true mean share": [f"{labels.loc[common, c].mean():.4f}" if len(common) else "–" for c in classes],
            "predicted mean share": [f"{probs.loc[common, c].mean():.4f}" if len(common) else "–" for c in classes],
        })
        parts.append(table_html(counts))
    if ENTROPY_NORM in pred.columns:
        png = value_map(regions, pred[ENTROPY_NORM], "mixed-use entropy of the prediction", "entropy / ln C",
                        "viridis", 0.0, 1.0)
        parts.append(page.figure(
            "entropy.png", png, "Map of mixed-use entropy (normalised entropy of the predicted distribution)",
            f"Mixed-use index: Shannon entropy of the predicted distribution / ln {len(classes)} "
            "(0 = one class, 1 = all classes equal); grey: no prediction."))
    else:
        page.missing.append("mixed-use entropy (no entropy_norm column in predictions): rerun `landuse run predict`")
    page.add("maps", "Maps", parts)


def _dominant(frame: pd.DataFrame, classes: Sequence[str]) -> pd.Series:
    """The dominant class per region: the table's ``dominant_class`` column, else the arg-max class."""
    from landuse.serving.predict import DOMINANT

    return frame[DOMINANT] if DOMINANT in frame.columns else frame[list(classes)].astype(float).idxmax(axis=1)


def zeroshot_section(page: Page, config: Config, regions: "gpd.GeoDataFrame", predictions: pd.DataFrame,
                     manifest: dict) -> None:
    """Per ``tables/zeroshot_<method>`` present: its dominant-class map beside the supervised one, and
    how it compares with the supervised predictions (and with the labels, where they exist).

    Nothing is added when no zero-shot table exists (the report is then as without this section).
    """
    from landuse.spark.io import read_pandas
    from landuse.spark.schemas import REGION_ID
    from landuse.zeroshot.run import METHODS, SCORED, table_name

    present = [m for m in METHODS if (config.tables_dir / table_name(m)).is_dir()]
    if not present:
        return
    classes = prediction_classes(config, predictions, manifest)
    pred = predictions.set_index(REGION_ID)
    sup_probs = pred[classes].astype(float)
    sup_dominant = _dominant(pred, classes)
    labels = load_labels(config, classes)
    if labels is not None:
        labels = labels[labels.sum(axis=1) > 0]
    true_dominant = labels.idxmax(axis=1) if labels is not None else None
    parts = [para("Zero-shot methods (`landuse run zeroshot`) score regions from prompts or imagery without "
                  "using any label; the supervised model is trained on labels. Comparisons are on the regions "
                  "both scored. Supervised accuracy includes its training regions (in-sample).")]
    for method in present:
        name = table_name(method)
        try:
            table = read_pandas(config, name, f"zeroshot --method {method}")
        except (OSError, ValueError) as exc:
            page.missing.append(f"zero-shot {method} ({config.tables_dir / name}) unreadable "
                                f"({type(exc).__name__}): rerun `landuse run zeroshot --method {method}`")
            continue
        absent = [c for c in classes if c not in table.columns]
        if absent or REGION_ID not in table.columns:
            page.missing.append(f"zero-shot {method}: table {name} lacks column(s) "
                                f"{', '.join(absent) or REGION_ID} of the predicted classes: "
                                f"rerun `landuse run zeroshot --method {method}`")
            continue
        zs = table.set_index(REGION_ID)
        scored = (zs[SCORED].astype(bool) if SCORED in zs.columns
                  else zs[classes].astype(float).sum(axis=1) > 0)
        zs = zs[scored]
        zs_probs = zs[classes].astype(float)
        zs_dominant = _dominant(zs, classes)
        zs_title = f"zero-shot ({method}, no labels used)"
        parts.append(f'<h3 id="zeroshot-{esc(method)}">{esc(zs_title)}</h3>')
        png = dominant_map(regions, [("supervised: predicted dominant land use", sup_dominant),
                                     (f"{zs_title}: dominant land use", zs_dominant)],
                           classes, "not scored / no prediction")
        parts.append(page.figure(
            f"dominant_zeroshot_{method}.png", png,
            f"Two maps side by side: supervised predicted dominant land-use class per region (left) "
            f"and zero-shot {method} (right)",
            f"Dominant class per region: supervised (grey: no prediction) vs zero-shot {method}, no labels used "
            "(grey: not scored). Same colour per class in both."))
        both = sup_probs.index.intersection(zs_probs.index)
        agree = float((sup_dominant.loc[both] == zs_dominant.loc[both]).mean()) if len(both) else float("nan")
        l1 = (sup_probs.loc[both] - zs_probs.loc[both]).abs().sum(axis=1)
        parts.append(table_html(pd.DataFrame({
            "regions scored (zero-shot)": [f"{len(zs)} / {len(regions)}"],
            "regions both scored": [len(both)],
            "dominant class agrees": [f"{100 * agree:.1f}%" if len(both) else "–"],
            "mean L1 (sum over classes) between distributions": [f"{l1.mean():.4f}" if len(both) else "–"],
        })))
        if true_dominant is not None:
            common = both.intersection(true_dominant.index)
            truth = true_dominant.loc[common]
            rows = [(zs_title, zs_dominant.loc[common]), ("supervised", sup_dominant.loc[common])]
            parts.append(table_html(pd.DataFrame({
                "predictions": [who for who, _ in rows],
                "labelled regions (both scored)": [len(common)] * len(rows),
                "dominant-class accuracy vs labels": [f"{100 * float((d == truth).mean()):.1f}%" if len(common)
                                                      else "–" for _, d in rows],
            })))
        else:
            parts.append(para("No labels (`landuse run labels`): no accuracy against true land use."))
    page.add("zeroshot", "Zero-shot vs supervised", parts)


def _metric_cell(row: pd.Series, metric: str) -> str:
    mean, std = row.get(metric), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if std is not None and not pd.isna(std) else f"{mean:.4f}"


def results_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """An experiment CSV as displayed: metrics as mean ± std over splits (as in the Markdown)."""
    from landuse.training.protocol import METRICS

    names = {"kl": "KL", "l1_mean": "L1 (mean)", "l1_sum": "L1 (sum)", "cosine": "cosine", "val_kl": "val KL"}
    if by not in frame.columns or "kl" not in frame.columns:
        return frame
    out = pd.DataFrame({by: frame[by].astype(str)})
    if by != "features" and "features" in frame.columns:
        out["features"] = frame["features"].astype(str)
    for metric in (*METRICS, "val_kl"):
        if metric in frame.columns:
            out[names.get(metric, metric)] = [_metric_cell(row, metric) for _, row in frame.iterrows()]
    for column in ("rank", "splits", "epoch_median"):
        if column in frame.columns:  # whole numbers; skipped / failed rows have none
            out[column.replace("_", " ")] = [("–" if pd.isna(v) else str(int(v))) for v in frame[column]]
    for column in ("status", "reason"):
        if column in frame.columns and (frame["status"].astype(str) != "ok").any():
            out[column] = frame[column].fillna("").astype(str)
    return out


def per_class_display(frame: pd.DataFrame) -> pd.DataFrame:
    """per_class_errors.csv with rounded numbers."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: "–" if pd.isna(v) else f"{v:.4f}")
    return out


def read_png(path: Path) -> bytes | None:
    """A PNG file's bytes, or None when it is not a readable PNG (never embed a broken image)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE) else None


def results_section(page: Page, config: Config, runs: list[dict]) -> None:
    """train / ablation / fusion tables, per-class errors, curves of ``training.variant``, run ids."""
    from landuse.training.experiments import results_dir

    parts: list[str] = []
    commands = {"train": "landuse run train", "ablation": "landuse run ablation", "fusion": "landuse run fusion"}
    titles = {"train": "Training", "ablation": "Ablation (HGCN variants)", "fusion": "Multimodal fusion"}
    for kind in RESULT_KINDS:
        out = results_dir(config, kind)
        csv = out / f"{kind}.csv"
        if not csv.is_file():
            page.missing.append(f"{kind} results ({csv}): `{commands[kind]}`")
            continue
        try:
            frame = read_results_csv(csv)
        except (OSError, ValueError) as exc:
            page.missing.append(f"{kind} results: {csv} unreadable ({type(exc).__name__}); rerun `{commands[kind]}`")
            continue
        record = _run_record(out / "run.json")
        if record:
            runs.append({"kind": kind, **record})
        by = "features" if kind == "fusion" else "variant"
        parts.append(f"<h3>{esc(titles[kind])}</h3>")
        if "selection" in frame.columns and (frame["selection"] == "test").any():
            from landuse.training.experiments import OPTIMISTIC

            parts.append(para(OPTIMISTIC, "warn"))
        parts.append(table_html(results_table(frame, by)))
        splits = int(frame["splits"].iloc[0]) if "splits" in frame.columns and len(frame) else None
        parts.append(para(
            (f"Test metrics, mean ± std over {splits} splits. " if splits else "Test metrics. ")
            + "KL = KL(y‖ŷ) batchmean; L1 (mean) = mean |ŷ−y| over regions × classes (the paper's); "
            "L1 (sum) = per-region sum over classes (HGI/RegionDCL's); cosine = mean row-wise cosine similarity; "
            "rank by mean test KL."
            + (f" MLflow run {record['run_id']}." if record.get("run_id") else "")))
        per_class = out / "per_class_errors.csv"
        if per_class.is_file():
            variant = config.training.variant
            main = frame[frame["variant"] == variant] if "variant" in frame.columns else frame.iloc[:0]
            which = f"{variant} on {main['features'].iloc[0]}" if len(main) and "features" in main.columns else variant
            parts.append(f"<h4>Per-class errors ({esc(which)}, test regions, mean over splits)</h4>")
            parts.append(table_html(per_class_display(read_results_csv(per_class))))
        else:
            page.missing.append(f"{kind} per-class errors ({per_class}): `{commands[kind]}`")
        for png_path in sorted(out.glob(f"curves_{config.training.variant}_*.png"))[:4]:
            png = read_png(png_path)
            if png is None:
                page.missing.append(f"{kind} curve {png_path.name}: not a readable PNG")
                continue
            parts.append(page.figure(f"{kind}_{png_path.name}", png,
                                     f"Training curves (KL per epoch) of {png_path.stem.removeprefix('curves_')} ({kind})",
                                     f"{kind}: train / validation / test KL per epoch, mean ± std over splits."))
    if not parts:
        parts.append(para("No experiment results yet: run `landuse run ablation` (and `landuse run fusion`)."))
    page.add("results", "Results", parts)


def _run_record(path: Path) -> dict:
    """run.json of an experiment: run id, fingerprint and model info (flat older form accepted)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    model = record.get("model") if isinstance(record.get("model"), dict) else {
        k: record[k] for k in ("model_uri", "version", "champion", "val_kl") if k in record}
    return {"run_id": record.get("run_id"), "fingerprint": record.get("fingerprint"), "model": model}


REJECT_SAMPLE_ROWS = 5  # rejected rows shown per source when privacy.share_raw is true


def reject_samples(config: Config, sources: Sequence[str]) -> list[str]:
    """With ``privacy.share_raw``: the first rejected rows of each source (reason and raw row), read
    from ``tables/rejects/<source>/``; without it, one sentence saying they are withheld."""
    if not sources:
        return []
    if not config.privacy.share_raw:
        return [para("Raw rejected rows are not shown (privacy.share_raw: false); read them in "
                     "tables/rejects/<source>/ or set privacy.share_raw: true.")]
    from landuse.spark.io import table_path
    from landuse.spark.schemas import RAW, T_REJECTS
    import pyarrow.parquet as pq

    from landuse.storage import arrow_filesystem, parquet_files

    rows = []
    for source in sources:
        files = parquet_files(table_path(config, f"{T_REJECTS}/{source}")) if source else []
        if not files:
            continue
        filesystem, name = arrow_filesystem(files[0])
        # one small batch of the first part: a bounded read, never the whole rejects table
        batch = next(pq.ParquetFile(name, filesystem=filesystem).iter_batches(batch_size=REJECT_SAMPLE_ROWS), None)
        if batch is None:
            continue
        head = batch.to_pandas()
        rows += [{"source": source, "reason": r.get("reason", "?"), "raw row": str(r.get(RAW, ""))[:300]}
                 for r in head.to_dict("records")]
    if not rows:
        return []
    return ["<h3>Sample rejected rows (privacy.share_raw: true)</h3>", table_html(pd.DataFrame(rows))]


def data_section(page: Page, config: Config, regions: "gpd.GeoDataFrame") -> None:
    """Rows in / kept / rejected per source, join coverage, modality coverage, from the manifests."""
    tables = config.tables_dir
    manifests = {name: read_manifest(tables / name) for name in
                 ("regions", "trips", "labels", "flows", "poi_counts", "image_features", "node_features")}
    produced_by = {"trips": "ingest", "labels": "labels", "flows": "flows", "poi_counts": "pois",
                   "image_features": "imagery", "node_features": "assemble"}
    for name, stage in produced_by.items():
        if manifests[name] is None:
            page.missing.append(f"{name} summary ({tables / name}/_manifest.json): `landuse run {stage}`")
    parts: list[str] = []

    ingest = [dict(e) for name in ("trips", "labels") for e in (manifests[name] or {}).get("ingest", [])]
    if ingest:
        rows = []
        for entry in ingest:
            rows_in, kept, rejected = (int(entry.get(k, 0) or 0) for k in ("rows_in", "kept", "rejected"))
            reasons = entry.get("by_reason") or {}
            rows.append({"source": entry.get("source", "?"), "table": entry.get("table", "?"), "rows in": rows_in,
                         "kept": kept, "rejected": rejected, "rejected %": pct(rejected, rows_in),
                         "reasons": "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
                         or "–"})
        parts += ["<h3>Ingest: rows in / kept / rejected per source</h3>", table_html(pd.DataFrame(rows)),
                  para("Rows as read (an aggregated OD row may carry several trips); rejected rows are under "
                       "tables/rejects/<source>/ with their reason.")]
        parts += reject_samples(config, [str(e.get("source", "")) for e in ingest if int(e.get("rejected", 0) or 0)])

    flows = (manifests["flows"] or {}).get("flows") or {}
    if flows:
        rows = []
        for source, s in flows.items():
            t_in, assigned = int(s.get("trips_in", 0)), int(s.get("trips_assigned", 0))
            rows.append({"source": source, "trips in": t_in, "assigned": assigned,
                         "unassigned": int(s.get("trips_unassigned", t_in - assigned)),
                         "join coverage": pct(assigned, t_in), "suppressed trips": s.get("trips_suppressed", "–"),
                         "OD cells": s.get("cells", "–"), "days": s.get("days", "–")})
        parts += ["<h3>Flows: trips joined to regions</h3>", table_html(pd.DataFrame(rows)),
                  para("Join coverage = trips whose origin and destination both fall in a region / trips in "
                       "(after the configured hour and day filters).")]

    facts: list[tuple[str, str]] = []
    reg = manifests["regions"] or {}
    facts.append(("regions", f"{len(regions)}" + (f" ({reg['total_area_km2']} km², {reg.get('crs', '?')})"
                                                     if "total_area_km2" in reg else "")))
    if "adjacency_edges" in reg:
        facts.append(("adjacency edges (both directions)", str(reg["adjacency_edges"])))
    pois = manifests["poi_counts"]
    if pois and "pois_in" in pois:
        facts.append(("POIs assigned to regions", f"{pois.get('pois_assigned', 0)} / {pois['pois_in']} "
                                                    f"({pct(pois.get('pois_assigned', 0), pois['pois_in'])})"))
        if "regions_with_pois" in pois:
            facts.append(("regions with POIs", f"{pois['regions_with_pois']} ({pct(pois['regions_with_pois'], len(regions))})"))
    image = manifests["image_features"]
    if image and "regions_with_image" in image:
        total = image.get("regions", len(regions))
        facts.append(("regions with imagery", f"{image['regions_with_image']} / {total} "
                                               f"({pct(image['regions_with_image'], total)})"))
        if "mean_coverage" in image:
            facts.append(("mean imagery pixel coverage", f"{100 * float(image['mean_coverage']):.1f}%"))
    elif config.inputs.imagery is None:
        facts.append(("imagery", "none configured (inputs.imagery)"))
    labels = manifests["labels"]
    if labels and "regions_covered" in labels:
        total = labels.get("regions", len(regions))
        facts.append(("labelled regions (coverage > 0)", f"{labels['regions_covered']} / {total} "
                                                          f"({pct(labels['regions_covered'], total)})"))
        if "mean_coverage" in labels:
            facts.append(("mean label coverage", f"{100 * float(labels['mean_coverage']):.1f}%"))
    nodes = manifests["node_features"]
    if nodes:
        n = nodes.get("regions", len(regions))
        if "labelled" in nodes:
            facts.append(("training nodes with a label", f"{nodes['labelled']} / {n}"))
        for name, m in (nodes.get("modalities") or {}).items():
            facts.append((f"modality {name}", f"dim {m.get('dim', '?')}, {m.get('regions', '?')} / {n} regions "
                                              f"({pct(m.get('regions', 0), n)})"))
    parts += ["<h3>Coverage</h3>", table_html(pd.DataFrame(facts, columns=["what", "value"]))]
    page.add("data", "Data summary", parts)


def run_section(page: Page, config: Config, runs: list[dict], manifest: dict) -> None:
    """Config name, seed, tracking store and the MLflow runs behind the results."""
    facts = [("config", config.name), ("seed", str(config.seed)), ("work dir", str(config.work_dir)),
             ("MLflow tracking URI", redact_uri(config.mlflow_uri)), ("MLflow experiment", config.mlflow.experiment),
             ("training", f"{config.training.variant} on {'+'.join(config.training.features)}, "
                          f"{config.training.splits} splits ({config.training.split}), "
                          f"epoch selection on {config.training.selection}"),
             ("predictions from", str(manifest.get("model_uri", "?"))),
             ("landuse version", landuse.__version__)]
    parts = [table_html(pd.DataFrame(facts, columns=["what", "value"]))]
    if runs:
        rows = [{"experiment": r["kind"], "MLflow run id": r.get("run_id") or "–",
                 "fingerprint": r.get("fingerprint") or "–",
                 "registered model": (f"{config.training.registered_model} v{r['model']['version']}"
                                      if r.get("model", {}).get("version") else "–"),
                 "champion": {True: "yes", False: "no"}.get(r.get("model", {}).get("champion"), "–"),
                 "model val KL": (f"{float(r['model']['val_kl']):.5f}" if r.get("model", {}).get("val_kl") is not None
                                  else "–")}
                for r in runs]
        parts += ["<h3>MLflow runs</h3>", table_html(pd.DataFrame(rows))]
    page.add("run", "Run", parts)


# --------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------


def render(page: Page, config: Config, generated: str) -> str:
    """The whole HTML document."""
    title = f"Land-use report: {config.name}"
    nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in page.sections)
    if page.missing:
        nav += ' <a href="#missing">Not available</a>'
    body = [f'<section id="{a}"><h2>{esc(t)}</h2>\n{b}\n</section>' for a, t, b in page.sections]
    if page.missing:
        items = "\n".join(f"<li>{esc(m)}</li>" for m in page.missing)
        body.append(f'<section id="missing"><h2>Not available</h2>\n'
                    f'{para("Parts of the report whose inputs do not exist yet, and the command that makes each:")}\n'
                    f"<ul>\n{items}\n</ul></section>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<header><h1>{esc(title)}</h1>",
        f'<p class="meta">generated {esc(generated)} · seed {config.seed} · landuse {esc(landuse.__version__)}</p>',
        f"<nav>{nav}</nav></header>", *body, "</body>", "</html>", ""])


@dataclass(frozen=True)
class BuiltReport:
    """What :func:`build_report` wrote: the page's path and the facts its manifest records."""

    path: Path
    generated: str
    figures: list[str]
    missing: list[str]
    runs: list[dict]

    def summary(self) -> dict[str, Any]:
        """The facts for the report's manifest (the runner writes it)."""
        return {"file": self.path.name, "generated": self.generated, "figures": self.figures,
                "missing": self.missing, "runs": self.runs}


def build_report(config: Config, out: Path) -> BuiltReport:
    """Write ``report.html`` and its figures (PNG files beside it) into ``out``.

    ``out`` is the report stage's staging dir (``<driver_dir>/report`` once the runner commits it, so
    figures of an earlier report never linger). Raises a one-line ConfigError when ``regions`` or
    ``predictions`` is missing, before anything is written.
    """
    regions, predictions, manifest = load_required(config)
    page = Page()
    runs: list[dict] = []
    maps_section(page, config, regions, predictions, manifest)
    zeroshot_section(page, config, regions, predictions, manifest)
    results_section(page, config, runs)
    data_section(page, config, regions)
    run_section(page, config, runs, manifest)
    generated = now_iso()
    text = render(page, config, generated)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(text, encoding="utf-8")
    for figure in page.figures:
        (out / figure.name).write_bytes(figure.png)
    log.info("report: %d figures, %d parts not available -> %s", len(page.figures), len(page.missing),
             out / REPORT_FILE)
    return BuiltReport(out / REPORT_FILE, generated, [f.name for f in page.figures], list(page.missing), runs)


def log_report(config: Config, path: Path) -> str:
    """Log the report (and the PNGs beside it, under ``figures/``) to an MLflow run ``report:<name>``.

    Returns the run id. MLflow copies the files, so ``path`` may be in the stage's staging dir.
    """
    import mlflow

    from landuse.training.tracking import setup_mlflow

    setup_mlflow(config)
    with mlflow.start_run(run_name=f"report:{config.name}") as run:
        mlflow.set_tags({"kind": "report", "config": config.name})
        mlflow.log_params({"name": config.name, "seed": config.seed})
        mlflow.log_artifact(str(path))
        for png in sorted(Path(path).parent.glob("*.png")):
            mlflow.log_artifact(str(png), artifact_path="figures")
    return run.info.run_id
