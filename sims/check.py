"""``python -m sims.check ENV_ID | HOST:PORT``: certify a simulator before training on it.

TARGET is an env id (``CartPole-v1``, or your own ``package.module:EnvId``) or the
``HOST:PORT`` of a running ``python -m sims.server``. Each check prints one row
(``✓ name — reason`` or ``✗ name — reason``); every check runs even after a failure:

1. ``check_env``: Gymnasium's check_env passes on the unwrapped env, without a warning.
2. ``determinism``: two instances given the same seeds and actions give bit-identical episodes.
3. ``variety``: different seeds give different episodes.
4. ``bounded actions``: every part of the action space is discrete or a Box with finite bounds.
5. ``version``: a version that changes with the dynamics (declared, its package's, a server's).
6. ``reward components``: declared components come with every step and sum to its reward.
7. ``state variables``: scopes are episode/persistent; persistent state is reported and restorable.
8. ``episode budget``: with random actions every episode ends within ``--max-episode-steps``.

Exit status: 0 when every check passes, 1 when any fails, 2 for bad usage or an env
that cannot be made at all.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium import logger as gym_logger
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from sims.client import RemoteEnv, SimulatorError, parse_address
from sims.declarations import STATE_SCOPES, declarations
from sims.protocol import PROTOCOL_VERSION, ProtocolError, receive, send
from sims.registry import EnvIdError, env_spec
from sims.versioning import env_version

# check_env's space-bound heuristics (sims.check's own `bounded actions` judges the
# action space; infinite observation bounds, CartPole's included, are legitimate)
SPACE_ADVICE = re.compile(r"space (minimum|maximum) value is -?infinity|For Box action spaces")
VARIETY_SEEDS = 5
VARIETY_STEPS = 20
MIN_BUDGET_EPISODES = 3


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, as printed in one row."""

    name: str
    ok: bool
    reason: str

    def row(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name} — {self.reason}"


@dataclass(frozen=True)
class Target:
    """What the checks run against: fresh env instances and how they were made."""

    make_env: Callable[[], gymnasium.Env]
    env_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    steps: int = 300
    max_episode_steps: int = 10_000


Verdict = tuple[bool, str]


# -- helpers -------------------------------------------------------------------------
@contextmanager
def fresh_env(target: Target) -> Iterator[gymnasium.Env]:
    """A new env instance, closed afterwards."""
    env = target.make_env()
    try:
        yield env
    finally:
        env.close()


def identical(a: Any, b: Any) -> bool:
    """Bit-identical data: same structure, same types of arrays, equal values (NaN = NaN)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(np.array_equal(x, y))


def plain(value: Any) -> Any:
    """An array or NumPy scalar as plain Python (as replay sends reset options)."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def rollout(env: gymnasium.Env, seed: int, steps: int) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """``(step, (obs, reward, terminated, truncated, info))`` for ``steps`` steps of seeded
    random actions; after an episode ends, reset with seed ``seed + episodes``."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    episodes = 0
    for step in range(1, steps + 1):
        result = env.step(env.action_space.sample())
        yield step, result
        if result[2] or result[3]:
            episodes += 1
            env.reset(seed=seed + episodes)


def _brief(value: Any, limit: int = 60) -> str:
    text = np.array2string(value) if isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the checks ----------------------------------------------------------------------
def check_gymnasium(target: Target) -> Verdict:
    """Gymnasium's check_env on the unwrapped env; any exception or warning fails."""
    with fresh_env(target) as env, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        level, gym_logger.min_level = gym_logger.min_level, gym_logger.WARN
        try:
            # render modes are not what training needs, and "human" opens a window
            check_env(env.unwrapped, skip_render_check=True)
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        finally:
            gym_logger.min_level = level
    messages = [_uncolored(str(w.message)) for w in caught]
    problems = list(dict.fromkeys(m for m in messages if not SPACE_ADVICE.search(m)))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return False, problems[0] + more
    advice = len(messages) - len(problems)
    note = f" (ignored {advice} space-bound advisories)" if advice else ""
    return True, f"passes Gymnasium's check_env{note}"


def _uncolored(message: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", message).removeprefix("WARN: ")


def check_determinism(target: Target) -> Verdict:
    """Two fresh instances, same seeds and actions: bit-identical transitions."""
    with fresh_env(target) as first, fresh_env(target) as second:
        obs = first.reset(seed=target.seed)[0], second.reset(seed=target.seed)[0]
        if not identical(*obs):
            return False, f"reset(seed={target.seed}): observations differ"
        first.action_space.seed(target.seed)
        episodes = 0
        for step in range(1, target.steps + 1):
            action = first.action_space.sample()
            a, b = first.step(action), second.step(action)
            difference = _first_difference(a, b)
            if difference:
                return False, f"step {step} (episode {episodes + 1}): {difference}"
            if a[2] or a[3]:
                episodes += 1
                seed = target.seed + episodes
                if not identical(first.reset(seed=seed)[0], second.reset(seed=seed)[0]):
                    return False, f"reset(seed={seed}) after step {step}: observations differ"
    return True, f"{target.steps} steps ({episodes} episode ends) identical in two instances"


def _first_difference(a: tuple[Any, ...], b: tuple[Any, ...]) -> str | None:
    fields = {
        "observation": (a[0], b[0]),
        "reward": (a[1], b[1]),
        "terminated": (a[2], b[2]),
        "truncated": (a[3], b[3]),
        'info["reward_components"]': (
            a[4].get("reward_components"),
            b[4].get("reward_components"),
        ),
    }
    for name, (x, y) in fields.items():
        if not identical(x, y):
            return f"{name} differs ({_brief(x)} vs {_brief(y)})"
    return None


def check_variety(target: Target) -> Verdict:
    """Seeds s+1 .. s+4 do not all replay seed s's episode."""
    with fresh_env(target) as env:
        env.action_space.seed(target.seed)
        actions = [env.action_space.sample() for _ in range(VARIETY_STEPS)]
        base = _observations(env, target.seed, actions)
        for seed in range(target.seed + 1, target.seed + VARIETY_SEEDS):
            if not identical(base, _observations(env, seed, actions)):
                return True, f"seeds {target.seed} and {seed} give different episodes"
    last = target.seed + VARIETY_SEEDS - 1
    return False, (
        f"seeds {target.seed}..{last} give identical episodes (initial observation and "
        f"first {VARIETY_STEPS} steps): reset(seed=...) must seed the world's randomness"
    )


def _observations(env: gymnasium.Env, seed: int, actions: list[Any]) -> list[Any]:
    observations = [env.reset(seed=seed)[0]]
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        if terminated or truncated:
            break
    return observations


def check_bounded_actions(target: Target) -> Verdict:
    """Every part of the action space is discrete or a Box with finite bounds."""
    with fresh_env(target) as env:
        space = env.action_space
    problem = unbounded_part(space, "action_space")
    return (False, problem) if problem else (True, f"{space} is bounded")


def unbounded_part(space: spaces.Space, path: str) -> str | None:
    """What is unbounded in ``space`` (``path`` names it), or None."""
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        return None
    if isinstance(space, spaces.Box):
        infinite = ~(np.isfinite(space.low) & np.isfinite(space.high))
        if infinite.any():
            return (
                f"{path} is {space}: unbounded in {int(infinite.sum())} of {infinite.size} "
                "dimension(s); give it finite low and high"
            )
        return None
    if isinstance(space, spaces.Dict | spaces.Tuple):
        items = space.spaces.items() if isinstance(space, spaces.Dict) else enumerate(space)
        for key, sub in items:
            problem = unbounded_part(sub, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is {space}: a {type(space).__name__} space is not supported"


def check_version(target: Target) -> Verdict:
    """A version that changes with the dynamics: declared, or the installed package's."""
    with fresh_env(target) as env:
        if isinstance(env.unwrapped, RemoteEnv):
            return True, f"from the server's handshake: {env.unwrapped.version}"
        version, source = env_version(target.env_id, target.kwargs, env)
    if source == "declared":
        return True, f"declared: {version}"
    if source == "package":
        package = version.removeprefix(f"{target.env_id}+").rsplit(".", 1)[0]
        return True, f"derived from installed package {package} ({version})"
    return False, (
        "declares no version and is not part of an installed package: set `version` on "
        "the env (a string that changes when its dynamics change)"
    )


def check_reward_components(target: Target) -> Verdict:
    """Each step reports exactly the declared components, and they sum to the reward."""
    with fresh_env(target) as env:
        declared = declarations(env).reward_components
        if not declared:
            return True, "declares none"
        for step, (_, reward, _, _, info) in rollout(env, target.seed, target.steps):
            parts = info.get("reward_components")
            if not isinstance(parts, Mapping):
                return False, f'step {step}: info has no "reward_components"'
            if set(parts) != set(declared):
                return False, f"step {step}: components {sorted(parts)}, declared {list(declared)}"
            total = float(sum(float(v) for v in parts.values()))
            if not np.isclose(total, float(reward), rtol=1e-5, atol=1e-6):
                return False, f"step {step}: components sum to {total!r}, the reward is {reward!r}"
    return True, f"{', '.join(declared)} sum to the reward on all {target.steps} steps"


def check_state_variables(target: Target) -> Verdict:
    """Scopes are "episode"/"persistent"; persistent state is reported and restorable."""
    with fresh_env(target) as env:
        declared = declarations(env)
        scopes = declared.state_variables
        for name, scope in scopes.items():
            if scope not in STATE_SCOPES:
                return False, f"state variable {name!r} has scope {scope!r}, not episode/persistent"
        if not scopes:
            return True, "declares none (all state resets with an episode)"
        persistent = declared.persistent_state
        if not persistent:
            return True, f"{len(scopes)} declared, all reset with an episode"
        if "persistent_state" not in declared.reset_options:
            return False, (
                f"persistent {', '.join(persistent)} needs reset_options to include "
                '"persistent_state" (how replay restores it)'
            )
        return _persistent_state_round_trip(env, persistent, target.seed)


def _persistent_state_round_trip(
    env: gymnasium.Env, persistent: tuple[str, ...], seed: int
) -> Verdict:
    _, info = env.reset(seed=seed)
    missing = [name for name in persistent if name not in info]
    if missing:
        return False, f"reset's info does not report persistent {', '.join(missing)}"
    state = {name: plain(info[name]) for name in persistent}
    _, restored = env.reset(options={"persistent_state": state})
    for name in persistent:
        if not identical(plain(restored.get(name)), state[name]):
            return False, f'reset(options={{"persistent_state": ...}}) does not restore {name}'
    return True, (
        f"persistent {', '.join(persistent)}: reported in reset's info and restored by "
        'reset(options={"persistent_state": ...})'
    )


def check_episode_budget(target: Target) -> Verdict:
    """With random actions, every episode ends within the step budget."""
    budget, total, longest, episodes = target.max_episode_steps, 0, 0, 0
    with fresh_env(target) as env:
        env.action_space.seed(target.seed)
        while episodes < MIN_BUDGET_EPISODES or total < target.steps * 10:
            env.reset(seed=target.seed if episodes == 0 else None)
            length = _episode_length(env, budget)
            if length is None:
                return False, f"episode {episodes + 1} did not end within {budget} steps"
            episodes, total, longest = episodes + 1, total + length, max(longest, length)
    return True, f"{episodes} episodes ended within {budget} steps (longest {longest})"


def _episode_length(env: gymnasium.Env, budget: int) -> int | None:
    for step in range(1, budget + 1):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            return step
    return None


CHECKS: tuple[tuple[str, Callable[[Target], Verdict]], ...] = (
    ("check_env", check_gymnasium),
    ("determinism", check_determinism),
    ("variety", check_variety),
    ("bounded actions", check_bounded_actions),
    ("version", check_version),
    ("reward components", check_reward_components),
    ("state variables", check_state_variables),
    ("episode budget", check_episode_budget),
)


def run_checks(
    make_env: Callable[[], gymnasium.Env],
    env_id: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    steps: int = 300,
    max_episode_steps: int = 10_000,
) -> list[CheckResult]:
    """Every check, in order, on fresh envs from ``make_env``; a check that raises fails."""
    target = Target(make_env, env_id, dict(kwargs or {}), seed, steps, max_episode_steps)
    results = []
    for name, check in CHECKS:
        results.append(CheckResult(name, *_run_one(check, target)))
    return results


def _run_one(check: Callable[[Target], Verdict], target: Target) -> Verdict:
    with warnings.catch_warnings():
        if check is not check_gymnasium:
            warnings.simplefilter("ignore")  # check_env reports what Gymnasium warns about
        try:
            return check(target)
        except Exception as error:
            return False, f"raised {type(error).__name__}: {error}"


# -- the command line ----------------------------------------------------------------
def is_address(target: str) -> bool:
    """``HOST:PORT`` (a server) rather than an env id (``package.module:EnvId``)."""
    head, sep, port = target.rpartition(":")
    return bool(sep and head and port.isdigit())


def server_spec(address: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The session spec a ``sims.server`` sends in its handshake (env id, version, ...)."""
    host, port = parse_address(address)
    with closing(socket.create_connection((host, port), timeout=timeout_s)) as sock:
        send(sock, {"op": "hello", "protocol": PROTOCOL_VERSION})
        reply = receive(sock)
        if not reply.get("ok") or not isinstance(reply.get("spec"), dict):
            raise SimulatorError(str(reply.get("error", "no session spec in the handshake")))
        send(sock, {"op": "close"})
    return reply["spec"]


def env_factory(target: str, kwargs: dict[str, Any]) -> tuple[Callable[[], gymnasium.Env], str]:
    """``(make_env, env_id)`` for an env id or a server address; raises on what cannot
    be made (EnvIdError, SimulatorError, ProtocolError, or the env's own error)."""
    if is_address(target):
        try:
            env_id = str(server_spec(target)["env_id"])
        except OSError as error:
            raise SimulatorError(f"cannot reach a sims.server there: {error}") from error

        def make() -> gymnasium.Env:
            return RemoteEnv(env_id, lambda: target, timeout_s=30.0, connect_retries=3)

    else:
        spec, env_id = env_spec(target), target

        def make() -> gymnasium.Env:
            return gymnasium.make(spec, **kwargs)

    make().close()  # fails here, once, when the env cannot be made at all
    return make, env_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sims.check",
        description="Check that a simulator is an environment you can train on.",
    )
    parser.add_argument("target", help="an env id (or package.module:EnvId), or HOST:PORT")
    parser.add_argument("--env-kwargs", default="{}", help="JSON object of env keyword arguments")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--steps", type=_positive, default=300, help="steps per rollout")
    parser.add_argument(
        "--max-episode-steps", type=_positive, default=10_000, help="episode step budget"
    )
    args = parser.parse_args(argv)
    try:
        args.env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as error:
        parser.error(f"--env-kwargs is not JSON: {error}")
    if not isinstance(args.env_kwargs, dict):
        parser.error("--env-kwargs must be a JSON object")
    if args.env_kwargs and is_address(args.target):
        parser.error("--env-kwargs is for an env id; a server runs with its own")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        make_env, env_id = env_factory(args.target, args.env_kwargs)
    except (EnvIdError, SimulatorError, ProtocolError) as error:
        print(f"error: {args.target}: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the env's own constructor failed
        print(f"error: cannot make {args.target}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = run_checks(
        make_env,
        env_id,
        args.env_kwargs,
        seed=args.seed,
        steps=args.steps,
        max_episode_steps=args.max_episode_steps,
    )
    for result in results:
        print(result.row())
    label = args.target if env_id == args.target else f"{args.target} ({env_id})"
    print(summary(label, results, time.monotonic() - started))
    return 0 if all(r.ok for r in results) else 1


def summary(target: str, results: list[CheckResult], seconds: float) -> str:
    failed = [r.name for r in results if not r.ok]
    if not failed:
        return f"{target}: all {len(results)} checks passed in {seconds:.1f} s"
    return f"{target}: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}"


if __name__ == "__main__":
    sys.exit(main())
