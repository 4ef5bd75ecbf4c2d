"""The policy package every part shares: network, action distributions, observation
encoding and normalization (imported by actors, learner, evaluator and serving)."""

from turnwise.policy.distributions import ActionHead, make_head
from turnwise.policy.network import (
    ActorCritic,
    build_policy,
    load_numpy_weights,
    numpy_weights,
    policy_from_checkpoint,
    policy_from_config,
    recurrent_state_size,
)
from turnwise.policy.observations import encode, flat_size, mask_from

__all__ = [
    "ActionHead",
    "ActorCritic",
    "build_policy",
    "encode",
    "flat_size",
    "load_numpy_weights",
    "make_head",
    "mask_from",
    "numpy_weights",
    "policy_from_checkpoint",
    "policy_from_config",
    "recurrent_state_size",
]
