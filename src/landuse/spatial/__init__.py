"""Regions, adjacency, spatial-join engines (Sedona and built-in) and polygon overlay."""
