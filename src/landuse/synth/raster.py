"""A Landsat-8 OLI-like surface-reflectance scene rendered from the latent land-use map."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from landuse.synth.landuse_map import CLS, COVER, SEA, LatentMap, smooth_field

BAND_DESCRIPTIONS: tuple[str, ...] = ("B1 coastal", "B2 blue", "B3 green", "B4 red", "B5 NIR", "B6 SWIR1", "B7 SWIR2")
# Collection-2 Level-2 surface reflectance: reflectance = DN * DN_SCALE + DN_OFFSET
DN_SCALE = 0.0000275
DN_OFFSET = -0.2
NODATA = 0
_BORDER_PX = 3
_NE_SWATH = 0.75  # pixels with (col - row) / width above this lie outside the scene's swath

# Surface reflectance spectra, bands B1..B7: vegetation has a high NIR / low red, water is dark in
# NIR and SWIR, built-up surfaces are bright with high SWIR1, bare soil rises towards the SWIR.
SURFACES: dict[str, tuple[float, ...]] = {
    "water": (0.045, 0.040, 0.045, 0.030, 0.015, 0.008, 0.005),
    "sea": (0.050, 0.045, 0.050, 0.030, 0.012, 0.006, 0.004),
    "forest": (0.020, 0.025, 0.050, 0.030, 0.320, 0.150, 0.060),
    "grass": (0.030, 0.035, 0.070, 0.050, 0.360, 0.200, 0.090),
    "farmland": (0.040, 0.050, 0.085, 0.080, 0.280, 0.240, 0.130),
    "bare": (0.080, 0.100, 0.140, 0.180, 0.240, 0.320, 0.270),
    "commercial": (0.110, 0.120, 0.140, 0.160, 0.200, 0.240, 0.210),
    "residential": (0.085, 0.095, 0.105, 0.115, 0.180, 0.210, 0.170),
    "industrial": (0.130, 0.140, 0.160, 0.180, 0.230, 0.300, 0.270),
    "public_service": (0.090, 0.100, 0.115, 0.120, 0.210, 0.230, 0.180),
    "utilities": (0.120, 0.130, 0.150, 0.170, 0.220, 0.290, 0.260),
    "transport": (0.070, 0.075, 0.085, 0.095, 0.130, 0.170, 0.150),
}
_SURFACE_INDEX = {name: i for i, name in enumerate(SURFACES)}


def surface_map(latent: LatentMap) -> np.ndarray:
    """(n, n) surface index (into ``SURFACES``) of every latent cell."""
    surface = np.full(latent.classes.shape, _SURFACE_INDEX["bare"], dtype=np.uint8)
    for name in ("commercial", "residential", "industrial", "public_service", "utilities", "transport"):
        surface[latent.classes == CLS[name]] = _SURFACE_INDEX[name]
    surface[latent.classes == CLS["green_space"]] = _SURFACE_INDEX["grass"]
    nc = latent.classes == CLS["non_construction"]
    for cover, name in ((COVER["river"], "water"), (COVER["lake"], "water"), (COVER["farmland"], "farmland"),
                        (COVER["forest"], "forest"), (COVER["bare"], "bare")):
        surface[nc & (latent.cover == cover)] = _SURFACE_INDEX[name]
    surface[latent.cover == SEA] = _SURFACE_INDEX["sea"]
    return surface


def render_reflectance(latent: LatentMap, pixel_m: int, rng: np.random.Generator) -> tuple[np.ndarray, Affine]:
    """(7, h, w) float32 surface reflectance on a ``pixel_m`` grid aligned to the latent map's corner."""
    extent = latent.n * latent.cell_m
    npx = int(np.ceil(extent / pixel_m))
    centres = (np.arange(npx) + 0.5) * pixel_m
    cell = np.clip((centres // latent.cell_m).astype(np.int64), 0, latent.n - 1)
    surface = surface_map(latent)[cell[:, None], cell[None, :]]
    spectra = np.array(list(SURFACES.values()), dtype=np.float32)  # (S, 7)
    refl = spectra[surface].transpose(2, 0, 1).copy()  # (7, h, w)

    # gardens and street trees: residential / public pixels are partly vegetated
    greenness = np.clip(0.25 + 0.15 * smooth_field(rng, npx, 150 / pixel_m), 0.0, 0.6)
    mixed = np.isin(surface, [_SURFACE_INDEX["residential"], _SURFACE_INDEX["public_service"]])
    grass = np.array(SURFACES["grass"], dtype=np.float32)[:, None]
    refl[:, mixed] = (1 - greenness[mixed])[None, :] * refl[:, mixed] + greenness[mixed][None, :] * grass

    brightness = 1.0 + 0.05 * smooth_field(rng, npx, 300 / pixel_m)
    refl *= brightness[None, :, :]
    refl = ndimage.gaussian_filter(refl, sigma=(0, 0.5, 0.5), mode="nearest")  # sensor PSF: mixed edge pixels
    refl += rng.normal(0.0, 0.006, refl.shape).astype(np.float32)
    transform = Affine(pixel_m, 0.0, latent.origin_x, 0.0, -pixel_m, latent.origin_y)
    return refl.astype(np.float32), transform


def nodata_mask(height: int, width: int) -> np.ndarray:
    """True outside the scene: a border of a few pixels and a diagonal swath edge across the NE corner."""
    row = np.arange(height)[:, None]
    col = np.arange(width)[None, :]
    border = (row < _BORDER_PX) | (row >= height - _BORDER_PX) | (col < _BORDER_PX) | (col >= width - _BORDER_PX)
    swath = (col - row) / width > _NE_SWATH
    return border | swath


def to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance → Collection-2 Level-2 uint16 DN (1…65535; 0 is reserved for nodata)."""
    dn = np.rint((reflectance.astype(np.float64) - DN_OFFSET) / DN_SCALE)
    return np.clip(dn, 1, 65535).astype(np.uint16)


def write_landsat(path: Path, latent: LatentMap, crs: str, pixel_m: int, acquired: date,
                  rng: np.random.Generator) -> dict[str, Any]:
    """Write the 7-band GeoTIFF (tiled, deflate, nodata 0); returns its shape/nodata figures."""
    refl, transform = render_reflectance(latent, pixel_m, rng)
    dn = to_dn(refl)
    outside = nodata_mask(dn.shape[1], dn.shape[2])
    dn[:, outside] = NODATA
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=dn.shape[0], dtype="uint16",
                   crs=crs, transform=transform, nodata=NODATA, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=2, interleave="pixel")
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml side files
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(dn)
            for band, description in enumerate(BAND_DESCRIPTIONS, start=1):
                dst.set_band_description(band, description)
            dst.scales = (DN_SCALE,) * dn.shape[0]
            dst.offsets = (DN_OFFSET,) * dn.shape[0]
            dst.update_tags(SPACECRAFT_ID="LANDSAT_8", SENSOR_ID="OLI_TIRS", PROCESSING_LEVEL="L2SP",
                            COLLECTION_NUMBER="02", DATE_ACQUIRED=acquired.isoformat(), SYNTHETIC="yes")
    return {"width": int(dn.shape[2]), "height": int(dn.shape[1]), "bands": int(dn.shape[0]),
            "pixel_m": pixel_m, "nodata": NODATA, "nodata_pixels": int(outside.sum()),
            "dn_scale": DN_SCALE, "dn_offset": DN_OFFSET, "band_descriptions": list(BAND_DESCRIPTIONS)}
