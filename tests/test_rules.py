"""One contract per rule: every declared file reaches the step by name, in one hop.

A rule ``foo_bar`` runs ``python -m aefheight foo-bar`` (a sharded or k-fold twin,
``<step>_shard`` or ``<step>_fold``, runs the same step with ``--shard`` or ``--fold``); each of
its named inputs and outputs is passed as the flag of the same name (``--store-dsm
{input.store_dsm}``), which is a parameter of the step's function of that name; every flag the
rule passes is one, and every parameter without a default is passed. No rule passes a folder
for the code to find file names in, and the package reads no wildcard back out of a path.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from aefheight.cli import step_function, steps
from test_envs import command_rules, directive, rule_blocks

REPO = Path(__file__).resolve().parents[1]
# a twin rule runs its step for one shard, one k-fold strip or a seed ensemble
TWINS = ("_shard", "_fold", "_ensemble")


def _names(rule: str, what: str) -> list[str]:
    """Names of a rule's `input:`/`output:` entries; "" for an unnamed one."""
    text = directive(rule_blocks()[rule], what) or ""
    out = []
    for line in text.splitlines():
        m = re.match(r"^ {8}(\w+)=", line)
        if m:
            out.append(m.group(1))
        elif re.match(r"^ {8}(?!unpack\()[\"'\w]", line):  # a positional entry
            out.append("")
    return out


def step_of(rule: str) -> str:
    """The step a rule runs: its own name, or its twin's."""
    name = rule.replace("_", "-")
    if name in steps():
        return name
    base = next((rule.removesuffix(t) for t in TWINS if rule.endswith(t)), rule)
    return base.replace("_", "-")


@pytest.mark.parametrize("rule", command_rules())
def test_each_declared_file_is_one_parameter_of_the_rules_step(rule):
    shell = directive(rule_blocks()[rule], "shell") or ""
    sub = step_of(rule)
    assert sub in steps(), f"rule {rule}: no step `{sub}` (a function marked @step)"
    assert f"python -m aefheight {sub} " in shell, f"rule {rule} must run `aefheight {sub}`"
    params = inspect.signature(step_function(sub)).parameters
    for what in ("input", "output"):
        for name in _names(rule, what):
            assert name, f"rule {rule}: every {what} needs a name (it becomes a flag)"
            flag = "--" + name.replace("_", "-")
            assert re.search(rf"{flag} \{{{what}\.{name}\}}", shell), (
                f"rule {rule}: {what}.{name} must be passed as `{flag} {{{what}.{name}}}`"
            )
            assert name in params, f"aefheight {sub} has no {flag} for {what}.{name}"
    flags = {f.removeprefix("--").replace("-", "_") for f in re.findall(r"--[a-z][\w-]*", shell)}
    assert flags <= set(params), f"rule {rule} passes flags {sub} lacks: {flags - set(params)}"
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert required <= flags, f"rule {rule} leaves out required flags {required - flags}"
    if "unpack(" in (directive(rule_blocks()[rule], "input") or ""):
        assert "optional_flags" in rule_blocks()[rule], (
            f"rule {rule}: unpacked (optional) inputs travel as flags via optional_flags"
        )


def test_every_step_is_run_by_a_rule():
    run = {step_of(rule) for rule in command_rules()}
    assert set(steps()) == run


def test_no_rule_passes_a_folder_for_the_code_to_fill():
    for rule, block in rule_blocks().items():
        assert "os.path.dirname" not in block, f"rule {rule} passes a folder, not its files"


def test_no_wildcard_is_read_back_out_of_a_path():
    pattern = re.compile(
        r"removeprefix\(\"seed\"\)|rsplit\(\"_seed\"|\.parent\.parent\.name|split\(\"_seed"
    )
    for path in sorted((REPO / "workflow" / "aefheight").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                pytest.fail(f"{path.name}:{n} reads a name out of a path: {line.strip()}")
