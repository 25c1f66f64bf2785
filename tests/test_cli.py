import subprocess
import sys

from aefheight.cli import main
from helpers import tile_flags


def test_config_error_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(
        [
            "tile",
            "--settings",
            '{"patch_size": 100}',
            "--embeddings",
            "x.tif",
            "--dsm",
            "y.tif",
            *tile_flags(tmp_path, "z.tif"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [
        "aefheight tile: error: config key tiling.patch_size = 100 is invalid: 100 is not a "
        "multiple of 32 (Patch side in px; a multiple of 32 (the encoders' output stride; "
        "U-Net++ needs it))"
    ]


def test_missing_raster_names_the_file(tmp_path, capsys):
    rc = main(
        [
            "tile",
            "--embeddings",
            str(tmp_path / "nope.tif"),
            "--dsm",
            "y.tif",
            *tile_flags(tmp_path, "z.tif"),
        ]
    )
    assert rc == 2
    assert "nope.tif" in capsys.readouterr().err


def test_unwritable_output_is_a_clear_error(tmp_path):
    # A results "folder" that is a file cannot be written, even by root.
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aefheight",
            "synthesize",
            "--aoi",
            "demo",
            "--settings",
            '{"width": 64, "height": 64}',
            "--embeddings",
            str(blocker / "e.tif"),
            "--dsm",
            str(blocker / "d.tif"),
            "--landcover",
            str(blocker / "l.tif"),
            "--coarse-dem",
            str(blocker / "c.tif"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "error: cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a folder"
