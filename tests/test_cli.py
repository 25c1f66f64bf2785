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
            "--settings",
            "{}",
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


def test_a_steps_help_lists_every_flag_from_its_signature():
    import inspect

    from aefheight.cli import step_function

    proc = subprocess.run(
        [sys.executable, "-m", "aefheight", "train-net", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for name in inspect.signature(step_function("train-net")).parameters:
        assert "--" + name.replace("_", "-") in proc.stdout


def test_the_step_list_and_an_unknown_step(capsys):
    assert main([]) == 0
    assert "train-net" in capsys.readouterr().out
    assert main(["train-nets"]) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == "aefheight: error: no step 'train-nets'"
    )


def test_a_missing_flag_is_refused_before_the_step_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "aefheight", "merge-patches", "--index", str(tmp_path / "i")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--indexes" in proc.stderr
    assert not (tmp_path / "i").exists()


def test_an_optional_settings_section_is_a_json_flag(tmp_path, capsys):
    """`--sharding` of a sharded twin reaches the step (a missing raster is then the error)."""
    rc = main(
        [
            "tile",
            "--settings",
            "{}",
            "--shard",
            "r0c1",
            "--sharding",
            '{"shard_px": 256}',
            "--embeddings",
            str(tmp_path / "nope.tif"),
            "--dsm",
            "y.tif",
            *tile_flags(tmp_path, "z.tif"),
        ]
    )
    assert rc == 2
    assert "nope.tif" in capsys.readouterr().err.strip().splitlines()[-1]
