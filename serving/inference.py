"""One model forward for a batch of requests: greedy or sampled actions, probabilities.

Greedy actions are the mode of the policy's action distribution, exactly as
``ActorCritic.act(obs, greedy=True)`` computes them, with the request's action mask
applied; they are answered in the action space's form (``ActionHead.to_env``: an int
for ``Discrete``, lists for ``MultiDiscrete``/``MultiBinary``, floats within the bounds
for ``Box``). The normalizer inside the model is applied and never updated.

A session's turns (:func:`act_turns`) go through ``ActorCritic.act_recurrent`` from
each session's state, so a deterministic turn is exactly ``act_recurrent(obs, state,
mask, greedy=True)``; it also gives the state the session keeps for its next turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from turnwise.policy import ActorCritic
from turnwise.policy.distributions import CategoricalDist


@dataclass(frozen=True)
class Query:
    """One request's flat observations (rows, D), its mask (rows, M) and options."""

    obs: np.ndarray
    deterministic: bool = True
    return_probs: bool = False
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class Answer:
    actions: np.ndarray  # (rows, ...) as the env takes them
    probs: np.ndarray | None  # (rows, n_actions) when asked for (categorical actions)


@dataclass(frozen=True)
class Turn:
    """One session turn: its flat observation (1, D), the state before it (1, S)."""

    obs: np.ndarray
    state: np.ndarray
    deterministic: bool = True
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class TurnAnswer:
    action: np.ndarray  # (1, ...) as the env takes it
    state: np.ndarray  # (1, S): the state after this turn


def rows(queries: list[Query] | list[Turn]) -> int:
    """The batch size of ``queries`` in observation rows (``serve.batch``'s batch_size_fn)."""
    return sum(len(q.obs) for q in queries)


def act(model: ActorCritic, queries: list[Query]) -> tuple[list[Answer], float]:
    """Answer every query with one forward pass; also return the model time in seconds."""
    obs = queries[0].obs if len(queries) == 1 else np.concatenate([q.obs for q in queries])
    mask = _masks(queries, model.head.size if model.head.maskable else 0)
    start = time.perf_counter()
    with torch.inference_mode():
        dist, _ = model.distribution(torch.from_numpy(obs.reshape(len(obs), -1)), mask)
        greedy = model.head.to_env(dist.mode().numpy())
        sampled = None
        if not all(q.deterministic for q in queries):
            sampled = model.head.to_env(dist.sample().numpy())
        probs = dist.probs().numpy() if isinstance(dist, CategoricalDist) else None
    seconds = time.perf_counter() - start
    answers, offset = [], 0
    for q in queries:
        end = offset + len(q.obs)
        chosen = greedy if q.deterministic or sampled is None else sampled
        wanted = q.return_probs and probs is not None
        answers.append(Answer(chosen[offset:end], probs[offset:end] if wanted else None))
        offset = end
    return answers, seconds


def act_turns(model: ActorCritic, turns: list[Turn]) -> tuple[list[TurnAnswer], float]:
    """Answer every turn with one recurrent step over the batch (a second one only
    when some turn asks for a sampled action); also return the model time in seconds."""
    obs = np.concatenate([t.obs for t in turns])
    state = np.concatenate([t.state for t in turns]).astype(np.float32, copy=False)
    mask = _masks(turns, model.head.size if model.head.maskable else 0)
    start = time.perf_counter()
    with torch.inference_mode():
        greedy, _, _, after = model.act_recurrent(obs, state, mask, greedy=True)
        sampled = None
        if not all(t.deterministic for t in turns):
            sampled = model.act_recurrent(obs, state, mask, greedy=False)[0]
    seconds = time.perf_counter() - start
    greedy = model.head.to_env(greedy)
    sampled = None if sampled is None else model.head.to_env(sampled)
    answers = []
    for i, turn in enumerate(turns):
        chosen = greedy if turn.deterministic or sampled is None else sampled
        answers.append(TurnAnswer(chosen[i : i + 1], after[i : i + 1]))
    return answers, seconds


def _masks(queries: list[Query] | list[Turn], width: int) -> torch.Tensor | None:
    """The batch's masks, all-legal rows for queries that sent none; None if none did."""
    if not width or all(q.mask is None for q in queries):
        return None
    parts = [q.mask if q.mask is not None else np.ones((len(q.obs), width), bool) for q in queries]
    return torch.from_numpy(np.concatenate(parts))
