import hashlib

import numpy as np
import rasterio
from aefheight.core import aef
from aefheight.core.schema import make
from aefheight.inputs.synthetic import (
    Scene,
    SyntheticSettings,
    coarse_dem_window,
    make_fields,
    write_synthetic,
)
from scipy import ndimage


def _digest(path):
    with rasterio.open(path) as ds:
        return hashlib.sha256(ds.read().tobytes()).hexdigest()


def test_same_seed_same_rasters_other_seed_differs(tmp_path, tiny_aoi, tiny_settings):
    write_synthetic(tiny_settings, tmp_path / "e.tif", tmp_path / "d.tif")
    assert _digest(tmp_path / "e.tif") == _digest(tiny_aoi["embeddings"])
    assert _digest(tmp_path / "d.tif") == _digest(tiny_aoi["dsm"])
    other = make(SyntheticSettings, width=256, height=192, seed=4, holes=2)
    write_synthetic(other, tmp_path / "e2.tif", tmp_path / "d2.tif")
    assert _digest(tmp_path / "e2.tif") != _digest(tiny_aoi["embeddings"])


def test_rasters_share_a_projected_10m_grid_and_aef_form(tiny_aoi):
    with rasterio.open(tiny_aoi["embeddings"]) as e, rasterio.open(tiny_aoi["dsm"]) as d:
        assert e.crs.to_epsg() == 32630 and e.res == (10.0, 10.0)
        assert (e.crs, e.transform, e.shape) == (d.crs, d.transform, d.shape)
        assert e.count == 64 and e.dtypes[0] == "int8" and e.nodata == -128
        assert d.dtypes[0] == "float32" and d.nodata is not None
        codes, z = e.read(), d.read(1, masked=True)
    valid = aef.valid_mask(codes)
    assert 0.9 < valid.mean() < 1.0  # an embedding gap exists, as in AEF
    assert 0 < z.mask.sum() < 0.05 * z.size  # a few DSM holes
    x = aef.dequantize(codes)[:, valid]
    norms = np.linalg.norm(x, axis=0)
    np.testing.assert_allclose(norms, 1.0, atol=0.05)  # unit-length vectors, as AEF


def test_east_side_sits_higher_by_about_the_shift():
    def east_minus_west(shift):
        f = make_fields(make(SyntheticSettings, width=512, height=256, seed=1, shift_m=shift))
        return f.terrain[:, 512 * 7 // 10 :].mean() - f.terrain[:, : 512 * 3 // 10].mean()

    # same seed, same noise: the difference is the regional trend alone (logistic, ~0.95 x)
    assert 125 < east_minus_west(150.0) - east_minus_west(0.0) < 155


def test_no_band_carries_the_height(tiny_aoi):
    with rasterio.open(tiny_aoi["embeddings"]) as e, rasterio.open(tiny_aoi["dsm"]) as d:
        x, z = aef.dequantize(e.read()), d.read(1, masked=True)
    ok = ~z.mask & ~np.isnan(x[0])
    r = [abs(np.corrcoef(x[b][ok], z.data[ok])[0, 1]) for b in range(64)]
    # Bands follow elevation through a non-linear code, as real AEF bands correlate with
    # terrain, but none is a linear copy of the height.
    assert max(r) < 0.95


def _elevation_features(s: SyntheticSettings):
    from aefheight.inputs.synthetic import ELEVATION_CODE_TERMS, features

    f = make_fields(s)
    f.landcover[:] = 0
    f.objects[:] = 0

    def elev_feats(z):
        f.terrain[:] = z
        return features(s, f, f.terrain, 0, 0)[10, 10, 7 : 7 + ELEVATION_CODE_TERMS]

    return elev_feats


def test_elevation_code_moves_at_every_height_of_the_code_range():
    """No cap: every 20 m step from 0 to 700 m moves the code by at least a third of the
    largest step's change (the old tanh encoding kept 0.1 % of its slope above 200 m)."""
    from aefheight.inputs.synthetic import ELEVATION_CODE_TERMS, elevation_code

    c = 100.0
    z = np.arange(0.0, 700.0, 20.0)
    code = np.stack(elevation_code(z, c), axis=-1)  # (heights, terms)
    assert code.shape[-1] == ELEVATION_CODE_TERMS
    step = np.linalg.norm(np.diff(code, axis=0), axis=1)
    assert step.min() > step.max() / 3, step


def test_elevation_is_decodable_from_the_bands_above_the_old_cap():
    """A pixel's bands still tell apart heights 20 m apart at 300 m (the old cap was 130 m)."""
    s = make(
        SyntheticSettings, width=64, height=64, seed=0, noise=0.0, holes=0, embedding_gap=False
    )
    elev_feats = _elevation_features(s)
    low = np.abs(elev_feats(40.0) - elev_feats(60.0)).sum()
    high = np.abs(elev_feats(300.0) - elev_feats(320.0)).sum()
    assert high > 0.3 * low


def test_nuisance_is_spatially_coherent_not_white():
    # parcels carry one offset each: neighbouring pixels share it, so a box mean keeps it
    f = make_fields(make(SyntheticSettings, width=300, height=300, seed=0, parcel_px=30))
    off = f.parcel_offsets.reshape(3, -1)
    ids = np.unique(off, axis=1, return_inverse=True)[1].reshape(300, 300)
    assert len(np.unique(ids)) > 50
    same = (ids[:, 1:] == ids[:, :-1]).mean()
    assert same > 0.9  # a pixel's right neighbour is in its parcel ~29 times out of 30
    sizes = np.bincount(ids.ravel())
    assert np.median(sizes[sizes > 0]) > 0.3 * 30 * 30


def test_any_window_equals_that_window_of_the_whole_aoi():
    """What lets synthesize stream tile by tile: a window computed alone is the whole's."""
    s = make(SyntheticSettings, width=700, height=530, seed=6, holes=3)
    scene = Scene(s)
    whole, dem = make_fields(s), coarse_dem_window(scene, 0, 530, 0, 700)
    for r0, r1, c0, c1 in ((0, 256, 0, 700), (101, 355, 257, 613), (500, 530, 690, 700)):
        part = scene.fields(r0, r1, c0, c1)
        for name in ("terrain", "objects", "landcover", "dsm_valid", "emb_valid"):
            assert np.array_equal(getattr(part, name), getattr(whole, name)[r0:r1, c0:c1]), name
        assert np.array_equal(part.nuisance, whole.nuisance[:, r0:r1, c0:c1])
        assert np.array_equal(coarse_dem_window(scene, r0, r1, c0, c1), dem[r0:r1, c0:c1])


def test_smooth_fields_have_zero_mean_and_unit_sd_over_the_aoi():
    scene = Scene(make(SyntheticSettings, width=640, height=400, seed=8))
    for field in (scene.forest, scene.nuisance[2], scene.terrain[0][1]):
        v = field.window(0, 400, 0, 640).astype(np.float64)
        assert abs(v.mean()) < 1e-6 and abs(v.std() - 1.0) < 1e-6
        assert 0.1 < np.abs(np.diff(v, axis=1)).mean() * field.scale < 5  # smooth over ~scale


def test_coarse_dem_is_deterministic_and_leaves_the_other_rasters_unchanged(
    tmp_path, tiny_aoi, tiny_settings
):
    # written without the coarse DEM (above): same embeddings and DSM with it
    write_synthetic(tiny_settings, tmp_path / "e.tif", tmp_path / "d.tif")
    assert _digest(tmp_path / "d.tif") == _digest(tiny_aoi["dsm"])
    assert _digest(tmp_path / "e.tif") == _digest(tiny_aoi["embeddings"])
    write_synthetic(tiny_settings, tmp_path / "e.tif", tmp_path / "d.tif", None, tmp_path / "c.tif")
    assert _digest(tmp_path / "c.tif") == _digest(tiny_aoi["coarse_dem"])
    with rasterio.open(tiny_aoi["coarse_dem"]) as c, rasterio.open(tiny_aoi["dsm"]) as d:
        assert (c.crs, c.transform, c.shape) == (d.crs, d.transform, d.shape)
        assert c.tags()["resolution_m"] == "30.0" and c.nodata == d.nodata
        assert (c.read(1) != c.nodata).all()  # void-filled, as GLO-30


def test_coarse_dem_errs_as_glo30_does():
    """Without noise: over open land it is the terrain, in forests it holds the canopy share
    (below the DSM, above the terrain), and it is smooth at 30 m (3 x 3 px cells)."""
    s = make(SyntheticSettings, width=384, height=256, seed=2, dem_noise_m=0.0, dem_error_m=0.0)
    f = make_fields(s)
    c = coarse_dem_window(Scene(s), 0, 256, 0, 384)
    dsm = f.terrain + f.objects
    interior = np.zeros(c.shape, bool)  # away from land-cover edges (the 30 m averaging)
    for lc in (0, 1):
        same = ndimage.minimum_filter(f.landcover, 7) == ndimage.maximum_filter(f.landcover, 7)
        interior |= same & (f.landcover == lc)
    open_ = interior & (f.landcover == 0)
    forest = interior & (f.landcover == 1)
    assert abs(np.mean(c[open_] - f.terrain[open_])) < 0.3
    share = np.mean(c[forest] - f.terrain[forest]) / np.mean(f.objects[forest])
    assert 0.35 < share < 0.45  # dem_canopy_fraction 0.4
    assert np.mean(c[forest] - dsm[forest]) < -5  # below the canopy top: the DSM it misses
    # 10 m detail is gone: pixel-to-pixel steps are far smaller than the DSM's
    assert np.abs(np.diff(c, axis=1)).mean() < 0.5 * np.abs(np.diff(dsm, axis=1)).mean()
    noisy = coarse_dem_window(
        Scene(make(SyntheticSettings, width=384, height=256, seed=2)), 0, 256, 0, 384
    )
    assert 1.0 < np.std(noisy - c) < 3.0  # white 1 m per cell + smooth 1.5 m
