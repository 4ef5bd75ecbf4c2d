"""Simulator version strings, derived from the simulator's code and its config."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal


def source_digest(package_dir: Path) -> str:
    """SHA-256 over every ``*.py`` file of a package, in path order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def simulator_version(name: str, package_dir: Path, config: Mapping[str, Any]) -> str:
    """``NAME+CODE8.CONFIG8``: changes when the simulator's code or its config changes.

    Two environments with equal versions give equal transitions for equal seeds
    and actions, which is what replay and checkpoint compatibility rely on.
    """
    return f"{name}+{source_digest(package_dir)[:8]}.{config_digest(config)[:8]}"


VersionSource = Literal["declared", "package", "source"]


@functools.cache
def distribution_of(top_level_module: str) -> str | None:
    """The installed distribution that provides a top-level module, if any (looked
    up once per process: scanning every installed distribution takes ~0.2 s)."""
    dists = importlib.metadata.packages_distributions().get(top_level_module, [])
    return dists[0] if dists else None


def env_version(env_id: str, kwargs: Mapping[str, Any], env: Any) -> tuple[str, VersionSource]:
    """The version stamped on an env's transitions and checkpoints, and where it came
    from: the env's own ``version`` ("declared"); else the version of the installed
    distribution its class comes from, with the kwargs ("package": CartPole-v1 ->
    ``CartPole-v1+gymnasium-1.2.2.<kwargs8>``); else a digest of the source file of
    its class ("source": changes with any edit, even a comment)."""
    declared = getattr(env.unwrapped, "version", None)
    if isinstance(declared, str) and declared:
        return declared, "declared"
    cls = type(env.unwrapped)
    kw = config_digest(dict(kwargs))[:8]
    dist = distribution_of(cls.__module__.split(".")[0])
    if dist:
        return f"{env_id}+{dist}-{importlib.metadata.version(dist)}.{kw}", "package"
    source = Path(inspect.getfile(cls)).read_bytes()
    return f"{env_id}+src-{hashlib.sha256(source).hexdigest()[:8]}.{kw}", "source"
