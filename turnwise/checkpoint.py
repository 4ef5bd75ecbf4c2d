"""The checkpoint format: weights, optimizer, normalizer and a JSON manifest.

A checkpoint is a directory (or S3 prefix) ``step-<env_steps>`` in a checkpoint
store, written atomically by the store with ``manifest.json`` as its completion
marker:

- ``weights.pt``   the policy's state dict (normalizer buffers included), tensors only
- ``trainer.pt``   optimizer state and counters, tensors and numbers only
- ``manifest.json`` env id and version, spaces, env steps, policy version, config

Both ``.pt`` files load with ``torch.load(weights_only=True)``: no arbitrary object
is ever unpickled. ``latest`` and ``best`` pointers name checkpoints in the store.

Loading validates: the manifest against its contract (``turnwise.manifest``), both
``.pt`` files, and the weights against the policy the manifest describes. Anything
unusable raises :class:`CheckpointError`, naming the file and what is wrong.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

import torch

from turnwise.checkpoint_store import CHECKPOINT_MARKER, CheckpointStore
from turnwise.manifest import FORMAT_VERSION, manifest_problems
from turnwise.policy import policy_from_checkpoint

__all__ = ["FORMAT_VERSION", "Checkpoint", "CheckpointError", "load_checkpoint", "read_manifest"]

WEIGHTS, TRAINER = "weights.pt", "trainer.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


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


def _brief(error: BaseException) -> str:
    """An error as one short line: its type and message."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text:.300}"


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
        WEIGHTS: _tensor_bytes({k: v.detach().cpu() for k, v in weights.items()}),
        TRAINER: _tensor_bytes(trainer),
        CHECKPOINT_MARKER: json.dumps(manifest, indent=2, sort_keys=True).encode(),
    }
    uri = store.save(name, files)
    store.set_pointer("latest", name)
    retain(store, keep_last)
    return uri


def retain(store: CheckpointStore, keep_last: int, protect: Collection[str] = ()) -> None:
    """Delete the checkpoints older than the newest ``keep_last`` (0: keep all), except
    those ``latest`` and ``best`` name and those in ``protect``."""
    if keep_last <= 0:
        return
    protected = {store.pointer("latest"), store.pointer("best"), *protect}
    for old in store.list()[:-keep_last]:
        if old not in protected:
            store.delete(old)


def resolve(store: CheckpointStore, name: str | None = None) -> str | None:
    """A checkpoint name: ``name`` itself, a pointer (``latest``/``best``), or the newest."""
    if name in (None, "latest", "best"):
        pointed = store.pointer(name or "latest")
        if pointed is not None or name == "best":
            return pointed
        names = store.list()
        return names[-1] if names else None
    return name


def _parse_manifest(data: bytes, path: str) -> dict[str, Any]:
    """``manifest.json`` (at ``path``) parsed and checked against its contract."""
    try:
        manifest = json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    problems = manifest_problems(manifest)
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    return manifest


def _load_pt(files: dict[str, bytes], filename: str, uri: str) -> dict[str, Any]:
    """A ``.pt`` file of the checkpoint as a dict, loaded without unpickling objects."""
    path = f"{uri}/{filename}"
    if filename not in files:
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        state = torch.load(io.BytesIO(files[filename]), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a truncated or corrupt file
        raise CheckpointError(f"{path}: truncated or corrupt ({_brief(error)})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: must hold a dict, got {type(state).__name__}")
    return state


def _check_policy(checkpoint: Checkpoint, uri: str) -> None:
    """The weights fit the policy the manifest describes (keys and shapes); checked on
    the meta device, so nothing is allocated, initialized or copied."""
    weights = checkpoint.weights
    bad = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{uri}/{WEIGHTS}: entries that are not tensors: {bad}")
    shadow = replace(checkpoint, weights={k: v.to("meta") for k, v in weights.items()})
    try:
        with torch.device("meta"):
            policy_from_checkpoint(shadow)
    except RuntimeError as error:  # load_state_dict: missing, unexpected or mis-shaped
        details = " ".join(line.strip() for line in str(error).splitlines()[1:])
        raise CheckpointError(
            f"{uri}/{WEIGHTS}: does not fit the policy {CHECKPOINT_MARKER} describes: "
            f"{details or str(error):.300}"
        ) from error
    except Exception as error:  # the spaces or learner config build no policy
        raise CheckpointError(
            f"{uri}/{CHECKPOINT_MARKER}: describes no policy this code builds ({_brief(error)})"
        ) from error


def read_manifest(store: CheckpointStore, name: str) -> dict[str, Any]:
    """Checkpoint ``name``'s validated manifest, without loading its tensors."""
    return _parse_manifest(
        store.read(name, CHECKPOINT_MARKER), f"{store.uri_of(name)}/{CHECKPOINT_MARKER}"
    )


def load_checkpoint(store: CheckpointStore, name: str | None = None) -> Checkpoint:
    """Checkpoint ``name`` (see :func:`resolve`), validated; FileNotFoundError if there
    is none, :class:`CheckpointError` if it is unusable."""
    resolved = resolve(store, name)
    if resolved is None:
        raise FileNotFoundError(f"no checkpoint in {store.uri}")
    files, uri = store.load(resolved), store.uri_of(resolved)
    checkpoint = Checkpoint(
        name=resolved,
        manifest=_parse_manifest(files[CHECKPOINT_MARKER], f"{uri}/{CHECKPOINT_MARKER}"),
        weights=_load_pt(files, WEIGHTS, uri),
        trainer=_load_pt(files, TRAINER, uri),
    )
    _check_policy(checkpoint, uri)
    return checkpoint
