"""The pipeline's stages in run order; each module defines one :class:`~landuse.runner.Stage`."""

from __future__ import annotations

from landuse.runner import Stage
from landuse.stages import (assemble, buildings, embeddings, flows, imagery, ingest, labels, poi_features, pois,
                            regions, synth)

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        synth.STAGE, regions.STAGE, ingest.STAGE, flows.STAGE, pois.STAGE, labels.STAGE,
        embeddings.FLOW_STAGE, embeddings.POI_STAGE, poi_features.STAGE, imagery.IMAGERY_STAGE,
        imagery.LOCATION_STAGE, buildings.STAGE, assemble.STAGE,
    )
}
