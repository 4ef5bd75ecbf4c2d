"""What a simulator declares about itself, read in one place.

An env (its ``unwrapped`` instance) may declare, as attributes or methods:

==========================  ===============================================================
``version``                 a string that changes when the dynamics change
``reward_components``       names of the parts in ``info["reward_components"]`` (they sum
                            to the reward)
``state_variables``         name -> ``"episode"`` (resets with each episode) or
                            ``"persistent"`` (carries over between episodes)
``reset_options``           the ``reset(options=...)`` keys it takes and reports in info
``milestones``              milestone component -> the success component it leads to
``oracle_action()``         the known-optimal action in the current state (the evaluator's
                            baseline)
``state_key()``             a hashable key of the current state, the unit of state coverage
``state_key_fields``        names of the key's fields; ``("row", "col", ...)`` marks a
                            grid cell, drawn as a visitation grid
``reachable_state_count()`` how many keys the current episode can reach (coverage's
                            denominator)
==========================  ===============================================================

The evaluator and the pipeline use only these, never an env's internals, so an env
in-process and the same env behind ``sims.server`` (which carries the declarations in
its handshake and the keys and oracle actions in its replies) are treated alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

StateScope = Literal["episode", "persistent"]
STATE_SCOPES: frozenset[str] = frozenset(get_args(StateScope))


@dataclass(frozen=True)
class Declarations:
    version: str | None = None
    reward_components: tuple[str, ...] = ()
    state_variables: Mapping[str, str] = field(default_factory=dict)
    reset_options: frozenset[str] = frozenset()
    milestones: Mapping[str, str] = field(default_factory=dict)
    oracle: bool = False
    state_key: bool = False
    state_key_fields: tuple[str, ...] = ()
    reachable_states: bool = False

    @property
    def persistent_state(self) -> tuple[str, ...]:
        return tuple(k for k, scope in self.state_variables.items() if scope == "persistent")

    @property
    def grid(self) -> bool:
        """State keys start with a (row, col) grid cell."""
        return self.state_key_fields[:2] == ("row", "col")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "reward_components": list(self.reward_components),
            "state_variables": dict(self.state_variables),
            "reset_options": sorted(self.reset_options),
            "milestones": dict(self.milestones),
            "oracle": self.oracle,
            "state_key": self.state_key,
            "state_key_fields": list(self.state_key_fields),
            "reachable_states": self.reachable_states,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Declarations:
        """From a handshake spec; keys a server leaves out mean "not declared"."""
        return cls(
            version=data.get("version"),
            reward_components=tuple(data.get("reward_components", ())),
            state_variables=dict(data.get("state_variables", {})),
            reset_options=frozenset(data.get("reset_options", ())),
            milestones=dict(data.get("milestones", {})),
            oracle=bool(data.get("oracle", False)),
            state_key=bool(data.get("state_key", False)),
            state_key_fields=tuple(data.get("state_key_fields", ())),
            reachable_states=bool(data.get("reachable_states", False)),
        )


def declarations(env: Any) -> Declarations:
    """The declarations of an env (wrapped or not; a remote env reports its server's)."""
    base = getattr(env, "unwrapped", env)
    if isinstance(getattr(base, "declarations", None), Declarations):
        return base.declarations
    version = getattr(base, "version", None)
    return Declarations(
        version=version if isinstance(version, str) and version else None,
        reward_components=tuple(getattr(base, "reward_components", ())),
        state_variables=dict(getattr(base, "state_variables", {})),
        reset_options=frozenset(getattr(base, "reset_options", ())),
        milestones=dict(getattr(base, "milestones", {})),
        oracle=callable(getattr(base, "oracle_action", None)),
        state_key=callable(getattr(base, "state_key", None)),
        state_key_fields=tuple(getattr(base, "state_key_fields", ())),
        reachable_states=callable(getattr(base, "reachable_state_count", None)),
    )
