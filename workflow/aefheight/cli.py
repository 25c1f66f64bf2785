"""The ``aefheight`` command line: one subcommand per step, derived from the step's signature.

A step is a keyword-only function of a stage's module, marked :func:`~aefheight.core.steps.step`
and named as the rule that runs it: rule ``plot_seeds`` runs ``python -m aefheight plot-seeds``,
which calls ``aefheight.report.figures.plot_seeds``. Its parameters are the rule's inputs,
outputs and params by name: tyro turns each into a flag (a ``Path`` is ``--store-dsm PATH``, a
list of paths takes several, a settings dataclass takes the config section as JSON and the
schema fills what it leaves out, so a step run by hand behaves as in the workflow). There is
no table of steps: they are found in the package's source (``@step`` before a ``def``), so
only the chosen step's module is imported (each rule's conda env holds its own step's
libraries, not every step's).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import errno
import importlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import types
import typing
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from aefheight.core.errors import AefHeightError, first_line
from aefheight.core.schema import from_mapping, parse_json

log = logging.getLogger("aefheight")
PKG = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class StepRef:
    """Where a step is: its module and function."""

    module: str
    function: str

    def about(self) -> str:
        """The first line of the step's docstring."""
        path = PKG.parent.joinpath(*self.module.split(".")).with_suffix(".py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name == self.function:
                return (ast.get_docstring(node) or "").split("\n", 1)[0]
        return ""


def _module_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


STEP_DEF = re.compile(r"^@step\s*\ndef (\w+)\(", re.MULTILINE)  # a text search: every job runs it


@cache
def steps() -> dict[str, StepRef]:
    """Every step of the package by subcommand name (functions marked ``@step``)."""
    found: dict[str, StepRef] = {}
    for path in sorted(PKG.rglob("*.py")):
        for m in STEP_DEF.finditer(path.read_text(encoding="utf-8")):
            found[m.group(1).replace("_", "-")] = StepRef(_module_of(path), m.group(1))
    return found


def step_function(name: str) -> Callable[..., Any]:
    """The function of subcommand ``name`` (imports its module only)."""
    ref = steps()[name]
    fn: Callable[..., Any] = getattr(importlib.import_module(ref.module), ref.function)
    return fn


def _json_kind(kind: Any) -> Callable[[str], Any] | None:
    """How to build a JSON flag's value: a settings dataclass or a JSON object; None: no JSON."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind) and hasattr(kind, "SECTION"):
        return lambda text: from_mapping(kind, parse_json(text))
    if typing.get_origin(kind) is dict and typing.get_args(kind)[1:] == (Any,):
        return lambda text: parse_json(text, "the JSON flag")
    return None


def _json_constructor(kind: Any) -> Any:
    """Tyro's constructor of a JSON flag (a settings section, optional or not); None: others."""
    from tyro.constructors import PrimitiveConstructorSpec

    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if optional:  # `Settings | None`: the section of an optional step part (a shard)
        args = [k for k in typing.get_args(kind) if k is not type(None)]
        kind = args[0] if len(args) == 1 else None
    build = _json_kind(kind)
    if build is None:
        return None
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar="JSON",
        instance_from_str=lambda args: None if optional and args[0] == "null" else build(args[0]),
        is_instance=lambda x: x is None or isinstance(x, dict) or dataclasses.is_dataclass(x),
        str_from_instance=lambda x: [json.dumps(vars(x) if dataclasses.is_dataclass(x) else x)],
    )


def _registry() -> Any:
    from tyro.constructors import ConstructorRegistry, PrimitiveTypeInfo

    registry = ConstructorRegistry()

    @registry.primitive_rule
    def json_flags(info: PrimitiveTypeInfo) -> Any:
        return _json_constructor(info.type)

    return registry


def _usage() -> str:
    width = max(len(n) for n in steps())
    lines = [f"  {n:<{width}}  {ref.about()}" for n, ref in sorted(steps().items())]
    return (
        "usage: aefheight [--log-level LEVEL] STEP [flags]   (STEP --help lists its flags)\n\n"
        + __doc__.splitlines()[0]
        + "\n\nsteps:\n"
        + "\n".join(lines)
    )


def _low_disk(argv: Sequence[str], below: int = 64 * 2**20) -> str:
    """A note on the fullest filesystem among the paths in ``argv``, if nearly full."""
    for value in argv:
        if value.startswith("-") or "/" not in value:
            continue
        folder = next((q for q in (Path(value), *Path(value).parents) if q.is_dir()), None)
        if folder is not None and shutil.disk_usage(folder).free < below:
            free = shutil.disk_usage(folder).free // 2**20
            return f"; disk nearly full: {folder} has {free} MiB free"
    return ""


WRITE_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST)


def _error_line(argv: Sequence[str], exc: BaseException) -> str | None:
    """The one line a user error ends with; None for a bug (the traceback is kept)."""
    if isinstance(exc, AefHeightError):
        return str(exc)
    first = first_line(exc)
    if type(exc).__module__.startswith("rasterio"):  # RasterioError, WarpOperationError, CPLE_*
        return f"raster I/O failed: {first}{_low_disk(argv)}"
    if type(exc).__module__.startswith(("pyarrow", "pyogrio")):  # a damaged index or GeoPackage
        return f"cannot read a table ({type(exc).__name__}): {first}; rerun the step that wrote it"
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return f"cannot write {exc.filename or 'output'}: {exc.strerror}"
    return None


def _unwind(signum: int, frame: Any) -> None:
    """End the step on SIGTERM/SIGINT (Snakemake, SLURM, Ctrl-C) through its ``finally``s.

    So :func:`~aefheight.core.files.scratch_path` removes the partial file. Later signals are
    ignored (Ctrl-C reaches the step and Snakemake terminates it too: a second one must not
    interrupt the clean-up); a forked child (a DataLoader worker) takes the default action.
    """
    if os.getpid() != _STEP_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


_STEP_PID = os.getpid()  # the step's own process (forked children inherit the handler)


def _front(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options before the step's name, the step's name and its own flags."""
    front = argparse.ArgumentParser(prog="aefheight", add_help=False)
    front.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    front.add_argument("step", nargs="?")
    return front.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; a user error ends with one line on stderr and exit code 2."""
    if argv is None:  # a process of its own (tests call main in theirs with argv)
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays so
                signal.signal(sig, _unwind)
        argv = sys.argv[1:]
    opts, rest = _front(argv)
    if opts.step not in steps():
        known = opts.step in (None, "-h", "--help") or opts.step.startswith("-")
        print(_usage(), file=sys.stdout if known else sys.stderr)
        if not known:
            print(f"aefheight: error: no step {opts.step!r}", file=sys.stderr)
        return 0 if known else 2
    logging.basicConfig(
        level=opts.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    threads = rest[rest.index("--threads") + 1] if "--threads" in rest[:-1] else "1"
    os.environ.setdefault("GDAL_NUM_THREADS", threads)
    # GDAL's block cache defaults to 5 % of RAM and fills with every block a step reads, so a
    # step's memory would grow with the AOI (up to 6 GB on a 128 GB node). Each step reads a
    # block once or a few times in a row; 256 MB keeps those re-reads cached at any AOI size.
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    import tyro

    try:
        tyro.cli(
            step_function(opts.step),
            args=rest,
            prog=f"aefheight {opts.step}",
            registry=_registry(),
        )
    except Exception as exc:
        line = _error_line(rest, exc)
        if line is None:
            raise
        print(f"aefheight {opts.step}: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
