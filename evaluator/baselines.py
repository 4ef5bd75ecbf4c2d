"""The evaluator's baseline: what an evaluation return is a fraction of.

``evaluator.baseline`` chooses it:

- ``auto`` (default): the env's oracle where it declares ``oracle_action()``, else none;
- ``oracle``: the env's oracle, and an error before Ray starts where it has none;
- a number, e.g. ``195.0``: a reference return (a published score, a planner's result);
- ``package.module:function``: a baseline policy, ``function(observation) -> action``
  on one raw observation, run on the same fixed episodes as the checkpoints;
- ``none``: no baseline; evaluations report returns without a fraction.

The oracle is asked through the env (``oracle_action()``), so it runs next to the
simulator: in-process, and behind ``sims.server`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evaluator.episodes import Act, mean_return, run_episodes
from sims.declarations import Declarations
from sims.registry import import_user_module
from turnwise.config import EnvConfig

BaselineKind = Literal["oracle", "reference", "policy", "none"]
VALID = "auto, oracle, none, a number (reference return) or package.module:function (a policy)"


@dataclass(frozen=True)
class Baseline:
    """One baseline; ``ORACLE`` is the env's declared oracle."""

    kind: BaselineKind
    name: str  # what evaluation rows call it: "oracle", "reference", "policy pkg.mod:fn"
    reference: float | None = None
    policy: Callable[[Any], Any] | None = None

    def act(self) -> Act | None:
        """The baseline as an ``Act`` over lockstep episodes (None: nothing to run)."""
        if self.kind == "oracle":
            return lambda obs, envs, masks: np.array([env.oracle_action() for env in envs])
        if self.kind == "policy":
            policy = self.policy
            return lambda obs, envs, masks: np.array([policy(o) for o in obs])
        return None

    def mean_return(self, env: EnvConfig, seeds: Sequence[int]) -> float | None:
        """The baseline's mean return on these episodes (the reference as given)."""
        act = self.act()
        if act is None:
            return self.reference
        return mean_return(run_episodes(env, seeds, act))


ORACLE = Baseline("oracle", "oracle")


def resolve_baseline(setting: str, declared: Declarations) -> Baseline:
    """``evaluator.baseline`` for an env with these declarations; ValueError naming
    the key and what is valid when it cannot be had."""
    value = str(setting).strip()
    if value in ("auto", "oracle"):
        if declared.oracle:
            return ORACLE
        if value == "oracle":
            raise ValueError(
                "evaluator.baseline=oracle, but the env declares no oracle_action(); "
                f"valid: {VALID}"
            )
        return Baseline("none", "none")
    if value == "none":
        return Baseline("none", "none")
    try:
        return Baseline("reference", "reference", reference=float(value))
    except ValueError:
        pass
    if ":" in value:
        return Baseline("policy", f"policy {value}", policy=import_policy(value))
    raise ValueError(f"evaluator.baseline={value!r} is not valid; valid: {VALID}")


def import_policy(name: str) -> Callable[[Any], Any]:
    """``package.module:function`` as the callable it names."""
    module_name, _, attr = name.partition(":")
    try:
        module = import_user_module(module_name)
    except ValueError as error:
        raise ValueError(f"evaluator.baseline={name!r}: {error}") from error
    policy = getattr(module, attr, None)
    if not callable(policy):
        found = "not callable" if policy is not None else "not found"
        raise ValueError(
            f"evaluator.baseline={name!r}: {attr!r} {found} in module {module_name!r} "
            f"({module.__file__})"
        )
    return policy
