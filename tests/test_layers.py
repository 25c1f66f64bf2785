"""The package's layers: a stage imports only from the stages before it, and nothing cycles.

Every import counts, lazy ones (inside a function) included: a lazy import hides a cycle from
Python, not from a reader. The order is :data:`aefheight.STAGES`; the top modules (``cli``,
``config``, ``guards``, ``calibration``) may import any stage, and no stage imports them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from aefheight import STAGES

PKG = Path(__file__).resolve().parents[1] / "workflow" / "aefheight"


def module_name(path: Path, root: Path) -> str:
    """``aefheight.report.tables`` for ``<root>/aefheight/report/tables.py``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every ``aefheight`` module ``path`` imports, at any depth of its syntax tree."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    known = {module_name(p, root) for p in (root / "aefheight").rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            # `from aefheight.report import tables` imports the module aefheight.report.tables
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` where c is a function
                name = name.rpartition(".")[0]
            if name.startswith("aefheight") and name != me:
                found.add(name)
    return found


def rank(module: str) -> int:
    """The module's stage index; the top modules rank above every stage."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return len(STAGES) if len(parts) > 1 else -1  # the package's __init__ is below everything


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    return {module_name(p, root): imports(p, root) for p in (root / "aefheight").rglob("*.py")}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a stage's module from a later stage or from a top module."""
    top = len(STAGES)
    return sorted(
        f"{a} imports {b}"
        for a, bs in edges.items()
        for b in bs
        if rank(a) < top and rank(b) > rank(a)
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_import_goes_down_the_stages():
    assert upward(graph(PKG.parent)) == []


def test_no_import_cycle_even_through_lazy_imports():
    assert cycles(graph(PKG.parent)) == []


def test_every_stage_is_a_subpackage():
    assert sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists()) == sorted(STAGES)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"aefheight/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_lazy_upward_import_and_a_cycle_are_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "aefheight/core/__init__.py": "",
            "aefheight/core/a.py": "def f():\n    from aefheight.train import fit\n",
            "aefheight/train/__init__.py": "",
            "aefheight/train/fit.py": "from ..core import a\n",
            "aefheight/cli.py": "from aefheight.train.fit import x\n",
        },
    )
    edges = graph(root)
    assert upward(edges) == ["aefheight.core.a imports aefheight.train.fit"]
    assert cycles(edges) == [["aefheight.core.a", "aefheight.train.fit"]]


def test_each_stage_has_one_rule_file_included_in_stage_order():
    snakefile = (PKG.parent / "Snakefile").read_text(encoding="utf-8")
    included = re.findall(r'^include: "rules/(\w+)\.smk"', snakefile, flags=re.M)
    assert included[0] == "common"
    stages = included[1:]
    assert stages == [s for s in STAGES if s in stages], "rule files out of stage order"
    assert set(stages) == {p.stem for p in (PKG.parent / "rules").glob("*.smk")} - {"common"}
    assert set(STAGES) - set(stages) <= {"core", "models"}  # stages without a rule of their own


def test_tests_mirror_the_stages():
    tests = Path(__file__).resolve().parent
    for stage in STAGES:
        assert list((tests / stage).glob("test_*.py")), f"no tests/{stage}/test_*.py"
