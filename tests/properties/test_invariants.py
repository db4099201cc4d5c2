"""Property-based tests (hypothesis) of the accounting invariants.

(a) region assignment: a point on a shared boundary goes to exactly one region, the smallest
    ``region_id`` among the closed polygons it touches, whatever the input order;
(b) validation: rows in = kept + rejected, and the rejects by reason add up;
(c) label rows: the class shares of a covered region sum to 1, an uncovered region's are all 0;
(d) graph operators: sparse (never a dense N×N), every row with a positive total sums to 1, the
    others to 0.

Modules are imported whole (``operators.row_normalise``, not the bare function) so that a mutation
patched into the module is what the property exercises.
"""

from __future__ import annotations

import numpy as np
import shapely
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from landuse.data import operators
from landuse.spatial import overlay, pointindex

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPARK = settings(max_examples=8, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- (a) the region-assignment tie rule ----------------------------------------------------------


@st.composite
def grids_and_points(draw):
    """A grid of unit squares with distinct shuffled ids, and points on vertices, edges and inside."""
    nx, ny = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ids = draw(st.permutations(list(range(nx * ny)))) if nx * ny > 1 else [0]
    scale = draw(st.sampled_from([1, 7]))
    ids = [int(i) * scale + 3 for i in ids]
    cells = [(i, j) for j in range(ny) for i in range(nx)]
    # coordinates in halves: integers are vertices / edges, .5 are edge midpoints or centres
    coords = st.tuples(st.integers(-1, 2 * nx + 1), st.integers(-1, 2 * ny + 1))
    points = draw(st.lists(coords, min_size=1, max_size=30))
    return ids, cells, np.array(points, dtype=np.float64) / 2.0


@FAST
@given(grids_and_points(), st.randoms(use_true_random=False))
def test_a_point_on_a_shared_boundary_goes_to_exactly_the_smallest_region(case, rnd) -> None:
    ids, cells, pts = case
    geoms = [box(i, j, i + 1, j + 1) for i, j in cells]
    index = pointindex.RegionPointIndex(ids, geoms)
    got = index.assign(pts[:, 0], pts[:, 1])
    # brute force over the closed polygons: every region the point touches, the smallest id wins
    touches = np.array([[shapely.intersects(g, shapely.Point(x, y)) for g in geoms] for x, y in pts])
    want = np.array([min(np.asarray(ids)[row]) if row.any() else pointindex.NO_REGION for row in touches])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(index.assign_exact(pts[:, 0], pts[:, 1]), want)
    # deterministic: another input order of the regions gives the same answer
    order = list(range(len(ids)))
    rnd.shuffle(order)
    again = pointindex.RegionPointIndex([ids[k] for k in order], [geoms[k] for k in order])
    np.testing.assert_array_equal(again.assign(pts[:, 0], pts[:, 1]), got)


# --- (b) rows in = kept + rejected ---------------------------------------------------------------

TEXT = st.one_of(st.none(), st.sampled_from(["", " ", "1", "-2.5", "1e3", "nan", "NaN", "inf", "x", "1,5",
                                             "9" * 40, "é", "0x10"]),
                 st.text(max_size=6))


@SPARK
@given(st.lists(st.tuples(TEXT, TEXT), min_size=0, max_size=40))
def test_rows_in_equal_kept_plus_rejected(spark, rows) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from landuse.ingest import quarantine, validation

    schema = StructType([StructField("a", StringType(), True), StructField("b", StringType(), True)])
    df = spark.createDataFrame(rows, schema)
    a, b = validation.parse_double(F.col("a")), validation.parse_double(F.col("b"))
    reason = validation.first_reason([("missing_a", F.col("a").isNull()), ("bad_a", a.isNull()),
                                      ("bad_b", b.isNull()), ("negative", a < 0)])
    split = validation.split_rows(df, reason, [a.alias("a"), b.alias("b")], F.struct("a", "b"), "prop")
    kept, by_reason = split.tally()
    n_kept, n_rejected = split.kept.count(), split.rejects.count()
    assert len(rows) == kept + sum(by_reason.values())
    assert (n_kept, n_rejected) == (kept, sum(by_reason.values()))
    assert quarantine.reason_counts(split.rejects) == by_reason
    quarantine.IngestSummary("prop", "t", "p", len(rows), n_kept, n_rejected, by_reason).check()


# --- (c) label rows sum to 1 ---------------------------------------------------------------------

CLASSES = ["a", "b", "c"]


@st.composite
def landuse_patches(draw):
    """A land-use map (a partition, as the overlay expects): some cells of a 0.5-unit grid over a
    6.5 x 6.5 extent (part of it outside the regions), each with a class; gaps allowed."""
    cells = draw(st.lists(st.tuples(st.integers(-1, 12), st.integers(-1, 12)), min_size=1, max_size=40, unique=True))
    return [(box(i / 2, j / 2, (i + 1) / 2, (j + 1) / 2), draw(st.sampled_from(CLASSES))) for i, j in cells]


@FAST
@given(landuse_patches())
def test_label_rows_sum_to_one_where_covered(patches) -> None:
    import geopandas as gpd

    regions = gpd.GeoDataFrame({"region_id": np.arange(9, dtype=np.int64)},
                               geometry=[box(2 * i, 2 * j, 2 * i + 2, 2 * j + 2) for j in range(3) for i in range(3)],
                               crs="EPSG:3857")
    landuse = gpd.GeoDataFrame({"landuse_class": [c for _, c in patches]}, geometry=[g for g, _ in patches],
                               crs="EPSG:3857")
    labels = overlay.class_area_proportions(regions, landuse, classes=CLASSES)
    assert len(labels) == len(regions)
    shares = labels[CLASSES].to_numpy()
    covered = labels["coverage"].to_numpy() > 0
    assert ((labels["coverage"] >= 0) & (labels["coverage"] <= 1 + 1e-9)).all()
    assert (shares >= -1e-12).all()
    np.testing.assert_allclose(shares[covered].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(shares[~covered], 0.0)


# --- (d) operator row normalisation --------------------------------------------------------------


@st.composite
def edge_lists(draw):
    """n nodes and an edge list with duplicates, self loops, isolated nodes and some zero weights."""
    n = draw(st.integers(1, 12))
    e = draw(st.integers(0, 40))
    src = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    w = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e-3, 250.0]), min_size=e, max_size=e))
    return n, torch.tensor([src, dst], dtype=torch.long).reshape(2, e), torch.tensor(w, dtype=torch.float32)


def _check_rows(op: torch.Tensor, positive_rows: np.ndarray, edges: int) -> None:
    assert op.layout in (torch.sparse_csr, torch.sparse_coo), f"dense operator {op.layout}"
    n = op.shape[0]
    assert op.shape == (n, n)
    values = op.values() if op.layout == torch.sparse_csr else op.coalesce().values()
    assert values.numel() <= edges  # stored entries come from the edges: never N x N
    sums = torch.sparse.sum(op.to_sparse_coo(), dim=1).to_dense() if values.numel() else torch.zeros(n)
    sums = sums.double().numpy()
    np.testing.assert_allclose(sums[positive_rows], 1.0, atol=1e-5)
    np.testing.assert_allclose(sums[~positive_rows], 0.0, atol=1e-7)


@FAST
@given(edge_lists())
def test_operators_are_sparse_and_row_stochastic(case) -> None:
    n, index, weight = case
    src = index[0].numpy()
    positive = np.zeros(n, dtype=bool)
    np.logical_or.at(positive, src, weight.numpy() > 0)
    _check_rows(operators.row_normalise(index, weight, n), positive, index.shape[1])

    off = index[0] != index[1]
    has_neighbour = np.zeros(n, dtype=bool)
    has_neighbour[src[off.numpy()]] = True
    _check_rows(operators.adjacency_operator(index, n), np.ones(n, dtype=bool), index.shape[1] + n)
    _check_rows(operators.neighbour_mean_operator(index, n), has_neighbour, index.shape[1])

    out_op, in_op = operators.flow_operators(index, weight, n)
    out_positive = np.zeros(n, dtype=bool)
    np.logical_or.at(out_positive, src[off.numpy()], weight.numpy()[off.numpy()] > 0)
    _check_rows(out_op, out_positive, index.shape[1])
    assert in_op.layout == torch.sparse_csr
    np.testing.assert_allclose(in_op.to_dense().numpy(), out_op.to_dense().numpy().T)  # tiny n: the check only
    _check_rows(operators.distance_decay_operator(index, weight, n), positive, index.shape[1])
