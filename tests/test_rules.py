"""One contract per rule: every declared file reaches the code by name, in one hop.

A rule ``foo_bar`` runs ``python -m aefheight foo-bar``; each of its named inputs and outputs is
passed as the flag of the same name (``--store-dsm {input.store_dsm}``); the CLI's step table
declares the same names; no rule passes a folder for the code to find file names in, and the
package reads no wildcard back out of a path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aefheight.cli import STEPS
from test_envs import command_rules, directive, rule_blocks

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("rule", command_rules())
def test_each_declared_file_is_one_flag_of_the_rules_own_subcommand(rule):
    shell = directive(rule_blocks()[rule], "shell") or ""
    sub = rule.replace("_", "-")
    assert f"python -m aefheight {sub} " in shell, f"rule {rule} must run `aefheight {sub}`"
    step = STEPS[sub]
    for what in ("input", "output"):
        for name in _names(rule, what):
            assert name, f"rule {rule}: every {what} needs a name (it becomes a flag)"
            flag = "--" + name.replace("_", "-")
            assert re.search(rf"{flag} \{{{what}\.{name}\}}", shell), (
                f"rule {rule}: {what}.{name} must be passed as `{flag} {{{what}.{name}}}`"
            )
            declared = (*step.inputs, *step.lists) if what == "input" else step.outputs
            assert name in declared, f"aefheight {sub} has no {flag} for {what}.{name}"
    if "unpack(" in (directive(rule_blocks()[rule], "input") or ""):
        assert step.optional and "optional_flags" in rule_blocks()[rule], (
            f"rule {rule}: unpacked (optional) inputs travel as flags via optional_flags"
        )


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
