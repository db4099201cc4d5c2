"""Serving: the inductive MLflow region model (a region table in, distributions out) and the fitted
embedding models, as MLflow ``pyfunc`` models.

- :mod:`landuse.serving.region_table`: the region table (features + edge lists per region) ↔ graph tensors;
- :mod:`landuse.serving.pyfunc`: the region model's spec, artifacts, ``PythonModel`` and logging;
- :mod:`landuse.serving.embeddings`: the flow Word2Vec, POI Doc2Vec and image-encoder pyfuncs;
- :mod:`landuse.serving.predict`: batch prediction with a registered (or any logged) region model through
  that pyfunc — distributions, dominant class, mixed-use entropy → ``tables/predictions`` and the GeoJSON map.
"""
