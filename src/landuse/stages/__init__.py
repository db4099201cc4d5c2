"""The DAG: every step of landuse as a :class:`~landuse.runner.Stage`, in a topological run order.

Data stages write tables (synth … assemble); model stages train, evaluate and register (pretrain,
train, ablation, fusion, tune, transfer, benchmarks); report stages publish (predict, monitor,
report). ``landuse pipeline --until STAGE`` runs a stage with everything it depends on; the
Databricks bundle, the Makefile's stage list and the notebooks' stage lists are generated from
this registry (landuse.bundle).
"""

from __future__ import annotations

from landuse.runner import Stage
from landuse.stages import (assemble, benchmarks, buildings, embeddings, experiments, flows, imagery, ingest, labels,
                            monitor, poi_features, pois, predict, pretrain, regions, report, synth, transfer, tune)

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        synth.STAGE, regions.STAGE, ingest.STAGE, flows.STAGE, pois.STAGE, labels.STAGE,
        embeddings.FLOW_STAGE, embeddings.POI_STAGE, poi_features.STAGE, imagery.IMAGERY_STAGE,
        imagery.LOCATION_STAGE, buildings.STAGE, pretrain.STAGE, assemble.STAGE,
        experiments.TRAIN_STAGE, experiments.ABLATION_STAGE, experiments.FUSION_STAGE,
        tune.STAGE, transfer.STAGE, benchmarks.LANDUSE_STAGE, benchmarks.EMBEDDINGS_STAGE,
        predict.STAGE, monitor.STAGE, report.STAGE,  # the publishing stages stay last
    )
}

# The notebooks' sections (notebooks/0*.py): each runs the stages its targets need beyond the earlier sections.
SECTIONS: dict[str, tuple[str, ...]] = {
    "ingest": ("flows", "pois", "labels"),
    "features": ("assemble",),
    "training": ("train", "ablation", "fusion"),
    "publishing": ("report",),
}


def section_stages(section: str) -> list[str]:
    """The stages of a notebook section, in DAG order: what its targets depend on, less earlier sections'."""
    from landuse.runner import plan

    done: set[str] = set()
    for name, targets in SECTIONS.items():
        wanted = [s for target in targets if target in STAGES for s in plan(STAGES, target)]
        if name == section:
            return [s for s in STAGES if s in wanted and s not in done]
        done.update(wanted)
    raise KeyError(f"unknown section {section!r} (sections: {', '.join(SECTIONS)})")
