"""The synthetic demo AOI: a DSM and AEF-like embeddings that the workflow makes itself.

Use it to run the whole study offline. It is designed from what makes the real problem hard,
not to make any model look good (README, "The synthetic AOI", states the design):

* the DSM is terrain (three spatial scales plus a regional trend that lifts the east side,
  where the contiguous test area lies, by about ``shift_m``) plus forest canopy and buildings;
* the 64 embedding bands are a fixed random non-linear mix of physical features: land cover,
  object height, terrain *derivatives* (slope, curvature) and an **elevation code**: eight
  smooth responses ``tanh((z - k c) / c)`` with centres ``k c`` (``c`` =
  ``elevation_code_m``, k = 0..7), so that every height from 0 to ~8 ``c`` moves several of them
  (no saturation: AEF's 64 dimensions reconstruct elevation with R² ~0.97 over the whole
  conterminous US, Rahman 2026, arXiv 2602.10354), but no single band, and no linear function
  of the bands, is the height;
* the nuisance is spatially coherent, as in real AEF vectors: parcels (Voronoi cells about
  ``parcel_px`` across, like fields and forest stands) each carry their own random latent
  offset, and three smooth fields (scales 40, 96 and 200 px) drift across the AOI; both enter
  the same non-linear mix with amplitude ``nuisance``, so no smoothing removes them. Only a
  small white term (``noise``) is per pixel. ``nuisance`` sets how well a pixel-wise linear
  model reads the height: it is calibrated on that control alone (:mod:`aefheight.calibration`);
* vectors are normalised to unit length and quantized with AEF's int8 scheme (``product:
  aef``, 64 bands), or as TESSERA ships them (``product: tessera``, 128 bands by default: int8
  values times one float scale per pixel), de-quantized and stored as float32.

Everything follows from ``seed``; the same settings give byte-identical rasters. The AOI is
generated tile by tile (:data:`TILE`), so memory does not grow with its size: the few random
draws that span the AOI are small (lattices one point every ``scale`` px, parcel centres, hole
centres), and every per-pixel draw is a pure function of the pixel (:func:`hash_uniform`), so
any window of the AOI can be computed alone and equals that window of the whole.

One module of ~490 lines: one generator, whose terrain, land cover, embeddings and coarse DEM
are calibrated together (``make calibrate``) and then frozen, so they are read together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage, sparse
from tqdm import tqdm

from aefheight.core import aef
from aefheight.core.embeddings import PRODUCT_TAG, PRODUCTS, band_names
from aefheight.core.errors import ConfigError
from aefheight.core.files import atomic_path
from aefheight.core.raster import Grid, parse_crs
from aefheight.core.steps import step

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
    elevation_code_m: float  # spacing and width of the elevation code's tanh responses
    nuisance: float  # amplitude of the coherent nuisance (parcels, smooth fields)
    noise: float  # per-band white noise before normalisation (the only per-pixel term)
    parcel_px: int  # mean parcel side: each parcel has its own coherent embedding offset
    holes: int  # DSM nodata holes
    embedding_gap: bool  # a small nodata block in the embeddings, as AEF has
    dem_resolution_px: int  # coarse DEM cell (3 = 30 m, as GLO-30)
    dem_canopy_fraction: float  # share of the canopy the coarse DEM includes
    dem_building_fraction: float  # share of the buildings it includes
    dem_noise_m: float  # white error per coarse cell
    dem_error_m: float  # smooth error (~1 km) SD
    product: str  # aef: int8 AEF codes; tessera: float32, TESSERA's quantization
    bands: int | None  # None: the product's band count (64, 128)

    def check(self, section: str) -> None:
        """What the schema cannot know: a CRS PROJ reads, projected in metres; AEF's 64 bands."""
        parse_crs(self.crs, f"{section}.crs", metres=True)
        if self.product == "aef" and self.n_bands != aef.BANDS:
            raise ConfigError(
                f"{section}.bands is {self.bands} but AEF has {aef.BANDS}; "
                "use product tessera for another band count, or bands: null"
            )

    @property
    def n_bands(self) -> int:
        """The embeddings' band count."""
        return self.bands or PRODUCTS[self.product] or aef.BANDS

    @property
    def grid(self) -> Grid:
        x0, y0 = self.origin
        t = Affine(self.pixel_size, 0, x0, 0, -self.pixel_size, y0)
        return Grid(CRS.from_user_input(self.crs), t, self.width, self.height)


TILE = (256, 1024)  # rows, columns generated at once: memory bounded at any AOI size
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective scramble of 64-bit integers (wraps on purpose)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_uniform(
    seed: int, stream: int, rows: np.ndarray, cols: np.ndarray, k: int = 1
) -> np.ndarray:
    """``k`` independent uniforms in (0, 1) per pixel of ``rows`` x ``cols``, shape (k, n, m).

    A counter-based draw: a pure function of (seed, stream, row, column), so a window of the
    AOI draws exactly what the whole AOI draws there.
    """
    key = _mix(np.array([seed * 1_000_003 + stream], np.uint64))
    h = _mix(key + rows.astype(np.uint64)[:, None] * GOLDEN)
    h = _mix(h + cols.astype(np.uint64)[None, :])
    out = np.empty((k, *h.shape))
    for i in range(k):
        h = _mix(h + GOLDEN)
        out[i] = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return out


def hash_normal(seed: int, stream: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Standard normal per pixel (Box-Muller on :func:`hash_uniform`), float32."""
    u = hash_uniform(seed, stream, rows, cols, 2)
    return (np.sqrt(-2.0 * np.log(u[0])) * np.cos(2.0 * np.pi * u[1])).astype(np.float32)


def _bspline(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice indices and cubic B-spline weights, both (n, 4), at lattice coordinates."""
    i = np.floor(coord).astype(np.int64)
    f = coord - i
    w = [(1 - f) ** 3, 4 - 6 * f**2 + 3 * f**3, 1 + 3 * f + 3 * f**2 - 3 * f**3, f**3]
    return i[:, None] + np.arange(-1, 3), np.stack(w, -1) / 6.0


def _spline_matrix(n: int, scale: int, lattice: int) -> sparse.csr_matrix:
    """(n, lattice) cubic B-spline weights from lattice points ``scale`` px apart to n pixels."""
    idx, w = _bspline((np.arange(n) + 0.5) / scale + 1)
    return sparse.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, 4 * n + 1, 4)), (n, lattice))


@dataclass
class Smooth:
    """Gaussian-like noise correlated over about ``scale`` px, computed window by window.

    Cubic B-spline interpolation (no prefilter) of white noise on a lattice one point every
    ``scale`` px, shifted and scaled to zero mean and unit SD over the AOI. Both statistics
    are exact and come from the small lattice alone (the field is linear in it), so no pass
    over the AOI's pixels is needed.
    """

    lattice: np.ndarray
    scale: int
    mean: float
    sd: float

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int], scale: int) -> Smooth:
        h, w = shape
        lat = rng.standard_normal((h // scale + 4, w // scale + 4))
        wy, wx = (_spline_matrix(n, scale, m) for n, m in zip(shape, lat.shape, strict=True))
        mean = float(np.asarray(wy.sum(0)).ravel() @ lat @ np.asarray(wx.sum(0)).ravel()) / (h * w)
        # sum of squares of wy @ lat @ wx.T = <lat, (wy.T wy) lat (wx.T wx)>
        gl = (wy.T @ wy) @ lat
        sumsq = float(np.sum(lat * (wx.T @ wx @ gl.T).T))
        return cls(lat, scale, mean, float(np.sqrt(max(sumsq / (h * w) - mean**2, 1e-24))))

    def window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        yi, yw = _bspline((np.arange(r0, r1) + 0.5) / self.scale + 1)
        xi, xw = _bspline((np.arange(c0, c1) + 0.5) / self.scale + 1)
        lo, hi = xi.min(), xi.max() + 1
        rows = sum(yw[:, k, None] * self.lattice[yi[:, k], lo:hi] for k in range(4))
        out = sum(xw[None, :, k] * rows[:, xi[:, k] - lo] for k in range(4))
        return ((out - self.mean) / self.sd).astype(np.float32)


PARCEL_DIMS = 3  # latent dimensions of a parcel's coherent offset


def parcel_centres(rng: np.random.Generator, shape: tuple[int, int], size_px: int) -> np.ndarray:
    """Parcel centres: grid points ``size_px`` apart, each jittered within its cell, (n, 2)."""
    h, w = shape
    gy, gx = np.mgrid[-1 : h // size_px + 2, -1 : w // size_px + 2]
    return (np.stack([gy.ravel(), gx.ravel()], -1) + rng.random((gy.size, 2))) * size_px


@dataclass
class Fields:
    """Single-band fields of one window of the AOI (float32/uint8)."""

    terrain: np.ndarray
    objects: np.ndarray
    landcover: np.ndarray
    nuisance: np.ndarray  # (3, h, w) smooth fields
    parcel_offsets: np.ndarray  # (PARCEL_DIMS, h, w) latent offset of each pixel's parcel
    dsm_valid: np.ndarray
    emb_valid: np.ndarray


class Scene:
    """The AOI's random draws, small at any AOI size; :meth:`fields` computes any window."""

    def __init__(self, s: SyntheticSettings) -> None:
        from scipy.spatial import cKDTree

        self.s = s
        rng = np.random.default_rng(s.seed)
        shape = (s.height, s.width)
        w = s.width
        # terrain: three scales plus a logistic regional trend along x (east side higher)
        self.terrain = [
            (amp, Smooth.draw(rng, shape, max(2, min(scale, w // 2))))
            for scale, amp in ((256, 1.0), (64, 0.35), (16, 0.08))
        ]
        self.forest, self.urban = Smooth.draw(rng, shape, 48), Smooth.draw(rng, shape, 32)
        self.canopy = Smooth.draw(rng, shape, 24)
        self.nuisance = [Smooth.draw(rng, shape, sc) for sc in (96, 40, 200)]
        self.parcels = cKDTree(parcel_centres(rng, shape, s.parcel_px))
        self.offsets = rng.standard_normal((self.parcels.n, PARCEL_DIMS)).astype(np.float32)
        h = s.height
        self.holes = [
            (rng.integers(0, h), rng.integers(0, w), rng.integers(4, 14)) for _ in range(s.holes)
        ]
        gy, gx = rng.integers(0, max(1, h - h // 12)), rng.integers(0, max(1, w - w // 20))
        self.gap = (gy, gy + h // 12, gx, gx + w // 20) if s.embedding_gap else (0, 0, 0, 0)
        # the coarse DEM's own stream ([seed, 13]): the other rasters stay unchanged by it
        k = s.dem_resolution_px
        cells = (-(-s.height // k), -(-w // k))
        scale = max(2, min(100 // k, cells[1] // 2))
        self.dem_error = Smooth.draw(np.random.default_rng([s.seed, 13]), cells, scale)

    def terrain_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        s = self.s
        z = np.full((r1 - r0, c1 - c0), s.base_m, np.float32)
        for amp, field in self.terrain:
            z += s.relief_m * amp * field.window(r0, r1, c0, c1)
        xf = (np.arange(c0, c1, dtype=np.float32) + 0.5) / s.width
        z += (s.shift_m / (1.0 + np.exp(-(xf - 0.55) / 0.08)))[None, :]
        return np.maximum(z, 0.5)

    def surface_window(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, ...]:
        """Terrain, land cover and object heights (canopy, buildings) of a window."""
        s, rows, cols = self.s, np.arange(r0, r1), np.arange(c0, c1)
        landcover = np.zeros((r1 - r0, c1 - c0), np.uint8)
        landcover[self.forest.window(r0, r1, c0, c1) > 0.35] = 1
        landcover[self.urban.window(r0, r1, c0, c1) > 1.3] = 2
        # canopy varies smoothly; buildings are 2x2 px blocks of random height (gamma(3, 4) + 4)
        canopy = 18.0 + 5.0 * self.canopy.window(r0, r1, c0, c1)
        canopy = np.clip(canopy + 1.5 * hash_normal(s.seed, 1, rows, cols), 4.0, 35.0)
        u = hash_uniform(s.seed, 2, rows // 2, cols // 2, 4)
        buildings = np.where(u[0] < 0.45, 4.0 - 4.0 * np.log(u[1] * u[2] * u[3]), 0.0)
        objects = np.zeros(landcover.shape, np.float32)
        objects[landcover == 1] = canopy[landcover == 1]
        objects[landcover == 2] = buildings[landcover == 2]
        return self.terrain_window(r0, r1, c0, c1), landcover, objects

    def fields(self, r0: int, r1: int, c0: int, c1: int) -> Fields:
        """Every field of rows ``r0:r1`` and columns ``c0:c1``."""
        terrain, landcover, objects = self.surface_window(r0, r1, c0, c1)
        nuisance = np.stack([n.window(r0, r1, c0, c1) for n in self.nuisance])
        yy, xx = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        ids = self.parcels.query(np.stack([yy.ravel(), xx.ravel()], -1))[1]
        offsets = np.moveaxis(self.offsets[ids].reshape(*yy.shape, PARCEL_DIMS), -1, 0)
        dsm_valid, emb_valid = self.validity(r0, r1, c0, c1)
        return Fields(terrain, objects, landcover, nuisance, offsets, dsm_valid, emb_valid)

    def validity(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Where the DSM (outside its holes) and the embeddings (outside the gap) are valid."""
        yy, xx = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        dsm_valid = np.ones(yy.shape, bool)
        for cy, cx, r in self.holes:
            dsm_valid &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
        g0, g1, h0, h1 = self.gap
        return dsm_valid, ~((yy >= g0) & (yy < g1) & (xx >= h0) & (xx < h1))


def make_fields(s: SyntheticSettings) -> Fields:
    """Every field of the whole AOI (small AOIs: tests, figures)."""
    return Scene(s).fields(0, s.height, 0, s.width)


def _mixer(
    seed: int, n_features: int, bands: int = aef.BANDS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed random two-layer mix from physical features to ``bands`` bands."""
    rng = np.random.default_rng([seed, 7])
    a = rng.normal(0, 1.6 / np.sqrt(n_features), (n_features, bands)).astype(np.float32)
    b = rng.normal(0, 0.3, bands).astype(np.float32)
    c = rng.normal(0, 1.0 / np.sqrt(bands), (bands, bands)).astype(np.float32)
    return a, b, c


ELEVATION_CODE_TERMS = 8  # tanh responses centred at 0, c, ..., 7c (c = elevation_code_m)


def elevation_code(z: np.ndarray, spacing_m: float) -> list[np.ndarray]:
    """The elevation code: ``tanh((z - k c) / c)`` for k = 0..7, ``c = spacing_m``.

    Every height from 0 to ~8 c lies on the steep part of at least two responses, so elevation
    is decodable everywhere in that range (non-linearly), never capped.
    """
    return [np.tanh((z - k * spacing_m) / spacing_m) for k in range(ELEVATION_CODE_TERMS)]


def features(s: SyntheticSettings, f: Fields, z: np.ndarray, top: int, left: int) -> np.ndarray:
    """Physical features of a window, shape (rows, cols, n_features).

    ``z`` is the window's terrain with the pixels around it that lie in the AOI (for the
    derivatives), the window starting at ``z[top, left]``. Terrain enters through local
    derivatives and the :func:`elevation_code`; the nuisance features (smooth fields and
    parcel offsets, amplitude ``nuisance``) are spatially coherent.
    """
    h, w = f.terrain.shape
    sl = (slice(top, top + h), slice(left, left + w))
    gy, gx = (g[sl] for g in np.gradient(z, s.pixel_size))
    curv = (ndimage.laplace(z) / s.pixel_size**2)[sl]
    lc, a = f.landcover, s.nuisance
    feats = [
        (lc == 0).astype(np.float32),
        (lc == 1).astype(np.float32),
        (lc == 2).astype(np.float32),
        np.tanh(f.objects / 15.0),
        np.tanh(gx * 15.0),
        np.tanh(gy * 15.0),
        np.tanh(curv * 400.0),
        *elevation_code(z[sl], s.elevation_code_m),
        *(a * n for n in f.nuisance),
        *(a * o for o in f.parcel_offsets),
    ]
    return np.stack(feats, axis=-1).astype(np.float32)


def embed_tile(scene: Scene, f: Fields, r0: int, c0: int) -> np.ndarray:
    """Embeddings of the tile at ``(r0, c0)`` whose fields are ``f``, (bands, rows, cols).

    int8 AEF codes for product ``aef``; float32 for ``tessera`` (:func:`tessera_like`).

    The per-pixel noise comes from the tile's own stream: always generate whole tiles.
    """
    s = scene.s
    h, w = f.terrain.shape
    top, left = min(r0, 1), min(c0, 1)
    z = scene.terrain_window(
        r0 - top, min(s.height, r0 + h + 1), c0 - left, min(s.width, c0 + w + 1)
    )
    x = features(s, f, z, top, left)
    a, b, c = _mixer(s.seed, x.shape[-1], s.n_bands)
    e = np.tanh(x @ a + b) @ c
    e += np.random.default_rng([s.seed, 11, r0, c0]).normal(0, s.noise, e.shape).astype(np.float32)
    e /= np.linalg.norm(e, axis=-1, keepdims=True) + 1e-12
    e = np.moveaxis(e, -1, 0)
    if s.product == "aef":
        return aef.quantize(e, valid=f.emb_valid[None])
    return tessera_like(e, f.emb_valid)


def tessera_like(e: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float32 (bands, ...) values quantized as TESSERA ships them, then de-quantized.

    TESSERA stores int8 values and one float32 scale per pixel (value = int8 x scale); the
    scale here maps each pixel's largest magnitude to 127. Invalid pixels become NaN.
    """
    scale = np.abs(e).max(axis=0) / 127.0
    q = np.rint(e / np.where(scale > 0, scale, 1.0)).clip(-127, 127)
    out = (q * scale).astype(np.float32)
    out[:, ~valid] = np.nan
    return out


def _cells(n: int, k: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear weights from cell centres to the pixels ``lo:hi`` along one axis.

    Cells of ``k`` px, the edge cells repeated: (lower cell, upper cell, upper cell's weight).
    """
    cells = -(-n // k)
    y = np.clip((np.arange(lo, hi) + 0.5) / k - 0.5, 0, cells - 1)
    i0 = np.minimum(np.floor(y).astype(np.int64), cells - 1)
    return i0, np.minimum(i0 + 1, cells - 1), (y - i0).astype(np.float32)


def coarse_dem_window(scene: Scene, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """A coarse DEM that errs as Copernicus GLO-30 does against a DSM, float32 metres.

    The surface with part of the canopy (``dem_canopy_fraction``) and of the buildings
    (``dem_building_fraction``), averaged over ``dem_resolution_px`` cells (edge pixels
    repeated past the AOI), plus white noise per cell and a smooth error (~1 km); then bilinear
    from the cell centres onto the 10 m pixels, as the real GLO-30 is co-registered.
    """
    s, k = scene.s, scene.s.dem_resolution_px
    y0, y1, fy = _cells(s.height, k, r0, r1)
    x0, x1, fx = _cells(s.width, k, c0, c1)
    ci, cj = (int(y0.min()), int(y1.max()) + 1), (int(x0.min()), int(x1.max()) + 1)
    pr = np.minimum(np.arange(ci[0] * k, ci[1] * k), s.height - 1)  # edge rows repeated
    pc = np.minimum(np.arange(cj[0] * k, cj[1] * k), s.width - 1)
    terrain, lc, objects = scene.surface_window(
        int(pr[0]), int(pr[-1]) + 1, int(pc[0]), int(pc[-1]) + 1
    )
    share = np.select([lc == 1, lc == 2], [s.dem_canopy_fraction, s.dem_building_fraction], 0.0)
    surface = (terrain + share.astype(np.float32) * objects)[np.ix_(pr - pr[0], pc - pc[0])]
    n, m = ci[1] - ci[0], cj[1] - cj[0]
    cells = surface.reshape(n, k, m, k).mean(axis=(1, 3))
    rows, cols = np.arange(*ci), np.arange(*cj)
    cells += s.dem_noise_m * hash_normal(s.seed, 13, rows, cols)
    cells += s.dem_error_m * scene.dem_error.window(*ci, *cj)
    a, b = cells[y0 - ci[0]], cells[y1 - ci[0]]
    j0, j1 = x0 - cj[0], x1 - cj[0]
    top = a[:, j0] * (1 - fx) + a[:, j1] * fx
    bottom = b[:, j0] * (1 - fx) + b[:, j1] * fx
    return (top * (1 - fy[:, None]) + bottom * fy[:, None]).astype(np.float32)


def tiles(s: SyntheticSettings) -> list[tuple[int, int, int, int]]:
    """(r0, r1, c0, c1) of the generation tiles, row by row."""
    (th, tw), h, w = TILE, s.height, s.width
    return [
        (r, min(h, r + th), c, min(w, c + tw)) for r in range(0, h, th) for c in range(0, w, tw)
    ]


def tile_rasters(scene: Scene, kinds: Iterable[str], r0: int, r1: int, c0: int, c1: int) -> dict:
    """The bands (bands, rows, cols) of the rasters ``kinds`` over one tile."""
    out = {}
    if "embeddings" in kinds:
        out["embeddings"] = embed_tile(scene, scene.fields(r0, r1, c0, c1), r0, c0)
    if "dsm" in kinds or "landcover" in kinds:
        terrain, landcover, objects = scene.surface_window(r0, r1, c0, c1)
        dsm = np.where(scene.validity(r0, r1, c0, c1)[0], terrain + objects, DSM_NODATA)
        out["dsm"], out["landcover"] = dsm[None].astype(np.float32), landcover[None]
    if "coarse_dem" in kinds:
        out["coarse_dem"] = coarse_dem_window(scene, r0, r1, c0, c1)[None]
    return out


def write_synthetic(
    s: SyntheticSettings,
    embeddings_path: Path,
    dsm_path: Path,
    landcover_path: Path | None = None,
    coarse_dem_path: Path | None = None,
) -> None:
    """Write the synthetic AOI's co-registered rasters (each atomically), tile by tile.

    The small rasters first, the embeddings last, each in its own pass: a full disk keeps the
    complete ones and leaves no partial file.

    Args:
        s: generator settings.
        embeddings_path: int8 x 64 GeoTIFF, nodata -128 (same form as downloaded AEF), or
            float32 (NaN nodata) for product tessera.
        dsm_path: float32 reference DSM in metres, nodata -9999.
        landcover_path: optional uint8 land-cover classes (0 open, 1 forest, 2 urban).
        coarse_dem_path: optional float32 coarse DEM (GLO-30-like, :func:`coarse_dem_window`).
    """
    log.info(
        "synthesizing %dx%d px AOI (seed %d, shift %.0f m)", s.width, s.height, s.seed, s.shift_m
    )
    scene = Scene(s)
    named = {
        "dsm": dsm_path, "landcover": landcover_path, "coarse_dem": coarse_dem_path,
        "embeddings": embeddings_path,
    }  # fmt: skip
    passes = (("dsm", "landcover"), ("coarse_dem",), ("embeddings",))
    for kinds in passes:
        paths = {k: p for k in kinds if (p := named[k]) is not None}
        with contextlib.ExitStack() as stack:
            dst = {
                k: stack.enter_context(_open(s, k, stack.enter_context(atomic_path(v))))
                for k, v in paths.items()
            }
            bar = stack.enter_context(
                tqdm(tiles(s), desc=f"synthesize {kinds[-1]}", unit="tile", mininterval=10)
            )
            for r0, r1, c0, c1 in bar:
                for k, a in tile_rasters(scene, paths, r0, r1, c0, c1).items():
                    if k in dst:
                        dst[k].write(a, window=((r0, r1), (c0, c1)))


_EMBEDDING_FORM = {"aef": ("int8", aef.NODATA), "tessera": ("float32", float("nan"))}
_QUANTIZATION = {"aef": "AEF int8", "tessera": "TESSERA int8 x per-pixel scale, de-quantized"}


def _open(s: SyntheticSettings, kind: str, path: Path) -> rasterio.io.DatasetWriter:
    """One output raster, open for writing, with its tags."""
    tags = {"source": "synthetic", "seed": str(s.seed), "vertical_datum": "none (synthetic)"}
    profiles = {
        "embeddings": (s.n_bands, *_EMBEDDING_FORM[s.product]),
        "dsm": (1, "float32", DSM_NODATA),
        "landcover": (1, "uint8", LANDCOVER_NODATA),
        "coarse_dem": (1, "float32", DSM_NODATA),
    }
    dst = rasterio.open(path, "w", **s.grid.profile(*profiles[kind]))
    if kind == "embeddings":
        for i, name in enumerate(band_names(s.product, s.n_bands), start=1):
            dst.set_band_description(i, name)
        dst.update_tags(**tags, year="synthetic", quantization=_QUANTIZATION[s.product])
        dst.update_tags(**{PRODUCT_TAG: s.product})
    elif kind == "landcover":
        dst.update_tags(classes=",".join(f"{k}:{v}" for k, v in LANDCOVER_CLASSES.items()))
    else:
        dst.set_band_description(1, "height_m")
        dst.update_tags(**tags, units="m", resolution_m=str(s.pixel_size))
        if kind == "coarse_dem":
            dst.update_tags(
                product="synthetic coarse DEM (GLO-30-like)",
                resolution_m=str(s.pixel_size * s.dem_resolution_px),
                vertical_datum_conversion="none needed (same datum as the reference)",
            )
    return dst


@step
def synthesize(
    *, settings: SyntheticSettings, embeddings: Path, dsm: Path, landcover: Path, coarse_dem: Path
) -> None:
    """Make a synthetic AOI: its embeddings, reference DSM, land cover and coarse DEM."""
    write_synthetic(settings, embeddings, dsm, landcover, coarse_dem)
