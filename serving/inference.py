"""One model forward for a batch of requests: greedy or sampled actions, probabilities.

Greedy actions are ``argmax`` of the action probabilities, exactly as
``ActorCritic.act(obs, greedy=True)`` computes them. The normalizer inside the model
is applied and never updated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical

from learner.policy import ActorCritic


@dataclass(frozen=True)
class Query:
    """One request's observations, shape (rows, *obs_shape), and its options."""

    obs: np.ndarray
    deterministic: bool = True
    return_probs: bool = False


@dataclass(frozen=True)
class Answer:
    actions: np.ndarray  # (rows,) int64
    probs: np.ndarray | None  # (rows, n_actions) when asked for


def rows(queries: list[Query]) -> int:
    """The batch size of ``queries`` in observation rows (``serve.batch``'s batch_size_fn)."""
    return sum(len(q.obs) for q in queries)


def act(model: ActorCritic, queries: list[Query]) -> tuple[list[Answer], float]:
    """Answer every query with one forward pass; also return the model time in seconds."""
    obs = queries[0].obs if len(queries) == 1 else np.concatenate([q.obs for q in queries])
    start = time.perf_counter()
    with torch.inference_mode():
        logits, _ = model(torch.from_numpy(obs.reshape(len(obs), -1)))
        dist = Categorical(logits=logits, validate_args=False)
        probs = dist.probs
        greedy = probs.argmax(-1).numpy()
        sampled = None
        if not all(q.deterministic for q in queries):
            sampled = dist.sample().numpy()
    seconds = time.perf_counter() - start
    answers, offset = [], 0
    probs_np = probs.numpy()
    for q in queries:
        end = offset + len(q.obs)
        chosen = greedy if q.deterministic or sampled is None else sampled
        answers.append(
            Answer(
                actions=chosen[offset:end].astype(np.int64),
                probs=probs_np[offset:end] if q.return_probs else None,
            )
        )
        offset = end
    return answers, seconds
