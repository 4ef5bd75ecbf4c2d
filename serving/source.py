"""Where the served policy comes from, and loading it.

A source is a checkpoint store plus either a pinned checkpoint name or a pointer
(``best``, falling back to ``latest``; or ``latest``). :func:`parse_source` accepts

- a checkpoint directory or S3 prefix (``.../step-000000400000``): pinned to it;
- a run directory (``RUN_DIR`` of ``python -m learner``) or run store (``store.uri``,
  ``s3://bucket/prefix``): its checkpoint store, which is ``checkpoint.uri`` from its
  ``config.json`` when set, else its ``checkpoints``;
- a store (a local directory, ``file:///path`` or ``s3://bucket/prefix``): its pointer.

A pinned checkpoint is validated by :func:`parse_source`; a pointer's checkpoints are
validated as they are loaded (a bad one is logged and not served).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import torch
from gymnasium import spaces

from turnwise.checkpoint import load_checkpoint, resolve
from turnwise.checkpoint_store import CHECKPOINT_MARKER, CheckpointStore, open_store
from turnwise.policy import ActorCritic, policy_from_checkpoint
from turnwise.policy.observations import flat_size
from turnwise.spaces import space_from_json

logger = logging.getLogger(__name__)

Pointer = Literal["best", "latest"]


@dataclass(frozen=True)
class PolicySource:
    """A checkpoint store and what to serve from it: ``checkpoint`` if pinned, else ``pointer``."""

    store_uri: str
    pointer: Pointer = "best"
    checkpoint: str | None = None

    @cached_property
    def store(self) -> CheckpointStore:
        return open_store(self.store_uri)

    def describe(self) -> dict[str, Any]:
        return {"store": self.store_uri, "pointer": self.pointer, "pinned": self.checkpoint}

    def current_name(self) -> str | None:
        """The checkpoint to serve now: the pinned one, or the pointer's (``best`` falls
        back to ``latest``, then to the newest complete checkpoint); None if none exists."""
        if self.checkpoint is not None:
            return self.checkpoint
        name = resolve(self.store, self.pointer)
        if name is None and self.pointer == "best":
            name = resolve(self.store, "latest")
        return name

    def with_target(self, target: str | None, pointer: Pointer) -> PolicySource:
        """The same store, pinned to ``target`` (a checkpoint name), or following a pointer."""
        if target in ("best", "latest"):
            return replace(self, pointer=target, checkpoint=None)
        return replace(self, pointer=pointer, checkpoint=target)


def _split_uri(uri: str) -> tuple[str, str]:
    head, _, tail = uri.rstrip("/").rpartition("/")
    return head, tail


def _is_checkpoint(uri: str) -> bool:
    parent, name = _split_uri(uri)
    if not parent or not name:
        return False
    try:
        open_store(parent).read(name, CHECKPOINT_MARKER)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _run_store(run_dir: Path) -> str | None:
    """The checkpoint store of a run directory, or None if ``run_dir`` is not one."""
    config_file = run_dir / "config.json"
    if config_file.is_file():
        try:
            uri = json.loads(config_file.read_text()).get("checkpoint", {}).get("uri") or ""
        except (json.JSONDecodeError, AttributeError):
            uri = ""
        return uri or str(run_dir / "checkpoints")
    if (run_dir / "checkpoints").is_dir() or (run_dir / "run.json").is_file():
        return str(run_dir / "checkpoints")
    return None


def _s3_run_store(uri: str) -> str | None:
    """The checkpoint store of a run store on S3 (``store.uri``: it holds
    ``config.json``), or None if ``uri`` is not one."""
    from turnwise.run_store import RunStore

    run = RunStore(uri)
    data = run.read_or_none("config.json")
    if data is None:
        return None
    try:
        checkpoint_uri = json.loads(data).get("checkpoint", {}).get("uri") or ""
    except (json.JSONDecodeError, AttributeError):
        checkpoint_uri = ""
    return checkpoint_uri or run.uri_of("checkpoints")


def parse_source(target: str, pointer: Pointer = "best") -> PolicySource:
    """The :class:`PolicySource` that ``target`` (a path or URI) names; see the module doc.

    A pinned checkpoint is loaded and validated here, so ``python -m serving`` refuses a
    bad one before Ray starts (``turnwise.checkpoint.CheckpointError``, naming the file).
    """
    source = _locate(target, pointer)
    if source.checkpoint is not None:
        load_checkpoint(source.store, source.checkpoint)
    return source


def _locate(target: str, pointer: Pointer) -> PolicySource:
    if pointer not in ("best", "latest"):
        raise ValueError(f"pointer must be 'best' or 'latest', got {pointer!r}")
    parts = urlsplit(target)
    if parts.scheme == "s3":
        if _is_checkpoint(target):
            parent, name = _split_uri(target)
            return PolicySource(parent, pointer, name)
        return PolicySource(_s3_run_store(target.rstrip("/")) or target.rstrip("/"), pointer)
    local = Path(parts.path if parts.scheme == "file" else target).expanduser().resolve()
    if parts.scheme not in ("", "file"):
        raise ValueError(f"unsupported checkpoint URI {target!r}: use a path or s3://")
    if not local.exists():
        raise FileNotFoundError(f"no checkpoint, run directory or store at {local}")
    if (local / CHECKPOINT_MARKER).is_file():
        return PolicySource(str(local.parent), pointer, local.name)
    return PolicySource(_run_store(local) or str(local), pointer)


@dataclass(frozen=True)
class LoadedPolicy:
    """One loaded checkpoint: the model in eval mode and what its manifest says."""

    model: ActorCritic
    name: str
    uri: str
    manifest: dict[str, Any]
    observation_space: spaces.Space
    action_space: spaces.Space
    loaded_at: float

    @property
    def policy_version(self) -> int:
        return int(self.manifest["policy_version"])

    @property
    def env_version(self) -> str:
        return str(self.manifest["env_version"])

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "checkpoint": {"name": self.name, "uri": self.uri, "created": m.get("created")},
            "env_id": m.get("env_id"),
            "env_version": self.env_version,
            "policy_version": self.policy_version,
            "env_steps": int(m["env_steps"]),
            "observation_space": m["observation_space"],
            "action_space": m["action_space"],
            "loaded_at": self.loaded_at,
        }

    def same_spaces(self, other: LoadedPolicy) -> bool:
        return (
            self.manifest["observation_space"] == other.manifest["observation_space"]
            and self.manifest["action_space"] == other.manifest["action_space"]
        )


def load_policy(source: PolicySource, name: str) -> LoadedPolicy:
    """Load checkpoint ``name`` of ``source``'s store (blocking I/O: call it off the loop)."""
    checkpoint = load_checkpoint(source.store, name)
    obs_space = space_from_json(checkpoint.manifest["observation_space"])
    act_space = space_from_json(checkpoint.manifest["action_space"])
    model = policy_from_checkpoint(checkpoint)
    for param in model.parameters():
        param.requires_grad_(False)
    with torch.inference_mode():  # warm up, so the first request does not pay for it
        model.act_recurrent(np.zeros((1, flat_size(obs_space)), np.float32), model.initial_state(1))
    policy = LoadedPolicy(
        model=model,
        name=checkpoint.name,
        uri=source.store.uri_of(checkpoint.name),
        manifest={k: v for k, v in checkpoint.manifest.items() if k != "config"},
        observation_space=obs_space,
        action_space=act_space,
        loaded_at=time.time(),
    )
    logger.info(
        "loaded %s (policy version %d, env %s)",
        policy.uri,
        policy.policy_version,
        policy.env_version,
    )
    return policy
