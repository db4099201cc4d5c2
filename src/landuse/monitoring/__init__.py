"""Planned-vs-actual land-use monitoring: flag regions whose predicted dominant use departs from the plan.

:mod:`landuse.monitoring.planned` reads a planned land-use layer, overlays it onto the regions,
compares it with the predicted distributions (a region deviates when the model prefers its
predicted dominant class over the planned class by at least a margin threshold) and draws the map;
:mod:`landuse.monitoring.run` is the stage body (tables in, ``tables/monitoring`` + map + GeoJSON out).
"""
