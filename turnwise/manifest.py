"""The checkpoint manifest's contract: every field a reader relies on, with its type.

Readers are the learner on resume, the evaluator, serving and
``turnwise.policy.policy_from_checkpoint``. :func:`manifest_problems` says what is
wrong with a parsed ``manifest.json``; ``turnwise.checkpoint`` raises it as a
``CheckpointError`` naming the file.

>>> manifest_problems({"format": 1, "policy_version": "seven"})[3]
"policy_version must be an integer >= 0, got 'seven'"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from turnwise.config import NORMALIZER_KINDS
from turnwise.spaces import space_from_json

FORMAT_VERSION = 1

Check = Callable[[Any], str | None]  # None: the value is fine; else what it must be
_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(minimum: int) -> Check:
    return lambda v: None if _is_int(v) and v >= minimum else f"an integer >= {minimum}"


def positive(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a number > 0"


def number_or_null(value: Any) -> str | None:
    return None if value is None or _is_number(value) else "a number or null"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def one_of(choices: Sequence[str]) -> Check:
    return lambda v: None if v in choices else "one of " + ", ".join(map(repr, choices))


def sizes(value: Any) -> str | None:
    ok = isinstance(value, list) and all(_is_int(v) and v >= 1 for v in value)
    return None if ok else "a list of integers >= 1"


def space(value: Any) -> str | None:
    try:
        space_from_json(value)
    except Exception as error:  # any malformed description; gymnasium asserts, too
        return f"a space description turnwise/spaces.py reads ({type(error).__name__}: {error})"
    return None


# Every field a reader indexes; dotted keys are nested objects.
REQUIRED: dict[str, Check] = {
    "env_id": string,
    "env_version": string,
    "env_steps": integer(0),
    "policy_version": integer(0),
    "observation_space": space,
    "action_space": space,
    "config.env.id": string,
    "config.learner.hidden_sizes": sizes,
    "config.learner.normalizer.kind": one_of(NORMALIZER_KINDS),
    "config.learner.normalizer.window_env_steps": integer(1),
    "config.learner.normalizer.clip": positive,
}
# Fields read with a default where absent (``manifest.get``): typed where present.
OPTIONAL: dict[str, Check] = {
    "created": positive,
    "evaluate": boolean,
    "train_return": number_or_null,
}


def _field_problem(manifest: dict[str, Any], key: str, check: Check, required: bool) -> str | None:
    """What is wrong with dotted ``key``: missing (the outermost absent part), a parent
    that is not an object, or a value ``check`` refuses; None if nothing."""
    value: Any = manifest
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(value, dict):
            parent = ".".join(parts[:depth])
            return f"{parent} must be an object, got {type(value).__name__}"
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return f"{'.'.join(parts[: depth + 1])} is missing" if required else None
    must = check(value)
    return None if must is None else f"{key} must be {must}, got {value!r:.80}"


def manifest_problems(manifest: Any) -> list[str]:
    """What is wrong with a parsed manifest, one line per problem (empty: usable)."""
    if not isinstance(manifest, dict):
        return [f"must be a JSON object, got {type(manifest).__name__}"]
    if manifest.get("format") != FORMAT_VERSION:
        return [f"format must be {FORMAT_VERSION}, got {manifest.get('format')!r}"]
    checks = [(k, c, True) for k, c in REQUIRED.items()]
    checks += [(k, c, False) for k, c in OPTIONAL.items()]
    found = (_field_problem(manifest, key, check, required) for key, check, required in checks)
    return list(dict.fromkeys(p for p in found if p is not None))  # a bad parent once
