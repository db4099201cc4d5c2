"""Size presets of the synthetic city: one frozen :class:`ScaleSpec` per name in ``SCALES``."""

from __future__ import annotations

from dataclasses import dataclass

from landuse.constants import SCALES


@dataclass(frozen=True)
class ScaleSpec:
    """How big a synthetic city is.

    Attributes:
        name: scale name (one of ``landuse.constants.SCALES``).
        extent_m: side of the square study extent in metres (a multiple of ``grid_m``).
        cell_m: side of a latent land-use cell in metres (land-use polygons are unions of these cells).
        grid_m: side of a Shenzhen regional grid cell in metres (a multiple of ``cell_m``).
        parcel_m: typical parcel spacing in metres; land-use polygons are split along parcel borders.
        n_docks: number of bike docking stations (London regions).
        n_pois: exact number of POIs written.
        n_trips: exact number of trips (London: journey rows; Shenzhen: sum of OD counts).
        max_cores: maximum number of commercial cores (at least one core is always drawn).
        k_near: nearest candidate destinations per region for the gravity model.
        k_hub: extra candidate destinations per region among the strongest attractors ("hubs").
        chunk_rows: maximum rows per trip part file (also the generation batch bound).
        pixel_m: Landsat-like raster pixel size in metres.
    """

    name: str
    extent_m: int
    n_docks: int
    n_pois: int
    n_trips: int
    max_cores: int = 3
    cell_m: int = 50
    grid_m: int = 250
    parcel_m: int = 200
    k_near: int = 48
    k_hub: int = 16
    chunk_rows: int = 1_000_000
    pixel_m: int = 30

    @property
    def n_cells(self) -> int:
        """Latent cells along one side of the extent."""
        return self.extent_m // self.cell_m

    @property
    def n_grid(self) -> int:
        """Regional grid cells along one side of the extent (Shenzhen)."""
        return self.extent_m // self.grid_m

    @property
    def k(self) -> int:
        """Total candidate destinations per region (``k_near + k_hub``)."""
        return self.k_near + self.k_hub


SCALE_SPECS: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec("tiny", extent_m=5_000, n_docks=60, n_pois=2_000, n_trips=4_000, max_cores=2),
    "small": ScaleSpec("small", extent_m=11_250, n_docks=2_000, n_pois=30_000, n_trips=300_000),
    "medium": ScaleSpec("medium", extent_m=20_000, n_docks=5_000, n_pois=200_000, n_trips=2_000_000),
    "large": ScaleSpec("large", extent_m=26_000, n_docks=10_500, n_pois=1_050_000, n_trips=10_500_000),
}
assert tuple(SCALE_SPECS) == SCALES


def get_scale(name: str) -> ScaleSpec:
    """The :class:`ScaleSpec` called ``name``; ``ValueError`` for an unknown name."""
    try:
        return SCALE_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic scale {name!r}; expected one of: {', '.join(SCALES)}") from None
