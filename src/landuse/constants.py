"""Names shared across the package: land-use classes, CRSs, profiles, manifest files, env vars.

Table and column names live in :mod:`landuse.spark.schemas`.
"""

from __future__ import annotations

# --- Land-use classes (docs/architecture.md): the 8 target classes, in this fixed order everywhere. ---
LANDUSE_CLASSES: tuple[str, ...] = (
    "commercial",
    "residential",
    "industrial",
    "public_service",
    "utilities",
    "green_space",
    "transport",
    "non_construction",
)

# --- HGCN ablation variants (thesis table order); Adj-Tri-GCN is HGCN ---
HGCN_VARIANTS: tuple[str, ...] = (
    "None", "GCN_adj", "GCN_dd", "GCN_avg", "GCN_in", "GCN_out", "Bi-GCN_avg", "Bi-GCN_in", "Bi-GCN_out",
    "Tri-GCN", "Adj-Bi-GCN_avg", "Adj-Bi-GCN_in", "Adj-Bi-GCN_out", "Adj-Tri-GCN",
)
HGCN = "Adj-Tri-GCN"
# Variants beyond the thesis that keep each region's own signal: GraphSAGE-style concatenation of the
# region's own transform and each neighbourhood aggregate (neighbour mean over adjacency, its second
# hop, distance decay, in-flow, out-flow), or a gated (per-node attention over heads) fusion of them.
SAGE_VARIANTS: tuple[str, ...] = (
    "SAGE_adj", "SAGE_adj2", "SAGE_dd", "SAGE_flow", "SAGE_adj2_flow", "SAGE_all", "Gated-SAGE_adj2", "Gated-SAGE_all",
)
ALL_VARIANTS: tuple[str, ...] = HGCN_VARIANTS + SAGE_VARIANTS
# Node-feature modalities and their one-letter codes in the fusion ablation (M_P, M_PI, M_PIG, M_PIGF)
MODALITY_CODES: dict[str, str] = {
    "P": "poi", "I": "image", "G": "geo", "F": "flow",
    "C": "poi_counts", "X": "poi_tfidf", "D": "poi_density", "T": "poi_text", "B": "building",
    "Z": "zeroshot",
}
# Built-in modality names; users add their own through inputs.embeddings (bring-your-own embeddings)
MODALITIES: tuple[str, ...] = tuple(MODALITY_CODES.values())

# --- Coordinate reference systems ---
CRS_WGS84 = "EPSG:4326"
CRS_SHENZHEN = "EPSG:32650"  # WGS 84 / UTM zone 50N
CRS_LONDON = "EPSG:27700"  # OSGB36 / British National Grid

# --- Synthetic profiles and scales ---
PROFILES: tuple[str, ...] = ("shenzhen", "london")
SCALES: tuple[str, ...] = ("tiny", "small", "medium", "large")

# --- Files written next to every table / dataset ---
MANIFEST_FILE = "_manifest.json"  # leading underscore: Spark and pyarrow readers ignore it
SYNTH_MANIFEST_FILE = "manifest.json"

# --- Environment variables ---
ENV_SEDONA_JARS = "SEDONA_JARS"
ENV_JARS_DIR = "LANDUSE_JARS_DIR"  # folder of jars for local sessions (default: the repo's jvm/jars)
TELEMETRY_ENV = {
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
