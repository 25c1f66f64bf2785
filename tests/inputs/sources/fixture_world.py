"""A tiny fixture world in the providers' exact published layouts, with its known truth.

Around (0 deg E, 45 deg N), where UTM zones 30N and 31N meet:

* AEF (year 2020): two bottom-up int8 COGs in zone 30N, ``A`` (north) and ``B`` (south), sharing
  an edge at y = 4,987,300 m, and ``C`` in zone 31N overlapping them across the zone boundary;
  random codes (the truth, kept north-up here) with a nodata square in ``A``. Served under
  ``tge-labs/aef/v1/annual/`` (Source Cooperative layout, ``s3://`` paths in the index) and
  ``alphaearth_foundations/satellite_embedding/v1/annual/`` (GCS layout, ``gs://`` paths), each
  with an ``aef_index.parquet`` holding the real columns. A 2021 tile elsewhere makes the
  index hold two years.
* Copernicus GLO-30: four 1 x 1 degree tiles with their real names (N44/N45 x W001/E000), a
  linear height field, and ``tileList.txt``.
* TESSERA (geotessera 0.7.5's layout, year 2020): the four 0.1 degree tiles around the AOI
  (``grid_{lon}_{lat}``, centres at x.x5), int8 (H, W, 128) values with a per-pixel float32
  scale (some scales NaN or huge: no data), a UTM landmask GeoTIFF georeferencing each, and the
  GeoParquet registries with their sha256. Pixels of 100 m (real tiles: 10 m) keep it small.
* RGE ALTI: a 7z archive ``RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19.7z`` with IGN's
  folder structure and 1000 x 1000 ESRI ASCII tiles (5 m, Lambert-93, pixel-is-point corners),
  a linear height field with a nodata hole.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import py7zr
import rasterio
from aefheight.core import aef
from affine import Affine
from pyproj import Transformer
from rasterio.shutil import copy as rio_copy
from shapely.geometry import box

YEAR = 2020
SC_PREFIX = "tge-labs/aef/v1/annual"
GCS_PREFIX = "alphaearth_foundations/satellite_embedding/v1/annual"
RGE_ID = "RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19"
# The AOI of most tests: crosses the A/B tile edge and the zone 30N/31N boundary (lon 0).
AOI_BBOX = (-0.009, 44.996, 0.006, 45.004)


@dataclass(frozen=True)
class AefTile:
    name: str
    crs: str
    zone: str
    left: float
    bottom: float
    width: int
    height: int
    year: int = YEAR

    @property
    def north_up_transform(self) -> Affine:
        return Affine(10, 0, self.left, 0, -10, self.bottom + 10 * self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.left, self.bottom, self.left + 10 * self.width, self.bottom + 10 * self.height)


TILES = (
    AefTile(
        "xa2020zone30north-0000000000-0000000000", "EPSG:32630", "30N", 735000, 4987300, 160, 96
    ),
    AefTile(
        "xb2020zone30south-0000008192-0000000000", "EPSG:32630", "30N", 735000, 4986340, 160, 96
    ),
    AefTile(
        "xc2020zone31westt-0000000000-0000000000", "EPSG:32631", "31N", 263400, 4986340, 96, 192
    ),
    AefTile(
        "xd2021elsewhere00-0000000000-0000000000",
        "EPSG:32630",
        "30N",
        600000,
        5200000,
        32,
        32,
        year=2021,
    ),
)


def cop_height(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The Copernicus fixture's height field (linear, so bilinear resampling is exact)."""
    return 100.0 + 500.0 * lon + 300.0 * (lat - 45.0)


def rge_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The RGE ALTI fixture's height field in Lambert-93 metres (linear)."""
    return 40.0 + 0.004 * (x - 460000.0) + 0.002 * (y - 6435000.0)


RGE_TILES = ("0460_6440", "0465_6440", "0460_6435")
RGE_HOLE = (slice(400, 440), slice(700, 740))  # nodata rows/cols in tile 0460_6440


@dataclass
class World:
    root: Path
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # tile name -> north-up codes
    # TESSERA tile centre (lon, lat) -> (int8 values HWC, scales HW, CRS, transform)
    tessera: dict[tuple[float, float], tuple] = field(default_factory=dict)

    def tile(self, letter: str) -> AefTile:
        return next(t for t in TILES if t.name.startswith(f"x{letter.lower()}"))


def write_bottom_up_cog(path: Path, codes_north_up: np.ndarray, t: AefTile) -> None:
    """A 64-band int8 COG stored bottom-up (positive y resolution), nodata -128."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tr = Affine(10, 0, t.left, 0, 10, t.bottom)  # row 0 = southern edge
    prof = {
        "driver": "GTiff",
        "width": t.width,
        "height": t.height,
        "count": aef.BANDS,
        "dtype": "int8",
        "nodata": aef.NODATA,
        "crs": t.crs,
        "transform": tr,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **prof) as dst:
        dst.write(codes_north_up[:, ::-1, :])
    # band-interleaved, as the real AEF COGs: a window read is a range request per band
    rio_copy(
        tmp,
        path,
        driver="COG",
        compress="DEFLATE",
        blocksize=128,
        overviews="NONE",
        interleave="BAND",
    )
    tmp.unlink()


def aef_index(tiles: tuple[AefTile, ...], scheme_prefix: str) -> gpd.GeoDataFrame:
    rows = []
    for t in tiles:
        tr = Transformer.from_crs(t.crs, "EPSG:4326", always_xy=True)
        w, s, e, n = tr.transform_bounds(*t.bounds, densify_pts=21)
        rows.append(
            {
                "crs": t.crs,
                "path": f"{scheme_prefix}/{t.year}/{t.zone}/{t.name}.tiff",
                "year": t.year,
                "utm_zone": t.zone,
                "utm_west": t.bounds[0],
                "utm_south": t.bounds[1],
                "utm_east": t.bounds[2],
                "utm_north": t.bounds[3],
                "wgs84_west": w,
                "wgs84_south": s,
                "wgs84_east": e,
                "wgs84_north": n,
                "geometry": box(w, s, e, n),
            }
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def build_aef(world: World) -> None:
    rng = np.random.default_rng(20200)
    for t in TILES:
        codes = rng.integers(-127, 128, (aef.BANDS, t.height, t.width)).astype(np.int8)
        if t.name.startswith("xa"):
            codes[:, 60:66, 90:96] = aef.NODATA  # a nodata square inside the AOI
        world.truth[t.name] = codes
        for prefix in (SC_PREFIX, GCS_PREFIX):
            write_bottom_up_cog(
                world.root / prefix / str(t.year) / t.zone / f"{t.name}.tiff", codes, t
            )
    aef_index(TILES, f"s3://us-west-2.opendata.source.coop/{SC_PREFIX}").to_parquet(
        world.root / SC_PREFIX / "aef_index.parquet"
    )
    aef_index(TILES, f"gs://{GCS_PREFIX}").to_parquet(world.root / GCS_PREFIX / "aef_index.parquet")


def cop_name(lat: int, lon: int) -> str:
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


COP_TILES = [(44, -1), (44, 0), (45, -1), (45, 0)]


def build_copernicus(world: World, res: float = 0.01) -> None:
    base = world.root / "copernicus"
    n = round(1 / res)
    for lat, lon in COP_TILES:
        name = cop_name(lat, lon)
        lons = lon + (np.arange(n) + 0.5) * res
        lats = lat + 1 - (np.arange(n) + 0.5) * res
        z = cop_height(lons[None, :], lats[:, None]).astype(np.float32)
        path = base / name / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        prof = {
            "driver": "GTiff",
            "width": n,
            "height": n,
            "count": 1,
            "dtype": "float32",
            "crs": "EPSG:4326",
            "transform": Affine(res, 0, lon, 0, -res, lat + 1),
            "nodata": -32767.0,
        }
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **prof) as dst:
            dst.write(z, 1)
        rio_copy(tmp, path, driver="COG", compress="DEFLATE", blocksize=128)
        tmp.unlink()
    names = [cop_name(la, lo) for la, lo in COP_TILES] + [cop_name(10, 10)]
    (base / "tileList.txt").write_text("\n".join(names) + "\n")
    # the same bucket where N44_00_E000 is sea: no file, not in tileList.txt
    sea = world.root / "copernicus_sea"
    shutil.copytree(base, sea)
    shutil.rmtree(sea / cop_name(44, 0))
    (sea / "tileList.txt").write_text("\n".join(n for n in names if n != cop_name(44, 0)) + "\n")


def asc_text(key: str) -> str:
    xk, yk = (int(v) for v in key.split("_"))
    x0, ytop = xk * 1000 - 2.5, yk * 1000 + 2.5  # pixel-is-point: corners half a pixel out
    xs = x0 + 2.5 + 5 * np.arange(1000)
    ys = ytop - 2.5 - 5 * np.arange(1000)
    z = rge_height(xs[None, :], ys[:, None]).astype(np.float32)
    if key == "0460_6440":
        z[RGE_HOLE] = -99999.0
    buf = io.StringIO()
    buf.write(
        f"ncols        1000\nnrows        1000\nxllcorner    {x0:.6f}\n"
        f"yllcorner    {ytop - 5000:.6f}\ncellsize     5.000000\n"
        "NODATA_value  -99999.00\n"
    )
    np.savetxt(buf, z, fmt="%.2f")
    return buf.getvalue()


def build_rge_alti(world: World) -> None:
    src = world.root / "rge_src" / RGE_ID
    inner = (
        src
        / "RGEALTI"
        / "1_DONNEES_LIVRAISON_2021-05-00073"
        / "RGEALTI_MNT_5M_ASC_LAMB93_IGN69_D033_20210503"
    )
    inner.mkdir(parents=True, exist_ok=True)
    for key in RGE_TILES:
        (inner / f"RGEALTI_FXX_{key}_MNT_LAMB93_IGN69.asc").write_text(asc_text(key))
    sup = src / "RGEALTI" / "3_SUPPLEMENTS_LIVRAISON_2021-05-00073" / "RGEALTI_MNT_5M_D033"
    sup.mkdir(parents=True, exist_ok=True)
    (sup / "RGEALTI_FXX_SRC.txt").write_text("source metadata (fixture)\n")
    (src / "LISEZ-MOI.txt").write_text("fixture of the IGN RGE ALTI 5 m delivery layout\n")
    out = world.root / "rgealti" / RGE_ID / f"{RGE_ID}.7z"
    out.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(out, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]) as z:
        z.writeall(src, RGE_ID)


TESSERA_TILES = ((-0.05, 44.95), (-0.05, 45.05), (0.05, 44.95), (0.05, 45.05))
TESSERA_PX = 100.0


def _tessera_grid(lon: float, lat: float) -> tuple[str, Affine, int, int]:
    """A tile's UTM grid: its zone's CRS, the 0.1 degree box's corners (origin unsnapped)."""
    epsg = 32600 + int((lon + 180) // 6) + 1
    t = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    xs, ys = t.transform([lon - 0.05, lon + 0.05] * 2, [lat + 0.05] * 2 + [lat - 0.05] * 2)
    x0, y0 = min(xs), max(ys)
    h, w = round((y0 - min(ys)) / TESSERA_PX), round((max(xs) - x0) / TESSERA_PX)
    return f"EPSG:{epsg}", Affine(TESSERA_PX, 0, x0, 0, -TESSERA_PX, y0), h, w


def build_tessera(world: World, year: int = YEAR) -> None:
    import hashlib

    root = world.root / "tessera" / "v1"
    rng = np.random.default_rng(11)
    rows, masks = [], []
    for lon, lat in TESSERA_TILES:
        g = f"grid_{lon:.2f}_{lat:.2f}"
        crs, tf, h, w = _tessera_grid(lon, lat)
        q = rng.integers(-127, 128, (h, w, 128)).astype(np.int8)
        s = rng.uniform(0.01, 0.1, (h, w)).astype(np.float32)
        s[:3, :4], s[-2:, -3:] = np.nan, 3.0e38  # no data, as the published files mark it
        d = root / "global_0.1_degree_representation" / str(year) / g
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{g}.npy", q)
        np.save(d / f"{g}_scales.npy", s)
        mask = root / "global_0.1_degree_tiff_all" / f"{g}.tiff"
        mask.parent.mkdir(parents=True, exist_ok=True)
        prof = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8"}
        with rasterio.open(mask, "w", crs=crs, transform=tf, **prof) as dst:
            dst.write(np.ones((1, h, w), np.uint8))
        emb, sc = d / f"{g}.npy", d / f"{g}_scales.npy"
        sha = {k: hashlib.sha256(f.read_bytes()).hexdigest() for k, f in (("e", emb), ("s", sc))}
        rows.append({"lat": lat, "lon": lon, "year": year, "file_size": emb.stat().st_size})
        rows[-1] |= {"hash": sha["e"], "scales_hash": sha["s"]}
        mask_sha = hashlib.sha256(mask.read_bytes()).hexdigest()
        masks.append({"lat": lat, "lon": lon, "hash": mask_sha, "file_size": mask.stat().st_size})
        world.tessera[(lon, lat)] = (q, s, crs, tf)
    reg = pd.DataFrame(rows)
    geo = gpd.GeoDataFrame(reg, geometry=gpd.points_from_xy(reg.lon, reg.lat), crs="EPSG:4326")
    geo.to_parquet(root / "registry.parquet", index=False)
    pd.DataFrame(masks).to_parquet(root / "landmasks.parquet", index=False)


def build(root: Path) -> World:
    world = World(Path(root))
    build_aef(world)
    build_copernicus(world)
    build_rge_alti(world)
    build_tessera(world)
    return world


def downloads(url: str, **kw) -> dict:
    """A ``downloads`` config section pointing every source at the fixture server."""
    return {
        "source_coop_url": f"{url}/{SC_PREFIX}",
        "gcs_url": f"{url}/{GCS_PREFIX}",
        "copernicus_glo30_url": f"{url}/copernicus",
        "rge_alti_url": f"{url}/rgealti",
        "tessera_url": f"{url}/tessera",
        "max_retry": 4,
        "retry_delay_s": 0.05,
        "timeout_s": 10,
        "block_px": 48,
        **kw,
    }


def aoi_section(source: str = "source_coop", dsm: dict | None = None, **kw) -> dict:
    """An ``aois.<name>`` config section for the fixture AOI."""
    return {
        "source": source,
        "year": YEAR,
        "aoi": {"bbox": list(AOI_BBOX), "crs": "EPSG:4326"},
        "dsm": dsm or {"source": "copernicus_glo30"},
        **kw,
    }
