"""Deterministic synthetic city generator: the product's embedded default and every stage's test data.

``generate(profile, scale, seed, out_dir)`` writes a city's raw inputs in the formats real sources
use (land-use polygons with survey codes, regional units, POIs, trips, a Landsat-8-like scene) plus
the true per-region land-use distribution and a manifest with checksums.
"""

from __future__ import annotations

from landuse.synth.generator import GENERATOR_VERSION, default_class_map_dir, generate
from landuse.synth.profiles import PROFILE_SPECS, ProfileSpec, get_profile
from landuse.synth.scales import SCALE_SPECS, ScaleSpec, get_scale

__all__ = [
    "GENERATOR_VERSION",
    "PROFILE_SPECS",
    "SCALE_SPECS",
    "ProfileSpec",
    "ScaleSpec",
    "default_class_map_dir",
    "generate",
    "get_profile",
    "get_scale",
]
