"""The learner as a Ray actor: placed by resources, fed batches by reference.

:class:`LearnerActor` is a plain class around :class:`learner.ppo.PPOLearner` (tests
run it in-process); the driver wraps it with ``ray.remote`` and places it by
``learner.num_cpus``, ``learner.num_gpus`` and ``learner.resources``. It takes a
rollout batch by reference (``[ref]``: the batch moves from the actor's node straight
to the learner's, never through the driver), updates, and returns a small summary
and the new weights as two objects, so the driver hands the weights on to the rollout
actors without reading them. It writes its own checkpoints to the checkpoint store.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from gymnasium import spaces
from ray.exceptions import RayError

from learner.ppo import PPOLearner
from turnwise.config import PPOConfig
from turnwise.run_store import node_record
from turnwise.schema import column_numpy

EPISODE_COLUMNS = ("terminated", "truncated", "episode_return", "step")


def finished_episodes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows of ``batch`` that end an episode, with only what episode statistics need."""
    done = column_numpy(batch, "terminated") | column_numpy(batch, "truncated")
    columns = batch.select(list(EPISODE_COLUMNS))
    return columns.filter(pa.array(done)) if done.any() else columns.slice(0, 0)


class LearnerActor:
    """Role: ``update([batch_ref], progress) -> (summary, weights)``; ``state()``."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: PPOConfig,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.learner = PPOLearner(observation_space, action_space, config, config.device)
        if state is not None:
            self.learner.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        """Where the learner runs and on which device, and its policy version."""
        return {**node_record(), "device": str(self.learner.device), "version": self.version}

    @property
    def version(self) -> int:
        return self.learner.version

    def weights(self) -> tuple[int, dict[str, np.ndarray]]:
        return self.learner.weights()

    def update(
        self, refs: list[ray.ObjectRef | pa.RecordBatch], progress: float
    ) -> tuple[dict[str, Any], tuple[int, dict[str, np.ndarray]] | None]:
        """Fetch and consume one batch (``refs[0]``: a reference, or the batch itself in
        process). The summary says ``failed`` (the batch's actor failed: the driver reads
        why from the reference), ``dropped`` (older than ``max_policy_lag``) or holds the
        update's ``stats`` (with ``fetch_ms``, the wait for the batch, and ``update_ms`` and
        ``update_cpu_ms``, the update's wall-clock and CPU time); the weights are None
        unless the policy changed."""
        fetch_started = time.perf_counter()
        try:
            batch = ray.get(refs[0]) if isinstance(refs[0], ray.ObjectRef) else refs[0]
        except RayError:
            return {"failed": True}, None
        fetch_ms = 1e3 * (time.perf_counter() - fetch_started)
        summary: dict[str, Any] = {"failed": False, "rows": batch.num_rows}
        lag = self.learner.version - int(column_numpy(batch, "policy_version").min())
        if lag > self.learner.config.max_policy_lag:
            return {**summary, "dropped": True, "version": self.version}, None
        self.learner.anneal(progress)
        started, cpu_started = time.perf_counter(), time.thread_time()
        stats = self.learner.update(batch)
        stats.update(
            fetch_ms=fetch_ms,
            update_ms=1e3 * (time.perf_counter() - started),
            update_cpu_ms=1e3 * (time.thread_time() - cpu_started),
        )
        summary.update(
            dropped=False,
            stats=stats,
            version=self.version,
            episodes=finished_episodes(batch),
        )
        return summary, self.learner.weights()

    def state(self) -> dict[str, Any]:
        """The policy, optimizer and version as CPU tensors (for the driver's checkpoint)."""
        return _to_cpu(self.learner.state_dict())


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
