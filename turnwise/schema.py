"""The transition batch: one Arrow schema, built once from the env's spaces.

Every rollout actor emits ``pyarrow.RecordBatch``es of this schema; the learner
reads them zero-copy into tensors; the transition log stores them as Parquet.
Rows are time-major within a batch: row ``t * num_envs + i`` is env ``i`` at step
``t`` of the fragment. The schema metadata carries the schema version, the env id
and version, and the observation shape.

Columns
-------
actor_id, env_index          which stream the row belongs to
episode_id                   "<actor>.<incarnation>.<env>.<n>", unique within a run
step                         index of the transition within its episode
obs                          observation before the step, as the simulator produced it,
                             flattened (``turnwise.policy.observations.encode``: a Box
                             of any shape row-major, Discrete parts one-hot, Dict parts
                             in key order, without an ``action_mask`` part)
action                       the policy's action (``turnwise.policy.distributions``):
                             Discrete an index from 0, MultiDiscrete a list of them,
                             MultiBinary a 0/1 list, Box the unclipped sample (the env
                             got it clipped to the space's bounds)
action_mask                  (envs that supply one) the legal actions at ``obs``
reward, reward_<component>   the reward and each named component
terminated, truncated        how the step ended
simulator_failure            the simulator died on this step: the episode was cut here
                             (truncated, reward 0, the action never ran)
logp, value                  behaviour log-prob of the action, value estimate of obs
policy_version               version of the weights that chose the action
env_version                  simulator version string
bootstrap_obs                next observation where a value bootstrap is needed
                             (truncated steps, and each env's last row of the
                             fragment when not done); null elsewhere
episode_return               the episode's return, on its last step; null elsewhere
episode_seed, reset_options  on step 0: what re-creates the episode:
                             ``env.reset(seed=episode_seed, options=json(reset_options))``
state                        (recurrent policies only) the policy's recurrent state before
                             the fragment's first step (zeros where an episode starts
                             there), on the fragment's t=0 rows; null elsewhere

Schema versions: 2 added the optional ``state`` column; a version-1 batch reads as a
version-2 batch without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from gymnasium import spaces

from turnwise.policy.observations import flat_size
from turnwise.spaces import space_to_json

SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # 1: before the optional state column


def _obs_type(space: spaces.Space) -> pa.DataType:
    return pa.list_(pa.float32(), flat_size(space))


def _action_type(space: spaces.Space) -> pa.DataType:
    if isinstance(space, spaces.Discrete):
        return pa.int64()
    width = int(np.prod(space.shape))
    if isinstance(space, spaces.MultiDiscrete):
        return pa.list_(pa.int64(), width)
    if isinstance(space, spaces.MultiBinary):
        return pa.list_(pa.int8(), width)
    if isinstance(space, spaces.Box):
        return pa.list_(pa.float32(), width)
    raise TypeError(f"unsupported action space {space}")


def mask_width(space: spaces.Space) -> int:
    """Entries of a legal-action mask: Discrete n, MultiDiscrete the sum of its sizes."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    raise TypeError(f"action masks need Discrete or MultiDiscrete actions, not {space}")


def transition_schema(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    reward_components: Sequence[str],
    env_id: str,
    env_version: str,
    action_mask: bool = False,
    state_size: int = 0,
) -> pa.Schema:
    """The one schema of a run's transitions; ``state_size`` > 0 (a recurrent policy's)
    adds the ``state`` column."""
    obs = _obs_type(observation_space)
    mask = []
    if action_mask:
        mask = [pa.field("action_mask", pa.list_(pa.bool_(), mask_width(action_space)), False)]
    fields = [
        pa.field("actor_id", pa.int32(), nullable=False),
        pa.field("env_index", pa.int32(), nullable=False),
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("obs", obs, nullable=False),
        pa.field("action", _action_type(action_space), nullable=False),
        *mask,
        pa.field("reward", pa.float32(), nullable=False),
        *(pa.field(f"reward_{name}", pa.float32(), nullable=False) for name in reward_components),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("simulator_failure", pa.bool_(), nullable=False),
        pa.field("logp", pa.float32(), nullable=False),
        pa.field("value", pa.float32(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("env_version", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("bootstrap_obs", obs),
        pa.field("episode_return", pa.float32()),
        pa.field("episode_seed", pa.int64()),
        pa.field("reset_options", pa.string()),
        *([pa.field("state", pa.list_(pa.float32(), state_size))] if state_size else []),
    ]
    metadata = {
        "turnwise.schema_version": SCHEMA_VERSION,
        "turnwise.env_id": env_id,
        "turnwise.env_version": env_version,
        "turnwise.observation_space": json.dumps(space_to_json(observation_space)),
        "turnwise.action_space": json.dumps(space_to_json(action_space)),
        "turnwise.reward_components": json.dumps(list(reward_components)),
    }
    return pa.schema(fields, metadata=metadata)


def reward_components(schema: pa.Schema) -> list[str]:
    return json.loads(schema.metadata[b"turnwise.reward_components"])


def check_schema(schema: pa.Schema, expected: pa.Schema) -> None:
    """Raise ValueError when a batch's schema is not the run's (version or columns)."""
    got = (schema.metadata or {}).get(b"turnwise.schema_version", b"?").decode()
    if got not in READABLE_VERSIONS:
        raise ValueError(f"transition schema version {got}, expected {SCHEMA_VERSION}")
    if not schema.equals(expected, check_metadata=False):
        raise ValueError(f"transition schema differs from the run's:\n{schema}\nvs\n{expected}")


def fixed_list(
    values: np.ndarray, width: int, value_type: pa.DataType | None = None
) -> pa.FixedSizeListArray:
    """(N, ...) array to a fixed-size-list column (float32 unless ``value_type`` says
    otherwise) without a Python loop."""
    value_type = value_type or pa.float32()
    flat = np.ascontiguousarray(values, dtype=value_type.to_pandas_dtype()).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), width)


def nullable_fixed_list(values: np.ndarray, present: np.ndarray, width: int) -> pa.Array:
    """Like :func:`fixed_list`, null where ``present`` is False."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    mask = pa.array(~present)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width, mask=mask)


def build_batch(schema: pa.Schema, columns: dict[str, Any]) -> pa.RecordBatch:
    """Assemble a batch from NumPy columns (or ready Arrow arrays), in schema order."""
    arrays = []
    for field in schema:
        value = columns[field.name]
        if isinstance(value, pa.Array):
            arrays.append(value)
        elif pa.types.is_fixed_size_list(field.type):
            arrays.append(fixed_list(value, field.type.list_size, field.type.value_type))
        elif pa.types.is_dictionary(field.type):
            arrays.append(pa.array(value, type=pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def column_matrix(batch: pa.RecordBatch | pa.Table, name: str) -> np.ndarray:
    """A non-null fixed-size-list column as an (N, width) array of its value type, zero-copy
    where Arrow's buffers allow it (then read-only: copy before writing to it)."""
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    values = column.values.to_numpy(zero_copy_only=False)
    offset = column.offset * width
    return values[offset : offset + len(column) * width].reshape(len(column), width)


def column_numpy(batch: pa.RecordBatch | pa.Table, name: str) -> np.ndarray:
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False)
