"""AOI geometry -> target grid: UTM zone, snapping, polygon files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aefheight.core.errors import ConfigError
from aefheight.core.schema import from_mapping
from aefheight.inputs.sources.aoi import blocks, target_grid, utm_crs_for, utm_zone_name
from aefheight.inputs.sources.spec import AOISpec, DSMSettings, RealAOISettings


def spec(**kw) -> AOISpec:
    return from_mapping(AOISpec, kw, "aoi")


def test_utm_zone_of_a_point():
    assert utm_crs_for(-0.5, 45.0).to_epsg() == 32630
    assert utm_crs_for(0.5, 45.0).to_epsg() == 32631
    assert utm_crs_for(-70.0, -33.0).to_epsg() == 32719
    assert utm_zone_name(utm_crs_for(0.5, 45.0)) == "31N"


def test_grid_is_snapped_to_10m_and_covers_the_aoi():
    aoi = target_grid("t", spec(bbox=[-0.009, 44.996, 0.006, 45.004]))
    g = aoi.grid
    assert g.crs.to_epsg() == 32630  # centroid west of 0 deg
    assert g.transform.a == 10 and g.transform.e == -10
    assert g.transform.c % 10 == 0 and g.transform.f % 10 == 0
    x0, y0, x1, y1 = g.bounds
    px0, py0, px1, py1 = aoi.polygon.bounds
    assert x0 <= px0 < x0 + 10 and x1 - 10 < px1 <= x1 and y0 <= py0 < y0 + 10
    assert y1 - 10 < py1 <= y1
    inside = aoi.inside(g.transform, (g.height, g.width))
    assert 0.9 < inside.mean() < 1.0  # the lon/lat box is a slightly rotated quad in UTM


def test_bbox_in_lambert93_and_forced_target_crs():
    aoi = target_grid(
        "t", spec(bbox=[463000, 6437000, 464000, 6438000], crs="EPSG:2154", target_crs="EPSG:2154")
    )
    assert aoi.grid.crs.to_epsg() == 2154
    assert (aoi.grid.width, aoi.grid.height) == (100, 100)
    # the ground area: 1 km² on the map, Lambert-93 shrinks distances by ~0.06 % here
    assert aoi.area_km2 == pytest.approx(1.0012, abs=1e-4)


def test_polygon_file_features_are_unioned(tmp_path):
    gj = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[0.1, 45.0], [0.11, 45.0], [0.11, 45.01], [0.1, 45.01], [0.1, 45.0]]
                    ],
                },
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[0.11, 45.0], [0.12, 45.0], [0.12, 45.01], [0.11, 45.01], [0.11, 45.0]]
                    ],
                },
            },
        ],
    }
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(gj))
    aoi = target_grid("t", spec(path=str(path)))
    assert aoi.grid.crs.to_epsg() == 32631
    assert aoi.polygon.geom_type == "Polygon"  # two touching squares became one
    assert aoi.area_km2 == pytest.approx(0.02 * 78.8 * 1.11, rel=0.05)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({}, "exactly one of path"),
        ({"bbox": [1, 2, 3, 4], "path": "x.gpkg"}, "exactly one of path"),
        ({"bbox": [3, 2, 1, 4]}, "xmin < xmax"),
        ({"path": "does/not/exist.gpkg"}, "does not exist"),
    ],
)
def test_bad_aoi_is_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        target_grid("t", spec(**kw), "aois.t.aoi")


def test_blocks_tile_the_grid_exactly():
    aoi = target_grid("t", spec(bbox=[-0.009, 44.996, 0.006, 45.004]))
    seen = np.zeros((aoi.grid.height, aoi.grid.width), int)
    for b in blocks(aoi.grid, 48):
        seen[b.row : b.row + b.height, b.col : b.col + b.width] += 1
        assert b.transform.c == aoi.grid.transform.c + 10 * b.col
    assert (seen == 1).all()


def test_settings_name_bad_keys():
    real = {"source": "source_coop", "year": 2020, "aoi": {"bbox": [0, 0, 1, 1]}}
    with pytest.raises(ConfigError, match=r"aois.x.dsm.archives must list"):
        from_mapping(RealAOISettings, {**real, "dsm": {"source": "rge_alti"}}, "aois.x")
    with pytest.raises(ConfigError, match=r"unknown config key aois\.x\.dsm\.tiles"):
        from_mapping(DSMSettings, {"tiles": 3}, "aois.x.dsm")
    with pytest.raises(ConfigError, match=r"aois\.x\.synthetic does not apply here"):
        from_mapping(
            RealAOISettings,
            {**real, "source": "synthetic", "dsm": {"source": "copernicus_glo30"}},
            "aois.x",
        )
