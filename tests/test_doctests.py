"""The examples in the docstrings run, as written (Gymnasium's habit: doctests in CI)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "sims",
    "sims.registry",
    "sims.seeds",
    "sims.warehouse.env",
    "evaluator.coverage",
    "evaluator.metrics",
    "turnwise.config",
    "turnwise.api",
    "learner.progress",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
