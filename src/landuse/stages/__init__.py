"""The pipeline's stages in run order; each module defines one :class:`~landuse.runner.Stage`."""

from __future__ import annotations

from landuse.runner import Stage
from landuse.stages import flows, ingest, labels, pois, regions, synth

STAGES: dict[str, Stage] = {
    module.STAGE.name: module.STAGE for module in (synth, regions, ingest, flows, pois, labels)
}
