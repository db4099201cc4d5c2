"""Per-region features: OD flows, POI tokens and counts (embeddings come in later stages)."""
