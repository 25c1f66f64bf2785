"""The mark of a workflow step: what ``python -m aefheight <step>`` can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., None])


def step(fn: F) -> F:
    """Mark ``fn`` as the step of the rule of the same name (``aefheight.cli`` finds it).

    A step is keyword-only; each parameter is one of the rule's inputs, outputs or params by
    name, and its type makes the flag (see :mod:`aefheight.cli`).
    """
    return fn
