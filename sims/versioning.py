"""Simulator version strings, derived from the simulator's code and its config."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
