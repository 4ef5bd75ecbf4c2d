"""Numeric kernels against plain-loop references on random data, and the schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gymnasium import spaces

from learner.returns import gae, vtrace
from turnwise.policy.normalizer import WindowNormalizer
from turnwise.schema import (
    SCHEMA_VERSION,
    build_batch,
    check_schema,
    column_matrix,
    nullable_fixed_list,
    transition_schema,
)


def random_rollout(seed: int, steps: int = 37, envs: int = 5):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=g)
    values = torch.randn(steps, envs, generator=g)
    next_values = torch.randn(steps, envs, generator=g)
    ends = torch.rand(steps, envs, generator=g) < 0.1
    log_rhos = torch.randn(steps, envs, generator=g) * 0.5
    return rewards, values, next_values, ends, log_rhos


def gae_loop(rewards, values, next_values, ends, gamma, lam):
    steps, envs = rewards.shape
    out = np.zeros((steps, envs))
    for e in range(envs):
        running = 0.0
        for t in reversed(range(steps)):
            delta = rewards[t, e] + gamma * next_values[t, e] - values[t, e]
            running = delta + (0.0 if ends[t, e] else gamma * lam * running)
            out[t, e] = running
    return out


def vtrace_loop(rewards, values, next_values, ends, log_rhos, gamma, lam, rho_clip, c_clip):
    steps, envs = rewards.shape
    vs = np.zeros((steps, envs))
    for e in range(envs):
        for s in range(steps):
            # vs_s = v_s + sum_t gamma^(t-s) (prod_{i<t} c_i) delta_t, until an episode end
            total, weight = 0.0, 1.0
            for t in range(s, steps):
                rho = min(rho_clip, float(np.exp(log_rhos[t, e])))
                delta = rho * (rewards[t, e] + gamma * next_values[t, e] - values[t, e])
                total += weight * delta
                if ends[t, e]:
                    break
                weight *= gamma * lam * min(c_clip, float(np.exp(log_rhos[t, e])))
            vs[s, e] = values[s, e] + total
    return vs


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_a_plain_loop(seed):
    rewards, values, next_values, ends, _ = random_rollout(seed)
    fast = gae(rewards, values, next_values, ends, 0.99, 0.95)
    slow = gae_loop(rewards.numpy(), values.numpy(), next_values.numpy(), ends.numpy(), 0.99, 0.95)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("seed", "rho_clip", "c_clip"), [(0, 1.0, 1.0), (1, 2.0, 0.5), (2, 0.7, 1.3)]
)
def test_vtrace_matches_a_plain_loop(seed, rho_clip, c_clip):
    rewards, values, next_values, ends, log_rhos = random_rollout(seed)
    vs, advantages = vtrace(
        rewards, values, next_values, ends, log_rhos, 0.99, 0.9, rho_clip, c_clip
    )
    slow = vtrace_loop(
        *(x.numpy() for x in (rewards, values, next_values, ends, log_rhos)),
        0.99,
        0.9,
        rho_clip,
        c_clip,
    )
    np.testing.assert_allclose(vs.numpy(), slow, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(advantages.numpy(), slow - values.numpy(), rtol=1e-4, atol=1e-4)


def test_vtrace_on_policy_equals_gae():
    rewards, values, next_values, ends, log_rhos = random_rollout(7)
    _, advantages = vtrace(
        rewards, values, next_values, ends, torch.zeros_like(log_rhos), 0.99, 0.95
    )
    np.testing.assert_allclose(
        advantages.numpy(), gae(rewards, values, next_values, ends, 0.99, 0.95).numpy(), atol=1e-5
    )


def test_normalizer_follows_a_drifting_distribution():
    norm = WindowNormalizer(3, window=10_000)
    rng = np.random.default_rng(0)
    for shift in np.linspace(0.0, 50.0, 200):  # the mean drifts by 50
        norm.update(torch.as_tensor(rng.normal(shift, 2.0, (1000, 3)), dtype=torch.float32))
    assert norm.mean.numpy() == pytest.approx([50.0] * 3, abs=3.0)
    # the spread within the window (noise plus ~2.5 of drift) sets the scale
    assert ((np.sqrt(norm.var.numpy()) > 1.5) & (np.sqrt(norm.var.numpy()) < 4.0)).all()
    cumulative = WindowNormalizer(3, window=10**12)
    for shift in np.linspace(0.0, 50.0, 200):
        cumulative.update(torch.as_tensor(rng.normal(shift, 2.0, (1000, 3)), dtype=torch.float32))
    assert cumulative.mean.numpy() == pytest.approx([25.0] * 3, abs=3.0)  # it would lag behind


def schema_and_batch(rows: int = 12):
    obs_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    schema = transition_schema(obs_space, spaces.Discrete(3), ["step", "pick"], "X-v0", "x+1")
    rng = np.random.default_rng(0)
    present = rng.random(rows) < 0.3
    columns = {
        "actor_id": np.zeros(rows, np.int32),
        "env_index": np.tile(np.arange(3, dtype=np.int32), rows // 3),
        "episode_id": [f"0.0.{i % 3}.0" for i in range(rows)],
        "step": np.repeat(np.arange(rows // 3, dtype=np.int32), 3),
        "obs": rng.random((rows, 4), dtype=np.float32),
        "action": rng.integers(0, 3, rows),
        "reward": rng.random(rows, dtype=np.float32),
        "reward_step": rng.random(rows, dtype=np.float32),
        "reward_pick": rng.random(rows, dtype=np.float32),
        "terminated": rng.random(rows) < 0.2,
        "truncated": np.zeros(rows, bool),
        "simulator_failure": np.zeros(rows, bool),
        "logp": rng.random(rows, dtype=np.float32),
        "value": rng.random(rows, dtype=np.float32),
        "policy_version": np.full(rows, 3, np.int64),
        "env_version": ["x+1"] * rows,
        "bootstrap_obs": nullable_fixed_list(rng.random((rows, 4), dtype=np.float32), present, 4),
        "episode_return": pa.array([None] * rows, pa.float32()),
        "episode_seed": pa.array([7] + [None] * (rows - 1), pa.int64()),
        "reset_options": pa.array([None] * rows, pa.string()),
    }
    return schema, columns


def test_schema_round_trips_through_parquet(tmp_path):
    schema, columns = schema_and_batch()
    batch = build_batch(schema, columns)
    assert batch.schema.metadata[b"turnwise.schema_version"] == SCHEMA_VERSION.encode()
    pq.write_table(pa.Table.from_batches([batch]), tmp_path / "part.parquet")
    table = pq.read_table(tmp_path / "part.parquet")
    check_schema(table.schema, schema)
    assert table.to_pylist() == pa.Table.from_batches([batch]).to_pylist()
    np.testing.assert_array_equal(column_matrix(table, "obs"), columns["obs"])


def test_schema_check_rejects_other_versions_and_columns():
    schema, _ = schema_and_batch()
    old = schema.with_metadata({**schema.metadata, b"turnwise.schema_version": b"0"})
    with pytest.raises(ValueError, match="version"):
        check_schema(old, schema)
    with pytest.raises(ValueError, match="differs"):
        check_schema(schema.remove(0), schema)


def test_obs_column_reads_zero_copy():
    schema, columns = schema_and_batch()
    batch = build_batch(schema, columns)
    matrix = column_matrix(batch, "obs")
    buffer = batch.column("obs").values.buffers()[1]
    assert matrix.ctypes.data == buffer.address  # no copy between Arrow and NumPy
