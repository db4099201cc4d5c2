"""Test- and benchmark-only code: reference implementations and checks the product never calls.

Moved out of ``src/landuse`` so the installed package holds only what the pipeline runs. Tests import
it as ``tests.support.<module>`` (pytest puts the repository root on ``sys.path``); benchmarks, run as
scripts, put the repository root on ``sys.path`` first (see ``benchmarks/flow_walks.py``).

* :mod:`tests.support.walk_reference`: the plain-Python reference walker and the transition
  statistics that check the vectorised / executor walkers of :mod:`landuse.features.walks`.
* :mod:`tests.support.small_inputs`: driver-side, in-memory forms of stage computations (flow
  Word2Vec on walks in memory, POI Doc2Vec on a pandas tours frame, the building-morphology
  aggregation) built from the product's own functions, for small inputs in tests.
"""
