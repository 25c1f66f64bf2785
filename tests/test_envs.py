"""The conda envs of the rules, checked without conda (it cannot run here).

Every rule that runs a command has its own env, ``envs/<rule>.yaml``; each env parses, uses
conda-forge only and pins every package; and each provides every third-party module that the
code its rule runs imports. That last check reads the code, not a list: the rule's shell command
names an ``aefheight`` step, the CLI finds its function (a ``@step``), and the imports
reachable from that function (module-level imports of every module it loads, lazy imports of
the functions it can reach; and the command line's own) are collected from the package's
syntax trees. Rules are discovered by
``snakemake --list-rules`` and read from the workflow's rule files, so rules added later are
covered without touching this file.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG_ROOT = REPO / "workflow"
PKG = "aefheight"
ENVS = REPO / "envs"

# Import name -> conda-forge package names that provide it. Only names whose package is called
# differently; any other import `foo_bar` must be provided by a package `foo-bar` (or foo_bar).
PROVIDERS: dict[str, tuple[str, ...]] = {
    "torch": ("pytorch",),
    "sklearn": ("scikit-learn",),
    "yaml": ("pyyaml",),
    "PIL": ("pillow",),
    "skimage": ("scikit-image",),
    "cv2": ("opencv", "py-opencv"),
    "osgeo": ("gdal",),
    "ee": ("earthengine-api",),
    "google.auth": ("google-auth",),
    "google.cloud.storage": ("google-cloud-storage",),
    "matplotlib": ("matplotlib-base", "matplotlib"),
    "seaborn": ("seaborn-base", "seaborn"),
    "geopandas": ("geopandas", "geopandas-base"),
}
TORCH_RULES = {"train_net", "train_ridge", "predict", "predict_shard"}  # no other env carries torch
# conda-forge name -> PyPI name in pyproject.toml, where they differ
PYPI_NAMES = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "py-opencv": "opencv-python-headless",
    "seaborn-base": "seaborn",
}
# PyPI name -> the conda-forge version of a PyPI pin, where they differ: opencv-python's wheels
# add a fourth number (their own build) to OpenCV's version.
CONDA_VERSIONS = {"opencv-python-headless": lambda v: ".".join(v.split(".")[:3])}
# Packages an env may carry without importing them: the engines its imports load by name
# (GeoPackage/Parquet I/O, pandas' Markdown/LaTeX writers), smp's encoders, sklearn's scipy.
ENGINES = {
    "geopandas": {"pandas", "pyogrio", "pyarrow", "shapely"},
    "pandas": {"pyarrow", "tabulate", "jinja2"},
    "segmentation-models-pytorch": {"timm", "torchvision"},
    "scikit-learn": {"scipy"},  # pinned, as sklearn's solvers are scipy's
    "crepes": {"scipy"},  # crepes' own import
}
PIN = re.compile(r"^[A-Za-z0-9_.\-]+\s*(==?|>=|~=)\s*[0-9]")


# --- the workflow: rules, their envs and commands ------------------------------------------


@cache
def listed_rules() -> tuple[str, ...]:
    """Rule names as Snakemake itself lists them (every included rule file)."""
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    out = subprocess.run(
        [exe, "--list-rules", "--workflow-profile", "none"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tuple(
        line.strip() for line in out.stdout.splitlines() if re.fullmatch(r"\s*\w+\s*", line)
    )


@cache
def rule_blocks() -> dict[str, str]:
    """Rule name -> the text of its definition, from the Snakefiles and workflow/rules/*.smk."""
    blocks = {}
    for path in [
        REPO / "Snakefile",
        REPO / "workflow" / "Snakefile",
        *sorted((REPO / "workflow" / "rules").rglob("*.smk")),
    ]:
        text = path.read_text()
        starts = list(re.finditer(r"^(?:rule|checkpoint) (\w+):[ \t]*$", text, re.M))
        for m in starts:
            body = text[m.end() :]
            end = re.search(r"^\S", body, re.M)  # the next unindented line ends the block
            blocks[m.group(1)] = body[: end.start()] if end else body
    return blocks


def directive(block: str, name: str) -> str | None:
    """The text under a directive (`conda:`, `shell:`, ...) of a rule block."""
    m = re.search(rf"^    {name}:(.*(?:\n(?:        .*|\s*))*)", block, re.M)
    return m.group(1) if m else None


def env_path(rule: str) -> Path | None:
    conda = directive(rule_blocks()[rule], "conda")
    if conda is None:
        return None
    rel = ast.literal_eval(conda.strip().splitlines()[0].strip().rstrip(","))
    return ((REPO / "workflow" / "rules") / rel).resolve()


def commands(rule: str) -> list[tuple[str, str]]:
    """The `aefheight` steps of a rule's shell: [(module, function)]."""
    shell = directive(rule_blocks()[rule], "shell") or ""
    return [
        step_functions()[s] for s in re.findall(r"python -m aefheight ([a-z][a-z0-9-]*)", shell)
    ]


def command_rules() -> list[str]:
    """Rules that run a command (so need an env): all listed rules but command-less targets."""
    blocks = rule_blocks()
    return [
        r
        for r in listed_rules()
        if any(directive(blocks.get(r, ""), d) for d in ("shell", "script", "run", "wrapper"))
    ]


@cache
def step_functions() -> dict[str, tuple[str, str]]:
    """Step name -> (module, function) of the ``@step`` that runs it."""
    sys.path.insert(0, str(PKG_ROOT))
    try:
        from aefheight.cli import steps
    finally:
        sys.path.remove(str(PKG_ROOT))
    return {name: (ref.module, ref.function) for name, ref in steps().items()}


# --- the envs ------------------------------------------------------------------------------


@cache
def env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def env_pins(path: Path) -> dict[str, str]:
    """Package -> pinned version of an env (build strings dropped)."""
    return {
        m.group(1).lower(): m.group(2)
        for dep in env(path)["dependencies"]
        if (m := re.match(r"([A-Za-z0-9_.\-]+)=([0-9][^=]*)", dep))
    }


@cache
def pyproject_pins() -> dict[str, str]:
    """Package -> version of every `==` pin in pyproject.toml (dependencies and extras)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    deps = [*project["dependencies"], *(d for extra in extras for d in extra)]
    pins = (re.match(r"([A-Za-z0-9_.\-]+)==([0-9.]+)", d) for d in deps)
    return {m.group(1).lower(): m.group(2) for m in pins if m}


def env_packages(path: Path) -> set[str]:
    names = set()
    for dep in env(path)["dependencies"]:
        if isinstance(dep, str):
            names.add(re.match(r"[A-Za-z0-9_.\-]+", dep).group(0).lower())
    return names


# --- imports reachable from a CLI function -------------------------------------------------


class Module:
    """One module of the package: its syntax tree, top-level definitions and imports."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.is_pkg = path.name == "__init__.py"
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.defs = {
            n.name: n
            for n in self.tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        # names bound by module-level `from X import a as b`: b -> (X, a)
        self.bound: dict[str, tuple[str, str]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom):
                base = self.resolve(node)
                for a in node.names:
                    self.bound[a.asname or a.name] = (base, a.name)

    def binding(self, name: str) -> tuple[str, str]:
        """(module, attr) a module-level name is bound to; attr "" for a package module."""
        base, orig = self.bound[name]
        sub = f"{base}.{orig}"
        return (sub, "") if sub in modules() else (base, orig)

    def bound_module(self, name: str) -> tuple[str, str] | None:
        if name not in self.bound:
            return None
        b = self.binding(name)
        return b if not b[1] else None

    def resolve(self, node: ast.ImportFrom) -> str:
        """Absolute module name of a `from ... import` (relative ones resolved)."""
        if not node.level:
            return node.module or ""
        parts = self.name.split(".")
        parts = parts if self.is_pkg else parts[:-1]
        parts = parts[: len(parts) - node.level + 1]
        return ".".join([*parts, node.module] if node.module else parts)


@cache
def modules() -> dict[str, Module]:
    out = {}
    for path in sorted((PKG_ROOT / PKG).rglob("*.py")):
        rel = path.relative_to(PKG_ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = Module(".".join(parts), path)
    return out


def _module_level_imports(mod: Module):
    """Imports that run when the module is imported: not those in function bodies (lazy) nor
    under `if TYPE_CHECKING:` (never run); class bodies do run."""
    stack = list(mod.tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def reachable_imports(entry_module: str, entry_function: str) -> set[str]:
    """Third-party modules imported when `entry_function` of `entry_module` runs."""
    mods = modules()
    third: set[str] = set()
    seen: set[tuple[str, str | None]] = set()
    todo: list[tuple[str, str | None]] = [(entry_module, None), (entry_module, entry_function)]

    def load(mod: Module, node: ast.Import | ast.ImportFrom) -> dict[str, tuple[str, str]]:
        """Record what an import loads; return the names it binds: name -> (module, attr),
        attr "" when the name is a module of the package."""
        bound = {}
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PKG:
                    todo.append((a.name, None))
                    bound[a.asname or a.name] = (a.name, "")
                else:
                    third.add(a.name)
            return bound
        if node.module == "__future__":
            return bound
        base = mod.resolve(node)
        if base.split(".")[0] != PKG:
            third.update(f"{base}.{a.name}" for a in node.names)
            return bound
        todo.append((base, None))
        for a in node.names:
            sub = f"{base}.{a.name}"
            bound[a.asname or a.name] = (sub, "") if sub in mods else (base, a.name)
            if sub in mods:  # `from . import figures`: the module is imported
                todo.append((sub, None))
        return bound

    def use(binding: tuple[str, str], attr: str | None) -> None:
        module, name = binding
        if name:
            todo.append((module, name))
        else:  # a module: the attribute used, or all of it when used bare
            todo.append((module, attr or "*"))

    while todo:
        key = todo.pop()
        if key in seen or key[0] not in mods:
            continue
        seen.add(key)
        name, what = key
        mod = mods[name]
        if what is None:  # importing the module runs its module-level code (and its parents')
            parent = name.rpartition(".")[0]
            if parent:
                todo.append((parent, None))
            for node in _module_level_imports(mod):
                load(mod, node)
            continue
        targets = mod.defs.values() if what == "*" else [mod.defs.get(what)]
        for target in filter(None, targets):
            nodes = [n for st in target.body for n in ast.walk(st)]
            nodes += [n for d in target.decorator_list for n in ast.walk(d)]
            if isinstance(target, ast.ClassDef):
                nodes += [n for b in target.bases for n in ast.walk(b)]
            local: dict[str, tuple[str, str]] = {}
            for node in nodes:  # lazy imports of a reachable function, and what they bind
                if isinstance(node, ast.Import | ast.ImportFrom):
                    local.update(load(mod, node))
            attribute_bases = set()
            for node in nodes:
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    b = local.get(node.value.id) or mod.bound_module(node.value.id)
                    if b and not b[1]:
                        use(b, node.attr)
                        attribute_bases.add(id(node.value))
            for node in nodes:
                if not isinstance(node, ast.Name) or id(node) in attribute_bases:
                    continue
                if node.id in local:
                    use(local[node.id], None)
                elif node.id in mod.defs and node.id != target.name:
                    todo.append((name, node.id))
                elif node.id in mod.bound:
                    use(mod.binding(node.id), None)
    return {m for m in third if m.split(".")[0] not in sys.stdlib_module_names}


def providers(module: str) -> tuple[str, ...]:
    """conda-forge packages that provide an imported module (longest known prefix first)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in PROVIDERS:
            return PROVIDERS[".".join(parts[:i])]
    top = parts[0].lower()
    return (top.replace("_", "-"), top)


def rule_imports(rule: str) -> set[str]:
    out = reachable_imports(f"{PKG}.cli", "main")  # the command line itself (tyro)
    for module, func in commands(rule):
        out |= reachable_imports(module, func)
    return out


# --- the tests ----------------------------------------------------------------------------


def test_rules_are_found():
    rules = listed_rules()
    assert {"synthesize", "tile", "train_net", "predict", "evaluate"} <= set(rules)
    assert set(rules) <= set(rule_blocks()), "a rule defined outside the Snakefiles and rules"


@pytest.mark.parametrize("rule", command_rules())
def test_every_rule_has_its_own_env(rule):
    path = env_path(rule)
    assert path is not None, f"rule {rule} has no conda: directive"
    assert path == (ENVS / f"{rule}.yaml").resolve(), f"rule {rule} must use envs/{rule}.yaml"
    assert path.is_file(), f"{path} is missing"
    assert directive(rule_blocks()[rule], "run") is None, "run: blocks ignore conda: envs"


def test_no_env_is_shared_or_orphaned():
    used = [env_path(r) for r in command_rules()]
    assert len(used) == len(set(used))
    assert {p.resolve() for p in ENVS.glob("*.yaml")} == set(used), "an env no rule uses"


@pytest.mark.parametrize("path", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_env_parses_and_pins_conda_forge_packages(path):
    spec = env(path)
    assert spec["channels"] == ["conda-forge"]
    deps = spec["dependencies"]
    assert deps and all(isinstance(d, str) for d in deps), "conda packages only (no pip:)"
    for dep in deps:
        assert PIN.match(dep), f"{path.name}: {dep!r} is not pinned"
    assert any(d.startswith("python=3.11") for d in deps)
    assert len(env_packages(path)) == len(deps), "a package is listed twice"


@pytest.mark.parametrize("rule", command_rules())
def test_env_provides_every_module_the_rule_imports(rule):
    assert commands(rule), f"rule {rule} runs no `python -m aefheight` command"
    have = env_packages(env_path(rule))
    missing = {m: providers(m) for m in rule_imports(rule) if not set(providers(m)) & have}
    assert not missing, f"envs/{rule}.yaml lacks packages for imports {missing}"


def test_the_import_check_sees_lazy_and_module_level_imports():
    """A self-check of the analysis on code whose imports are known."""
    top = lambda mods: {m.split(".")[0] for m in mods}  # noqa: E731
    reach = lambda step: top(reachable_imports(*step_functions()[step]))  # noqa: E731
    train = reach("train-ridge")
    # module level (torch), lazy in a reachable function (sklearn, smp)
    assert {"torch", "segmentation_models_pytorch", "sklearn"} <= train
    assert "sklearn" not in reach("train-net")
    synth = reach("synthesize")
    assert {"numpy", "rasterio", "scipy"} <= synth
    assert not synth & {"torch", "sklearn", "matplotlib", "geopandas"}
    # the split map reaches matplotlib; the tiling reaches no torch (dataset.py is apart)
    assert "matplotlib" in reach("split-map")
    assert "torch" not in reach("tile")
    assert "tyro" in top(reachable_imports(f"{PKG}.cli", "main"))


def test_training_env_pins_a_cuda_pytorch():
    deps = env(ENVS / "train_net.yaml")["dependencies"]
    (torch,) = [d for d in deps if re.match(r"pytorch\b", d)]
    assert re.fullmatch(r"pytorch=[0-9.]+=cuda\*", torch), torch
    assert "CONDA_OVERRIDE_CUDA" in (ENVS / "train_net.yaml").read_text()


@pytest.mark.parametrize("path", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_exactly_the_venvs_versions(path):
    """One source of versions: pyproject.toml. An env pins each package as the venv does."""
    pins = pyproject_pins()
    for name, version in env_pins(path).items():
        if name == "python":
            continue
        pypi = PYPI_NAMES.get(name, name)
        assert pypi in pins, f"{path.name}: {name} is not pinned in pyproject.toml"
        want = CONDA_VERSIONS.get(pypi, str)(pins[pypi])
        assert version == want, f"{path.name}: {name}={version}, pyproject {pins[pypi]}"


@pytest.mark.parametrize("rule", command_rules())
def test_env_carries_only_what_the_rule_imports(rule):
    wanted = {p for m in rule_imports(rule) for p in providers(m)} | {"python"}
    wanted |= {e for p in list(wanted) for e in ENGINES.get(p, ())}
    extra = env_packages(env_path(rule)) - wanted
    assert not extra, f"envs/{rule}.yaml carries {sorted(extra)}, which its code never imports"


@pytest.mark.parametrize("rule", [r for r in command_rules() if r not in TORCH_RULES])
def test_no_torch_outside_training_and_prediction(rule):
    needs = {m for m in rule_imports(rule) if m.split(".")[0] == "torch"}
    assert not needs, f"the code of rule {rule} imports torch ({sorted(needs)})"
    assert "pytorch" not in env_packages(env_path(rule))
