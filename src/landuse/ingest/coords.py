"""Coordinate conversion to WGS84 lon/lat inside Spark, vectorised per Arrow batch.

Projected x/y (any CRS pyproj knows) and GCJ-02 (the offset datum of Amap / Gaode coordinates in
China) are converted with numpy over whole Arrow batches in ``mapInArrow``; there is no per-row
Python call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from landuse.ingest.errors import IngestError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyproj
    from pyspark.sql import DataFrame

WGS84 = "EPSG:4326"


def check_crs(crs: object, where: str) -> "pyproj.CRS":
    """The pyproj CRS for ``crs`` (e.g. ``"EPSG:3857"``); :class:`IngestError` when it is unknown."""
    import pyproj

    try:
        parsed = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        raise IngestError(f"{where}: unknown CRS {crs!r}") from None
    if not (parsed.is_geographic or parsed.is_projected):
        raise IngestError(f"{where}: CRS {parsed.name!r} is neither geographic nor projected")
    return parsed


def is_wgs84(crs: object) -> bool:
    """Whether ``crs`` is plain WGS84 lon/lat (no conversion needed)."""
    import pyproj

    return pyproj.CRS.from_user_input(crs).equals(pyproj.CRS.from_epsg(4326), ignore_axis_order=True)


def _pyproj_converter(crs_text: str) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    import pyproj

    transformer = pyproj.Transformer.from_crs(crs_text, WGS84, always_xy=True)

    def convert(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = transformer.transform(x, y, errcheck=False)
        return np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64")

    return convert


# GCJ-02 ("Mars coordinates"): the published forward offset; inverted here by fixed-point iteration.
_GCJ_A = 6378245.0
_GCJ_EE = 0.00669342162296594323


def _gcj_offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    pi = np.pi
    common_x = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x)) + common_x
    dlat += (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x)) + common_x
    dlon += (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1.0 - _GCJ_EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * pi)
    dlon = (dlon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad) * pi)
    # Outside mainland China the datum is not applied.
    outside = (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)
    return np.where(outside, 0.0, dlon), np.where(outside, 0.0, dlat)


def wgs84_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 -> GCJ-02 (the forward offset)."""
    dlon, dlat = _gcj_offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> WGS84 by fixed-point iteration of the forward offset (error well under 1 m)."""
    wlon, wlat = lon.copy(), lat.copy()
    for _ in range(4):
        dlon, dlat = _gcj_offset(wlon, wlat)
        wlon, wlat = lon - dlon, lat - dlat
    return wlon, wlat


def _converter(kind: str, crs_text: str | None) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if kind == "gcj02":
        return gcj02_to_wgs84
    assert crs_text is not None
    return _pyproj_converter(crs_text)


def to_lonlat(
    df: "DataFrame",
    pairs: Sequence[tuple[str, str, str, str]],
    *,
    crs: str | None = None,
    gcj02: bool = False,
) -> "DataFrame":
    """Append lon/lat double columns converted from double x/y columns, batch by batch.

    ``pairs`` holds ``(x_col, y_col, lon_col, lat_col)``; nulls stay null. ``crs`` is the source
    CRS of projected/other x/y; ``gcj02=True`` converts GCJ-02 lon/lat instead.
    """
    from pyspark.sql.types import DoubleType, StructField, StructType

    if not gcj02 and crs is None:
        raise ValueError("to_lonlat needs crs or gcj02=True")
    kind = "gcj02" if gcj02 else "pyproj"
    crs_text = None if gcj02 else check_crs(crs, "to_lonlat").to_wkt()
    names = df.columns
    index = [(names.index(x), names.index(y)) for x, y, _, _ in pairs]
    out_names = [name for _, _, lon, lat in pairs for name in (lon, lat)]
    # A new StructType: DataFrame.schema is cached and StructType.add mutates in place.
    schema = StructType(list(df.schema.fields) + [StructField(n, DoubleType(), True) for n in out_names])

    def convert_batches(batches: Iterable["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        convert = _converter(kind, crs_text)
        for batch in batches:
            arrays = list(batch.columns)
            fields = list(batch.schema)
            for (xi, yi), (_, _, lon_name, lat_name) in zip(index, pairs):
                x = batch.column(xi).to_numpy(zero_copy_only=False).astype("float64")
                y = batch.column(yi).to_numpy(zero_copy_only=False).astype("float64")
                missing = np.isnan(x) | np.isnan(y)
                with np.errstate(all="ignore"):
                    lon, lat = convert(np.where(missing, 0.0, x), np.where(missing, 0.0, y))
                arrays += [pa.array(lon, mask=missing), pa.array(lat, mask=missing)]
                fields += [pa.field(lon_name, pa.float64()), pa.field(lat_name, pa.float64())]
            yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    return df.mapInArrow(convert_batches, schema)
