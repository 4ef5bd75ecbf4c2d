"""The checkpoint format: weights, optimizer, normalizer and a JSON manifest.

A checkpoint is a directory (or S3 prefix) ``step-<env_steps>`` in a checkpoint
store, written atomically by the store with ``manifest.json`` as its completion
marker:

- ``weights.pt``   the policy's state dict (normalizer buffers included), tensors only
- ``trainer.pt``   optimizer state and counters, tensors and numbers only
- ``manifest.json`` env id and version, spaces, env steps, policy version, config

Both ``.pt`` files load with ``torch.load(weights_only=True)``: no arbitrary object
is ever unpickled. ``latest`` and ``best`` pointers name checkpoints in the store.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from turnwise.checkpoint_store import CHECKPOINT_MARKER, CheckpointStore

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    name: str
    manifest: dict[str, Any]
    weights: dict[str, torch.Tensor]
    trainer: dict[str, Any]


def checkpoint_name(env_steps: int) -> str:
    return f"step-{env_steps:012d}"


def _tensor_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _safe_load(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save_checkpoint(
    store: CheckpointStore,
    weights: dict[str, torch.Tensor],
    trainer: dict[str, Any],
    manifest: dict[str, Any],
    keep_last: int = 0,
) -> str:
    """Write one checkpoint, move ``latest`` to it, drop old ones beyond ``keep_last``."""
    name = checkpoint_name(int(manifest["env_steps"]))
    manifest = {"format": FORMAT_VERSION, "created": time.time(), **manifest, "name": name}
    files = {
        "weights.pt": _tensor_bytes({k: v.detach().cpu() for k, v in weights.items()}),
        "trainer.pt": _tensor_bytes(trainer),
        CHECKPOINT_MARKER: json.dumps(manifest, indent=2, sort_keys=True).encode(),
    }
    uri = store.save(name, files)
    store.set_pointer("latest", name)
    if keep_last > 0:
        protected = {name, store.pointer("best")}
        for old in store.list()[:-keep_last]:
            if old not in protected:
                store.delete(old)
    return uri


def resolve(store: CheckpointStore, name: str | None = None) -> str | None:
    """A checkpoint name: ``name`` itself, a pointer (``latest``/``best``), or the newest."""
    if name in (None, "latest", "best"):
        pointed = store.pointer(name or "latest")
        if pointed is not None or name == "best":
            return pointed
        names = store.list()
        return names[-1] if names else None
    return name


def load_checkpoint(store: CheckpointStore, name: str | None = None) -> Checkpoint:
    resolved = resolve(store, name)
    if resolved is None:
        raise FileNotFoundError(f"no checkpoint in {store.uri}")
    files = store.load(resolved)
    manifest = json.loads(files[CHECKPOINT_MARKER])
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {resolved} has format {manifest.get('format')}")
    return Checkpoint(
        name=resolved,
        manifest=manifest,
        weights=_safe_load(files["weights.pt"]),
        trainer=_safe_load(files["trainer.pt"]),
    )
