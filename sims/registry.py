"""Env ids, including a user's own: Gymnasium's ``module:EnvId`` convention.

``env.id=my_pkg.envs:Corridor-v0`` imports ``my_pkg.envs`` (which registers
``Corridor-v0`` with ``gymnasium.register``) and then makes ``Corridor-v0``. The
driver, every rollout actor, the evaluator, ``sims.server`` and ``sims.check`` all
resolve ids through :func:`env_spec`, so a plug-in env behaves the same in each.

>>> env_spec("Warehouse-v0").id
'Warehouse-v0'
>>> split_env_id("my_pkg.envs:Corridor-v0")
('my_pkg.envs', 'Corridor-v0')
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import gymnasium
from gymnasium.envs.registration import EnvSpec

import sims  # noqa: F401  (registers turnwise's simulators)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class EnvIdError(ValueError):
    """An env id that names no importable module or no registered env."""


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """``(module, registered id)``; module is None for a plain id."""
    module, sep, name = env_id.rpartition(":")
    return (module, name) if sep else (None, env_id)


def import_user_module(module: str) -> ModuleType:
    """Import a user's module (an env's, a baseline policy's), with an error that
    names it and why it failed."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EnvIdError(
            f"module {module!r} cannot be imported ({error}); it must be importable "
            "where turnwise starts (installed, or on PYTHONPATH / the working directory)"
        ) from error
    except Exception as error:  # the user's module raised while it was imported
        raise EnvIdError(
            f"module {module!r} raised {type(error).__name__} on import: {error}"
        ) from error


def env_spec(env_id: str) -> EnvSpec:
    """The Gymnasium spec of ``env_id`` (plain or ``module:id``), importing its module."""
    module, name = split_env_id(env_id)
    if module is not None:
        try:
            import_user_module(module)
        except EnvIdError as error:
            raise EnvIdError(f"env.id {env_id!r}: {error}") from error
    if name not in gymnasium.registry:
        where = f"importing {module!r} did not register it" if module else "it is not registered"
        hint = "" if module else "; a user env is named as 'package.module:EnvId'"
        raise EnvIdError(f"env.id {env_id!r}: no Gymnasium env {name!r} ({where}){hint}")
    return gymnasium.spec(name)


def user_module_path(name: str) -> str | None:
    """Where the top-level module of ``package.module:Name`` (an env id, a baseline
    policy) lives, when it must be shipped to Ray workers because it is neither
    installed nor part of turnwise; None otherwise."""
    module, _ = split_env_id(name)
    if module is None:
        return None
    top = import_user_module(module.split(".")[0])
    origin = Path(getattr(top, "__file__", None) or next(iter(getattr(top, "__path__", [])), ""))
    if not origin.name:
        return None
    installed = any(part in ("site-packages", "dist-packages") for part in origin.parts)
    if installed or origin.resolve().is_relative_to(PROJECT_ROOT):
        return None
    return str(origin.parent if origin.name == "__init__.py" else origin)
