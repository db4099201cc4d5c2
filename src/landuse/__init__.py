"""landuse: urban land-use inference from multi-source spatial big data."""

__version__ = "0.1.0"
