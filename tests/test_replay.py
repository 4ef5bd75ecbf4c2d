"""actors.replay: logged episodes re-simulate exactly, and a tampered log is caught.

The runs are real transition logs written by an in-process RolloutWorker (random
initial weights, no Ray), one for Warehouse-v0 and one for CartPole-v1.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from actors.replay import ReplayError, list_episodes, verify_episode
from actors.rollout import RolloutWorker
from actors.transition_log import part_files
from turnwise.config import ActorsConfig, Config, EnvConfig, PPOConfig

REPO = Path(__file__).resolve().parents[1]
FRAGMENT = 64
RUNS = {"warehouse": (EnvConfig(), 4), "cartpole": (EnvConfig(id="CartPole-v1"), 2)}


def write_run(directory: Path, env: EnvConfig, batches: int) -> Path:
    actors = ActorsConfig(envs_per_actor=4, fragment_length=FRAGMENT)
    config = Config(env=env, actors=actors)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    worker = RolloutWorker(
        actor_id=0, env=env, actors=actors, learner=PPOConfig(), run_seed=0, run_dir=str(directory)
    )
    for _ in range(batches):
        worker.sample(None)
    worker.envs.close()
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay")
    threads = torch.get_num_threads()  # the worker sets 1 for the whole process
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same random policy, hence the same episodes, every time
            return {name: write_run(root / name, env, n) for name, (env, n) in RUNS.items()}
    finally:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class Logged:
    episode_id: str
    first_part: int  # index of the part holding step 0
    steps: int
    terminated: bool
    truncated: bool


def logged_episodes(run_dir: Path) -> dict[str, Logged]:
    episodes: dict[str, Logged] = {}
    for part, path in enumerate(part_files(run_dir)):
        table = pq.read_table(path, columns=["episode_id", "step", "terminated", "truncated"])
        for row in table.to_pylist():
            e = episodes.setdefault(
                row["episode_id"], Logged(row["episode_id"], part, 0, False, False)
            )
            e.steps += 1
            e.terminated |= row["terminated"]
            e.truncated |= row["truncated"]
    return episodes


def pick(run_dir: Path, test: Callable[[Logged], bool]) -> str:
    chosen = [e.episode_id for e in logged_episodes(run_dir).values() if test(e)]
    assert chosen, "the fixture run has no such episode"
    return chosen[0]


def autoreset_started(e: Logged) -> bool:
    """Started after an autoreset, in a later batch, and long enough to tamper with."""
    return e.first_part > 0 and e.steps > 10


def replay(*args: Any) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "actors.replay", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def tamper(run_dir: Path, episode_id: str, step: int, column: str, change: Callable) -> None:
    """Rewrite the part holding (episode_id, step) with ``change`` applied to one value."""
    for path in part_files(run_dir):
        table = pq.read_table(path)
        ids = np.asarray(table.column("episode_id").to_pylist())
        hits = np.flatnonzero((ids == episode_id) & (table.column("step").to_numpy() == step))
        if len(hits) == 0:
            continue
        values = table.column(column).to_pylist()
        values[int(hits[0])] = change(values[int(hits[0])])
        field = table.schema.field(column)
        column_index = table.schema.get_field_index(column)
        table = table.set_column(column_index, field, pa.array(values, type=field.type))
        pq.write_table(table, path)
        return
    raise AssertionError(f"no row for episode {episode_id} step {step}")


# -- verification passes ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_logged_episode_verifies(runs, name):
    summaries = list_episodes(runs[name])
    assert len(summaries) == len(logged_episodes(runs[name])) > 4
    for summary in summaries:
        result = verify_episode(runs[name], summary.episode_id)
        assert result.ok, result.message()
        assert result.steps == summary.steps


@pytest.mark.parametrize("name", sorted(RUNS))
@pytest.mark.parametrize(
    "kind",
    ["first", "after_autoreset", "incomplete"],
)
def test_cli_verify_passes(runs, name, kind):
    tests = {
        "first": lambda e: e.episode_id == "0.0.0.0",
        "after_autoreset": autoreset_started,
        "incomplete": lambda e: not (e.terminated or e.truncated),
    }
    episode = pick(runs[name], tests[kind])
    steps = logged_episodes(runs[name])[episode].steps
    result = replay(runs[name], "--episode", episode, "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"verified {steps} steps of episode {episode}"


def test_cli_verify_passes_for_a_truncated_episode(runs):
    episode = pick(runs["warehouse"], lambda e: e.truncated)
    result = replay(runs["warehouse"], "--episode", episode, "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("verified 100 steps")  # small warehouse: max_steps 100


def test_both_endings_and_incomplete_episodes_occur_in_the_fixture(runs):
    endings = [
        (e.terminated, e.truncated) for run in runs.values() for e in logged_episodes(run).values()
    ]
    assert (True, False) in endings  # CartPole falls
    assert (False, True) in endings  # Warehouse runs out of steps under a random policy
    assert (False, False) in endings  # the run stopped mid-episode


# -- a tampered log fails ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "column", "change", "field"),
    [
        ("warehouse", "reward", lambda r: r + 1.0, "reward"),
        ("cartpole", "obs", lambda o: [o[0] + 0.5, *o[1:]], "obs[0]"),
    ],
)
def test_cli_verify_names_the_tampered_step(runs, tmp_path, name, column, change, field):
    run = copy_run(runs[name], tmp_path)
    episode = pick(run, autoreset_started)
    tamper(run, episode, 7, column, change)
    result = replay(run, "--episode", episode, "--verify")
    assert result.returncode == 1
    assert f"step 7: {field} differs" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tampered_action_fails_at_that_step_or_the_next(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    episode = pick(run, autoreset_started)
    tamper(run, episode, 3, "action", lambda a: (a + 2) % 6)
    result = verify_episode(run, episode)
    assert not result.ok
    assert result.mismatch.step in (3, 4)


@pytest.mark.parametrize(
    ("column", "change", "field"),
    [
        ("reward_step", lambda r: r * 2, "reward_step"),
        ("truncated", lambda t: not t, "truncated"),
        ("obs", lambda o: [*o[:2], o[2] - 0.25, *o[3:]], "obs[2]"),
    ],
)
def test_verify_reports_field_and_values(runs, tmp_path, column, change, field):
    run = copy_run(runs["warehouse"], tmp_path)
    episode = pick(run, autoreset_started)
    tamper(run, episode, 5, column, change)
    mismatch = verify_episode(run, episode).mismatch
    assert mismatch is not None
    assert (mismatch.step, mismatch.field) == (5, field)
    assert mismatch.logged != mismatch.simulated
    assert f"step 5: {field} differs" in str(mismatch)


def test_a_wrong_bootstrap_obs_on_a_truncated_step_fails(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    episode = pick(run, lambda e: e.truncated)
    tamper(run, episode, 99, "bootstrap_obs", lambda o: [o[0] + 1.0, *o[1:]])
    mismatch = verify_episode(run, episode).mismatch
    assert (mismatch.step, mismatch.field) == (99, "bootstrap_obs[0]")


def test_a_wrong_episode_return_fails(runs, tmp_path):
    run = copy_run(runs["cartpole"], tmp_path)
    episode = pick(run, lambda e: e.terminated)
    last = logged_episodes(run)[episode].steps - 1
    tamper(run, episode, last, "episode_return", lambda r: r + 1.0)
    mismatch = verify_episode(run, episode).mismatch
    assert (mismatch.step, mismatch.field) == (last, "episode_return")


def test_a_wrong_replay_record_fails_at_step_0(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    episode = pick(run, autoreset_started)

    def other_shift(options: str) -> str:
        record = json.loads(options)
        return json.dumps({**record, "shift_seed": record["shift_seed"] + 1})

    tamper(run, episode, 0, "reset_options", other_shift)
    mismatch = verify_episode(run, episode).mismatch
    assert mismatch.step == 0 and mismatch.field.startswith("obs[")


def test_a_replay_record_the_simulator_rejects_fails_at_step_0(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    tamper(run, "0.0.0.0", 0, "reset_options", lambda o: json.dumps({"bogus": 1}))
    mismatch = verify_episode(run, "0.0.0.0").mismatch
    assert (mismatch.step, mismatch.field) == (0, "reset_options")
    assert "unknown reset option" in str(mismatch.simulated)


def test_a_changed_simulator_config_is_an_env_version_mismatch(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["env"]["kwargs"] = {"max_steps": 120}
    (run / "config.json").write_text(json.dumps(config))
    result = replay(run, "--episode", "0.0.0.0", "--verify")
    assert result.returncode == 1
    assert "env_version differs" in result.stderr
    assert "changed since the run was logged" in result.stderr


def test_an_episode_whose_first_rows_are_missing_cannot_verify(runs, tmp_path):
    run = copy_run(runs["warehouse"], tmp_path)
    episode = pick(run, lambda e: e.first_part == 0 and e.steps > FRAGMENT)
    next(part_files(run)).unlink()
    mismatch = verify_episode(run, episode).mismatch
    assert mismatch.field == "step"
    assert "cannot be re-created" in mismatch.note


# -- printing and listing ------------------------------------------------------------------


def test_printing_a_warehouse_episode_shows_every_step(runs):
    episode = pick(runs["warehouse"], lambda e: e.truncated)
    result = replay(runs["warehouse"], "--episode", episode)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"episode {episode}" in out
    assert "env Warehouse-v0" in out and "shift_seed" in out
    assert "reward_deliver" in out and "policy" in out
    lines = [line for line in out.splitlines() if line.startswith("│")]
    assert [int(line.split("│")[1]) for line in lines] == list(range(100))
    assert "truncated" in lines[-1]
    assert all("robot (" in line for line in lines)
    assert any(name in out for name in ("│ up ", "│ down ", "│ left ", "│ right "))


def test_printing_a_cartpole_episode_shows_its_seed_and_raw_observations(runs):
    episode = pick(runs["cartpole"], lambda e: e.terminated)
    steps = logged_episodes(runs["cartpole"])[episode].steps
    result = replay(runs["cartpole"], "--episode", episode)
    assert result.returncode == 0, result.stderr
    assert "reset: seed=" in result.stdout and "options=None" in result.stdout
    assert f"ended terminated on step {steps - 1}" in result.stdout
    assert result.stdout.count("obs[:4]") == steps


def test_list_shows_the_episodes_and_the_total(runs):
    episodes = logged_episodes(runs["warehouse"])
    result = replay(runs["warehouse"], "--list")
    assert result.returncode == 0, result.stderr
    for episode in episodes:
        assert f"│ {episode} " in result.stdout
    complete = sum(e.terminated or e.truncated for e in episodes.values())
    assert f"{len(episodes)} episodes, {complete} complete" in result.stdout


def test_list_is_capped(runs):
    result = replay(runs["cartpole"], "--list", "--limit", "3")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 3
    assert "showing the first 3" in result.stdout


def test_list_summaries_match_the_log(runs):
    episodes = logged_episodes(runs["cartpole"])
    for summary in list_episodes(runs["cartpole"]):
        e = episodes[summary.episode_id]
        assert (summary.steps, summary.terminated, summary.truncated) == (
            e.steps,
            e.terminated,
            e.truncated,
        )
        if summary.terminated:
            assert summary.total_reward == summary.steps  # CartPole pays 1 per step


# -- errors ------------------------------------------------------------------------------------


def test_unknown_episode_exits_2_and_suggests_list(runs):
    result = replay(runs["warehouse"], "--episode", "7.7.7.7")
    assert result.returncode == 2
    assert "no episode '7.7.7.7'" in result.stderr and "--list" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--list"], ["--episode", "0.0.0.0", "--verify"]])
def test_missing_run_dir_exits_2(tmp_path, args):
    result = replay(tmp_path / "nope", *args)
    assert result.returncode == 2
    assert "no run directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_transitions_exits_2(tmp_path):
    result = replay(tmp_path, "--list")
    assert result.returncode == 2
    assert "no transitions" in result.stderr


def test_verify_episode_raises_replay_error_for_unknown_episodes(runs):
    with pytest.raises(ReplayError, match="no episode"):
        verify_episode(runs["cartpole"], "0.0.99.0")
