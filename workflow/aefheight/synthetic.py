"""The synthetic demo AOI: a DSM and AEF-like embeddings that the workflow makes itself.

Use it to run the whole study offline. It is designed from what makes the real problem hard,
not to make any model look good (README, "The synthetic AOI", states the design):

* the DSM is terrain (three spatial scales plus a regional trend that lifts the east side,
  where the contiguous test area lies, by about ``shift_m``) plus forest canopy and buildings;
* the 64 embedding bands are a fixed random non-linear mix of physical features: land cover,
  object height, terrain *derivatives* (slope, curvature) and two saturating encodings of
  terrain elevation, ``tanh(2 z / sat)`` and ``tanh(4 (z - sat / 2) / sat)``. At
  ``z = saturation_m`` both keep 7 % of their peak slope (``1 - tanh(2)**2``), at 1.5 x it
  1 % and 0.1 %: above the saturation height a pixel says almost nothing about its elevation,
  which is then recoverable only from spatial context (integrating the slopes from lower
  ground within the receptive field);
* the nuisance is spatially coherent, as in real AEF vectors: parcels (Voronoi cells about
  ``parcel_px`` across, like fields and forest stands) each carry their own random latent
  offset, and three smooth fields (scales 40, 96 and 200 px) drift across the AOI; both enter
  the same non-linear mix, so no smoothing removes them. Only a small white term
  (``noise``) is per pixel;
* vectors are normalised to unit length and quantized with AEF's int8 scheme. No band is a
  (linear function of the) height.

Everything follows from ``seed``; the same settings give byte-identical rasters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from . import aef
from .files import atomic_path
from .raster import Grid, parse_crs, strips

log = logging.getLogger(__name__)

DSM_NODATA = -9999.0
LANDCOVER_NODATA = 255
LANDCOVER_CLASSES = {0: "open", 1: "forest", 2: "urban"}


@dataclass(frozen=True)
class SyntheticSettings:
    """Settings of the synthetic AOI (config ``aois.<name>.synthetic``)."""

    SECTION: ClassVar[str] = "aois.<name>.synthetic"
    width: int
    height: int
    seed: int
    crs: str
    origin: tuple[float, float]  # upper-left x, y
    pixel_size: float
    base_m: float  # elevation of the low (west) side
    relief_m: float  # amplitude of multi-scale terrain
    shift_m: float  # how much higher the east side sits (the distribution shift)
    saturation_m: float  # elevation encoding keeps 7 % of its peak slope here
    noise: float  # per-band white noise before normalisation (the only per-pixel term)
    parcel_px: int  # mean parcel side: each parcel has its own coherent embedding offset
    holes: int  # DSM nodata holes
    embedding_gap: bool  # a small nodata block in the embeddings, as AEF has
    dem_resolution_px: int  # coarse DEM cell (3 = 30 m, as GLO-30)
    dem_canopy_fraction: float  # share of the canopy the coarse DEM includes
    dem_building_fraction: float  # share of the buildings it includes
    dem_noise_m: float  # white error per coarse cell
    dem_error_m: float  # smooth error (~1 km) SD

    def check(self, section: str) -> None:
        """What the schema cannot know: a CRS PROJ reads, projected in metres."""
        parse_crs(self.crs, f"{section}.crs", metres=True)

    @property
    def grid(self) -> Grid:
        x0, y0 = self.origin
        t = Affine(self.pixel_size, 0, x0, 0, -self.pixel_size, y0)
        return Grid(CRS.from_user_input(self.crs), t, self.width, self.height)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: int) -> np.ndarray:
    """Unit-variance Gaussian-like noise, correlated over about ``scale_px`` pixels."""
    h, w = shape
    low = rng.standard_normal((h // scale_px + 4, w // scale_px + 4)).astype(np.float32)
    up = ndimage.zoom(low, scale_px, order=3, prefilter=False)[:h, :w]
    up -= up.mean()
    return (up / (up.std() + 1e-12)).astype(np.float32)


PARCEL_DIMS = 3  # latent dimensions of a parcel's coherent offset


def voronoi_parcels(
    rng: np.random.Generator, shape: tuple[int, int], size_px: int, strip_rows: int = 256
) -> tuple[np.ndarray, int]:
    """Parcel ids (Voronoi cells of jittered grid points ``size_px`` apart) and their count."""
    from scipy.spatial import cKDTree

    h, w = shape
    gy, gx = np.mgrid[-1 : h // size_px + 2, -1 : w // size_px + 2]
    pts = (np.stack([gy.ravel(), gx.ravel()], -1) + rng.random((gy.size, 2))) * size_px
    tree = cKDTree(pts)
    ids = np.empty(shape, np.int32)
    cols = np.arange(w)
    for r0, n in strips(h, strip_rows):  # bounded memory for large AOIs
        yy, xx = np.meshgrid(np.arange(r0, r0 + n), cols, indexing="ij")
        ids[r0 : r0 + n] = tree.query(np.stack([yy.ravel(), xx.ravel()], -1))[1].reshape(n, w)
    return ids, len(pts)


@dataclass
class Fields:
    """Whole-AOI single-band fields (float32/uint8); the 64 bands are built in strips."""

    terrain: np.ndarray
    objects: np.ndarray
    landcover: np.ndarray
    nuisance: np.ndarray  # (3, h, w) smooth fields
    parcels: np.ndarray  # (h, w) int32 parcel id
    parcel_offsets: np.ndarray  # (n_parcels, PARCEL_DIMS) latent offset per parcel
    dsm_valid: np.ndarray
    emb_valid: np.ndarray


def make_fields(s: SyntheticSettings) -> Fields:
    """Terrain, land cover, object heights and masks, deterministic from ``s.seed``."""
    rng = np.random.default_rng(s.seed)
    shape = (s.height, s.width)
    h, w = shape
    # terrain: three scales plus a logistic regional trend along x (east side higher)
    terrain = np.full(shape, s.base_m, np.float32)
    for scale, amp in ((256, 1.0), (64, 0.35), (16, 0.08)):
        terrain += s.relief_m * amp * smooth_noise(rng, shape, max(2, min(scale, w // 2)))
    xf = (np.arange(w, dtype=np.float32) + 0.5) / w
    trend = s.shift_m / (1.0 + np.exp(-(xf - 0.55) / 0.08))
    terrain += trend[None, :]
    terrain = np.maximum(terrain, 0.5)

    # land cover from smooth fields: forest patches, small urban clusters
    forest_f = smooth_noise(rng, shape, 48)
    urban_f = smooth_noise(rng, shape, 32)
    landcover = np.zeros(shape, np.uint8)
    landcover[forest_f > 0.35] = 1
    landcover[urban_f > 1.3] = 2

    # object heights: canopy varies smoothly; buildings are 2x2 px blocks of random height
    canopy = 18.0 + 5.0 * smooth_noise(rng, shape, 24) + rng.normal(0, 1.5, shape)
    canopy = np.clip(canopy, 4.0, 35.0).astype(np.float32)
    bh, bw = -(-h // 2), -(-w // 2)
    blocks = np.where(rng.random((bh, bw)) < 0.45, rng.gamma(3.0, 4.0, (bh, bw)) + 4.0, 0.0)
    buildings = np.kron(blocks, np.ones((2, 2)))[:h, :w].astype(np.float32)
    objects = np.zeros(shape, np.float32)
    objects[landcover == 1] = canopy[landcover == 1]
    objects[landcover == 2] = buildings[landcover == 2]

    nuisance = np.stack([smooth_noise(rng, shape, sc) for sc in (96, 40, 200)])
    parcels, n_parcels = voronoi_parcels(rng, shape, s.parcel_px)
    parcel_offsets = rng.standard_normal((n_parcels, PARCEL_DIMS)).astype(np.float32)

    yy, xx = np.mgrid[0:h, 0:w]
    dsm_valid = np.ones(shape, bool)
    for _ in range(s.holes):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(4, 14)
        dsm_valid &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
    emb_valid = np.ones(shape, bool)
    if s.embedding_gap:
        gy, gx = rng.integers(0, max(1, h - h // 12)), rng.integers(0, max(1, w - w // 20))
        emb_valid[gy : gy + h // 12, gx : gx + w // 20] = False
    return Fields(
        terrain, objects, landcover, nuisance, parcels, parcel_offsets, dsm_valid, emb_valid
    )


def _mixer(seed: int, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed random two-layer mix from physical features to 64 bands."""
    rng = np.random.default_rng([seed, 7])
    a = rng.normal(0, 1.6 / np.sqrt(n_features), (n_features, aef.BANDS)).astype(np.float32)
    b = rng.normal(0, 0.3, aef.BANDS).astype(np.float32)
    c = rng.normal(0, 1.0 / np.sqrt(aef.BANDS), (aef.BANDS, aef.BANDS)).astype(np.float32)
    return a, b, c


def features(s: SyntheticSettings, f: Fields, r0: int, r1: int) -> np.ndarray:
    """Physical features of rows ``r0:r1``, shape (rows, cols, n_features).

    Terrain enters only through local derivatives and two saturating tanh responses of
    elevation (7 % of their peak slope left at ``saturation_m``); both are bounded, so no
    feature is (a linear function of) the height. The nuisance features (smooth fields and
    parcel offsets) are spatially coherent.
    """
    lo, hi = max(0, r0 - 1), min(s.height, r1 + 1)
    z = f.terrain[lo:hi]
    gy, gx = np.gradient(z, s.pixel_size)
    curv = ndimage.laplace(z) / s.pixel_size**2
    sl = slice(r0 - lo, r0 - lo + (r1 - r0))
    gx, gy, curv, z = gx[sl], gy[sl], curv[sl], z[sl]
    lc = f.landcover[r0:r1]
    sat = s.saturation_m
    feats = [
        (lc == 0).astype(np.float32),
        (lc == 1).astype(np.float32),
        (lc == 2).astype(np.float32),
        np.tanh(f.objects[r0:r1] / 15.0),
        np.tanh(gx * 15.0),
        np.tanh(gy * 15.0),
        np.tanh(curv * 400.0),
        np.tanh(2.0 * z / sat),
        np.tanh(4.0 * (z - 0.5 * sat) / sat),
        *(0.7 * n[r0:r1] for n in f.nuisance),
        *np.moveaxis(0.7 * f.parcel_offsets[f.parcels[r0:r1]], -1, 0),
    ]
    return np.stack(feats, axis=-1).astype(np.float32)


def embed_rows(s: SyntheticSettings, f: Fields, r0: int, r1: int) -> np.ndarray:
    """int8 AEF-like codes of rows ``r0:r1``, shape (64, rows, cols)."""
    x = features(s, f, r0, r1)
    a, b, c = _mixer(s.seed, x.shape[-1])
    hidden = np.tanh(x @ a + b)
    e = hidden @ c
    rng = np.random.default_rng([s.seed, 11, r0])
    e += rng.normal(0, s.noise, e.shape).astype(np.float32)
    e /= np.linalg.norm(e, axis=-1, keepdims=True) + 1e-12
    codes = aef.quantize(np.moveaxis(e, -1, 0), valid=f.emb_valid[r0:r1][None])
    return codes


def coarse_dem(s: SyntheticSettings, f: Fields) -> np.ndarray:
    """A coarse DEM that errs as Copernicus GLO-30 does against a DSM, float32 metres.

    The surface with part of the canopy (``dem_canopy_fraction``) and of the buildings
    (``dem_building_fraction``), averaged over ``dem_resolution_px`` cells, plus white noise
    per cell and a smooth error (~1 km); then bilinear back onto the grid, as the real GLO-30
    is co-registered. Its own random stream (``[seed, 13]``): the other rasters stay unchanged.
    """
    rng = np.random.default_rng([s.seed, 13])
    k = s.dem_resolution_px
    share = np.select(
        [f.landcover == 1, f.landcover == 2], [s.dem_canopy_fraction, s.dem_building_fraction], 0.0
    )
    surface = f.terrain + share.astype(np.float32) * f.objects
    h, w = surface.shape
    ch, cw = -(-h // k), -(-w // k)
    pad = np.pad(surface, ((0, ch * k - h), (0, cw * k - w)), mode="edge")
    cells = pad.reshape(ch, k, cw, k).mean(axis=(1, 3))
    cells += rng.normal(0.0, s.dem_noise_m, cells.shape)
    cells += s.dem_error_m * smooth_noise(rng, cells.shape, max(2, min(100 // k, cw // 2)))
    # grid_mode: cells are areas, so each 10 m pixel centre interpolates between cell centres
    up = ndimage.zoom(cells, k, order=1, grid_mode=True, mode="nearest")
    return up[:h, :w].astype(np.float32)


def _write_coarse_dem(s: SyntheticSettings, f: Fields, path: Path, tags: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **s.grid.profile(1, "float32", DSM_NODATA)) as dst:
            dst.write(coarse_dem(s, f), 1)
            dst.update_tags(
                **tags,
                product="synthetic coarse DEM (GLO-30-like)",
                units="m",
                resolution_m=str(s.pixel_size * s.dem_resolution_px),
                vertical_datum_conversion="none needed (same datum as the reference)",
            )
            dst.set_band_description(1, "height_m")


def write_synthetic(
    s: SyntheticSettings,
    embeddings_path: Path,
    dsm_path: Path,
    landcover_path: Path | None = None,
    coarse_dem_path: Path | None = None,
    strip_rows: int = 256,
) -> None:
    """Write the synthetic AOI's co-registered rasters (each atomically).

    Args:
        s: generator settings.
        embeddings_path: int8 x 64 GeoTIFF, nodata -128 (same form as downloaded AEF).
        dsm_path: float32 reference DSM in metres, nodata -9999.
        landcover_path: optional uint8 land-cover classes (0 open, 1 forest, 2 urban).
        coarse_dem_path: optional float32 coarse DEM (GLO-30-like, :func:`coarse_dem`).
        strip_rows: rows generated at once; bounds memory of the 64-band step.
    """
    g = s.grid
    log.info(
        "synthesizing %dx%d px AOI (seed %d, shift %.0f m)", s.width, s.height, s.seed, s.shift_m
    )
    f = make_fields(s)
    dsm = (f.terrain + f.objects).astype(np.float32)
    dsm[~f.dsm_valid] = DSM_NODATA
    tags = {"source": "synthetic", "seed": str(s.seed), "vertical_datum": "none (synthetic)"}

    with atomic_path(dsm_path) as tmp:
        with rasterio.open(tmp, "w", **g.profile(1, "float32", DSM_NODATA)) as dst:
            dst.write(dsm, 1)
            dst.update_tags(**tags, units="m", resolution_m=str(s.pixel_size))
            dst.set_band_description(1, "height_m")
    if landcover_path is not None:
        with atomic_path(landcover_path) as tmp:
            prof = g.profile(1, "uint8", LANDCOVER_NODATA)
            with rasterio.open(tmp, "w", **prof) as dst:
                dst.write(f.landcover, 1)
                dst.update_tags(classes=",".join(f"{k}:{v}" for k, v in LANDCOVER_CLASSES.items()))
    if coarse_dem_path is not None:
        _write_coarse_dem(s, f, coarse_dem_path, tags)
    with atomic_path(embeddings_path) as tmp:
        with rasterio.open(tmp, "w", **g.profile(aef.BANDS, "int8", aef.NODATA)) as dst:
            for r0, n in strips(s.height, strip_rows):
                codes = embed_rows(s, f, r0, r0 + n)
                dst.write(codes, window=((r0, r0 + n), (0, s.width)))
            for i, name in enumerate(aef.BAND_NAMES, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**tags, year="synthetic", quantization="AEF int8")
