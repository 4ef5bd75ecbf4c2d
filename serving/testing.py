"""Checkpoints of untrained policies, for tests, benchmarks and demos of the server.

>>> import tempfile
>>> built = make_checkpoint(tempfile.mkdtemp(), env_steps=1000, policy_version=3)
>>> built.name
'step-000000001000'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from turnwise.checkpoint import save_checkpoint
from turnwise.checkpoint_store import open_store
from turnwise.config import Config
from turnwise.policy import ActorCritic, policy_from_config
from turnwise.spaces import space_to_json


@dataclass(frozen=True)
class BuiltCheckpoint:
    name: str
    uri: str
    model: ActorCritic  # the policy as saved, in eval mode
    env_version: str  # as in the manifest


def make_checkpoint(
    store_uri: str,
    env_steps: int = 400_000,
    policy_version: int = 1,
    seed: int = 0,
    promote: Literal["best", "latest"] = "best",
    logit_scale: float = 100.0,
    env_id: str = "Warehouse-v0",
    core: str = "mlp",
) -> BuiltCheckpoint:
    """Save a fresh policy for ``env_id`` (any registered env) with a non-trivial
    normalizer into ``store_uri``; ``core`` as ``learner.model.core`` (mlp, lstm, gru).

    ``latest`` always moves to it; ``promote="best"`` moves ``best`` too. The policy
    head is scaled by ``logit_scale`` so greedy actions differ between observations.
    """
    import gymnasium

    import sims  # noqa: F401  (registers turnwise's envs)
    from sims.versioning import env_version

    config = Config()
    config.env.id = env_id
    config.learner.model.core = core
    env = gymnasium.make(env_id)
    version, _ = env_version(env_id, {}, env)
    torch.manual_seed(seed)
    model = policy_from_config(env.observation_space, env.action_space, config.learner)
    rng = np.random.default_rng(seed)
    size = model.normalizer.mean.numel()
    with torch.no_grad():
        model.normalizer.mean.copy_(torch.as_tensor(rng.uniform(-0.5, 0.5, size)))
        model.normalizer.var.copy_(torch.as_tensor(rng.uniform(0.05, 2.0, size)))
        model.normalizer.count.fill_(float(env_steps))
        model.policy[-1].weight.mul_(logit_scale)
    model.eval()
    manifest = {
        "env_id": config.env.id,
        "env_version": version,
        "observation_space": space_to_json(env.observation_space),
        "action_space": space_to_json(env.action_space),
        "env_steps": env_steps,
        "policy_version": policy_version,
        "config": dataclasses.asdict(config),
    }
    store = open_store(store_uri)
    uri = save_checkpoint(
        store, model.state_dict(), {"counters": {"env_steps": env_steps}}, manifest
    )
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if promote == "best":
        store.set_pointer("best", name)
    env.close()
    return BuiltCheckpoint(name=name, uri=uri, model=model, env_version=version)


# Serve's constants that its throughput-optimized mode sets (ray/serve/_private/constants.py)
SERVE_MODE_CONSTANTS = (
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP",
    "RAY_SERVE_LOG_TO_STDERR",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
    "RAY_SERVE_FREEZE_GC_ON_STARTUP",
)


def serve_constants(actor: object = None) -> dict[str, object]:
    """The values of :data:`SERVE_MODE_CONSTANTS` in this process: run it inside a Serve
    actor with ``actor.__ray_call__.remote(serve_constants)`` to see its mode."""
    from ray.serve._private import constants

    return {name: getattr(constants, name) for name in SERVE_MODE_CONSTANTS}


def start_local_ray() -> None:
    """The serving tests' local Ray: 2 CPUs, no dashboard, and Serve's mode as
    ``python -m serving`` runs it (``serving.settings.SERVE_ENV``)."""
    import ray

    from serving.settings import serve_environment

    env_vars = serve_environment()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env_vars},
    )


def random_walk_observations(n: int = 512, seed: int = 0) -> np.ndarray:
    """Real Warehouse-v0 observations from a random walk (requests for tests and benchmarks)."""
    from sims.warehouse import WarehouseEnv

    env, rng = WarehouseEnv(), np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(6)))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.asarray(rows, dtype=np.float32)
