"""Any user's simulator, with the evaluator on: the documented recipe (a user env in
its own package outside turnwise), CartPole and Warehouse, each in-process and behind
real ``sims.server`` processes (``launch`` and ``connect``); the KubeRay RayJob's
entrypoint as written; bad plug-ins and baselines."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import ray
import yaml
from conftest import REPO, make_checkpoint, start_simulator

from evaluator.baselines import ORACLE
from evaluator.episodes import evaluation_seeds
from evaluator.evaluator import EvaluationTable, Evaluator
from learner.driver import train
from turnwise.checkpoint_store import open_store
from turnwise.config import EnvConfig, EvaluatorConfig, compose_config
from turnwise.run_store import RunStore

DOC = REPO / "docs" / "own-simulator.md"
FILE_BLOCK = re.compile(r"```\w+\n# file: (?P<path>\S+)\n(?P<body>.*?)```", re.S)
BASH_BLOCK = re.compile(r"```bash\n(?P<body>.*?)```", re.S)


def recipe_files() -> dict[str, str]:
    """The files the recipe tells a user to write, by path."""
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(DOC.read_text())}


def recipe_commands() -> list[list[str]]:
    """The recipe's shell commands (continuations joined, a trailing ``&`` dropped),
    with ``python`` as this interpreter."""
    commands = []
    for block in BASH_BLOCK.finditer(DOC.read_text()):
        for line in block["body"].replace("\\\n", " ").splitlines():
            words = shlex.split(line.removesuffix("&"))
            if words:
                commands.append([sys.executable if w == "python" else w for w in words])
    return commands


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project directory, outside turnwise, holding the recipe's files."""
    root = tmp_path_factory.mktemp("user-project")
    for path, body in recipe_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    return root


def run_cli(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the cwd
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def scheduled_evaluations(run: Path | str, every: int) -> list[int]:
    """The env steps at which the run (a directory or a run store URI) marked a
    checkpoint for evaluation: the first update at or past each multiple of ``every``,
    and the final checkpoint."""
    due, next_due = [], every
    lines = RunStore(str(run)).read("metrics.jsonl").splitlines()
    steps = [json.loads(line)["env_steps"] for line in lines]
    for step in steps:
        if step >= next_due:
            due.append(step)
            next_due = (step // every + 1) * every
    return sorted({*due, steps[-1]})


def assert_every_scheduled_checkpoint_evaluated(run: Path | str, every: int) -> list[dict]:
    rows = EvaluationTable(run).rows()
    assert sorted(r["env_steps"] for r in rows) == scheduled_evaluations(run, every)
    assert len({r["checkpoint"] for r in rows}) == len(rows)
    for row in rows:
        assert np.isfinite(row["eval_return"]) and row["visited_states"] > 0
        assert 0 < row["state_coverage"] <= 1
    return rows


# -- the documented recipe: a user env in its own package ---------------------------
def test_the_recipe_checks_the_user_env(project):
    check = next(c for c in recipe_commands() if c[1:3] == ["-m", "sims.check"])
    run = run_cli(check, project)
    assert run.returncode == 0, run.stdout + run.stderr


def learner_command(mode: str) -> list[str]:
    commands = [c for c in recipe_commands() if c[1:3] == ["-m", "learner"]]
    return {"inprocess": commands[0], "launch": commands[0], "connect": commands[1]}[mode]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["inprocess", "launch", "connect"])
def test_the_recipe_trains_and_evaluates_the_user_env(project, mode):
    command = [w for w in learner_command(mode) if not w.startswith("hydra.run.dir=")]
    extra = [f"hydra.run.dir=runs/{mode}", "train.progress=false"]
    server = None
    if mode == "launch":
        extra.append("env.simulator.mode=launch")
    if mode == "connect":
        serve = next(c for c in recipe_commands() if c[1:3] == ["-m", "sims.server"])
        port = serve.index("--port") + 1
        server, address = start_simulator(
            serve[serve.index("--env") + 1], 0, serve[serve.index("--env-kwargs") + 1], project
        )
        assert serve[port] in " ".join(command)  # the recipe connects where it serves
        command = [re.sub(r"127\.0\.0\.1:\d+", address, w) for w in command]
        extra.append("evaluator.baseline=corridor_env.policies:toward_goal")  # by name
    try:
        run = run_cli([*command, *extra], project)
    finally:
        if server is not None:
            server.kill()
            server.wait()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = assert_every_scheduled_checkpoint_evaluated(project / "runs" / mode, 10_000)
    expected = "policy corridor_env.policies:toward_goal" if mode == "connect" else "oracle"
    assert {r["baseline"] for r in rows} == {expected}
    assert all(r["baseline_error"] is None for r in rows)
    assert rows[-1]["fraction_of_baseline"] >= 0.9  # the oracle's return is the optimum


DRIVER_ONLY = """
import runpy, sys
sys.path.insert(0, sys.argv[1])  # the user's package: importable in the driver only
sys.argv = ["learner", *sys.argv[2:]]
runpy.run_module("learner", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_workers_get_the_user_module_even_where_only_the_driver_has_it(project, tmp_path):
    """Ray workers do not share the driver's sys.path (on a cluster, not its disk
    either): the run ships the user's package with the job (runtime_env.py_modules).
    Here the driver alone can import it, from a directory that is neither its working
    directory nor on PYTHONPATH, so only the shipped copy reaches the actors."""
    command = [sys.executable, "-c", DRIVER_ONLY, str(project), "--config-dir"]
    command += [str(project / "conf"), "+exp=corridor", "train.env_steps=4000"]
    command += ["evaluator.every_env_steps=2000", "checkpoint.every_env_steps=2000"]
    command += ["env.simulator.mode=launch", "train.progress=false", f"hydra.run.dir={tmp_path}"]
    run = run_cli(command, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert_every_scheduled_checkpoint_evaluated(tmp_path, 2000)


# -- envs we did not write, and our own, through every simulator mode ----------------
@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def short_run(exp: str, env_steps: int, envs_per_actor: int, fragment: int) -> list[str]:
    """A short run of an experiment, evaluated every 4,000 env steps."""
    return [
        f"+exp={exp}",
        f"train.env_steps={env_steps}",
        f"actors.envs_per_actor={envs_per_actor}",
        f"actors.fragment_length={fragment}",
        "evaluator.every_env_steps=4000",
        "checkpoint.every_env_steps=4000",
        "train.progress=false",
    ]


CARTPOLE = short_run("cartpole", 8000, 8, 64)
WAREHOUSE = short_run("warehouse", 12000, 16, 32)


@pytest.fixture(scope="module")
def warehouse_oracle() -> float:
    """The oracle's return on the default evaluation seeds, computed in-process."""
    config = EvaluatorConfig()
    return ORACLE.mean_return(EnvConfig(), evaluation_seeds(config.seed, config.episodes))


@pytest.fixture(scope="module")
def servers():
    """One real sims.server per env for ``connect`` runs."""
    started = {env: start_simulator(env) for env in ("CartPole-v1", "Warehouse-v0")}
    yield {env: address for env, (_, address) in started.items()}
    for process, _ in started.values():
        process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["launch", "connect"])  # in-process: every other run test
@pytest.mark.parametrize("env", ["CartPole-v1", "Warehouse-v0"])
def test_a_stock_env_and_ours_train_with_the_evaluator_on(
    tmp_path, local_ray, servers, warehouse_oracle, env, mode
):
    overrides = list(CARTPOLE if env == "CartPole-v1" else WAREHOUSE)
    overrides.append(f"env.simulator.mode={mode}")
    if mode == "connect":
        overrides.append(f"env.simulator.address={servers[env]}")
    result = train(compose_config(overrides), tmp_path)
    rows = assert_every_scheduled_checkpoint_evaluated(tmp_path, 4000)
    assert result.counters.evaluations == len(rows) and result.counters.evaluator_failures == 0
    if env == "CartPole-v1":  # no oracle: returns and coverage, no fraction
        assert {r["baseline"] for r in rows} == {"none"}
        assert all(r["fraction_of_baseline"] is None for r in rows)
        assert all(r["visitation_grid"] is None for r in rows)
    else:  # the oracle answers through the server exactly as in-process
        assert {r["baseline"] for r in rows} == {"oracle"}
        assert rows[0]["baseline_return"] == pytest.approx(warehouse_oracle, rel=1e-6)
        assert all(r["visitation_grid"] for r in rows)


@pytest.mark.slow
def test_connect_needs_only_the_server_not_the_env(tmp_path):
    """What a simulator written in another language offers: a server. The env id is
    registered only in the server's process (tests/check_envs.py), not turnwise's."""
    server, address = start_simulator("check_envs:CheckCorridor-v0", cwd=REPO / "tests")
    command = [sys.executable, "-m", "learner", "env.id=CheckCorridor-v0"]
    command += ["env.simulator.mode=connect", f"env.simulator.address={address}"]
    command += ["actors.num_actors=1", "actors.envs_per_actor=8", "train.env_steps=4000"]
    command += ["evaluator.every_env_steps=2000", "checkpoint.every_env_steps=2000"]
    command += ["train.progress=false", f"hydra.run.dir={tmp_path}"]
    try:
        run = run_cli(command, REPO)
    finally:
        server.kill()
        server.wait()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = assert_every_scheduled_checkpoint_evaluated(tmp_path, 2000)
    assert {r["baseline"] for r in rows} == {"none"}  # it declares no oracle


# -- the KubeRay RayJob's entrypoint, as written in k8s/ -----------------------------
RAYJOB_SUBSTITUTIONS = {
    "ray.address": None,  # a local Ray here, not the KubeRay cluster
    "monitoring.linger_s": "0",  # no Prometheus scrapes this test's driver
}


@pytest.mark.slow
def test_the_rayjob_entrypoint_runs_against_a_local_simulator(tmp_path, s3_endpoint):
    job = yaml.safe_load((REPO / "k8s" / "rayjob-train.yaml").read_text())
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "learner"]
    overrides = dict(w.split("=", 1) for w in words[3:] if "=" in w and not w.startswith("+"))
    assert overrides["env.simulator.mode"] == "connect"  # what the pods run
    for uri in (overrides["checkpoint.uri"], overrides["store.uri"]):
        boto3.client("s3").create_bucket(Bucket=uri.removeprefix("s3://").split("/")[0])
    server, address = start_simulator("Warehouse-v0")
    substitutions = {
        **RAYJOB_SUBSTITUTIONS,
        "env.simulator.address": address,
        "hydra.run.dir": str(tmp_path),
    }
    command = [sys.executable, "-m", "learner"]
    for word in words[3:]:
        key = word.split("=", 1)[0]
        if key not in substitutions:
            command.append(word)
        elif substitutions[key] is not None:
            command.append(f"{key}={substitutions[key]}")
    # 6 actors on a 2-core box; the local node advertises the custom resources the
    # RayJob's pods do (turnwise_rollout on workers, turnwise_learner on the head)
    resources = "{turnwise_rollout: 6, turnwise_learner: 1}"
    budget = ["train.env_steps=16000", f"ray.init={{num_cpus: 4, resources: {resources}}}"]
    budget += ["evaluator.every_env_steps=8000", "checkpoint.every_env_steps=8000"]
    try:
        run = subprocess.run(
            [*command, *budget], cwd=REPO, capture_output=True, text=True, timeout=600
        )
    finally:
        server.kill()
        server.wait()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert_every_scheduled_checkpoint_evaluated(overrides["store.uri"], 8000)  # all in S3
    assert open_store(overrides["checkpoint.uri"]).list()
    assert RunStore(overrides["store.uri"]).files("transitions", "part-*.parquet", recursive=True)


# -- bad plug-ins and baselines ------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("env.id=no_such_pkg.envs:Corridor-v0", "no_such_pkg.envs"),
        ("env.id=corridor_env:Nowhere-v0", "Nowhere-v0"),
        ("evaluator.baseline=corridor_env.policies:no_such_policy", "no_such_policy"),
        ("evaluator.baseline=no_such_pkg:policy", "no_such_pkg"),
        ("evaluator.baseline=fastest", "fastest"),
    ],
)
def test_a_bad_plug_in_fails_before_ray_starts_naming_it(project, override, named):
    command = [*learner_command("inprocess"), override, "hydra.run.dir=runs/bad"]
    run = run_cli(command, project, timeout=60)
    assert run.returncode == 2
    assert named in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert "Started a local Ray" not in run.stderr + run.stdout


def test_a_baseline_policy_that_raises_is_reported_and_evaluation_goes_on(
    tmp_path, project, monkeypatch
):
    monkeypatch.syspath_prepend(str(project))
    (project / "corridor_env" / "flaky.py").write_text(
        "calls = []\n\n"
        "def policy(observation):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 1:\n"
        "        raise RuntimeError('the heuristic lost its map')\n"
        "    return 1\n"
    )
    env = EnvConfig(id="corridor_env:Corridor-v0", kwargs={"length": 8})
    corridor = ("env.id=corridor_env:Corridor-v0", "env.kwargs={length: 8}")
    store = tmp_path / "checkpoints"
    make_checkpoint(store, 100, overrides=corridor)
    settings = EvaluatorConfig(episodes=4, baseline="corridor_env.flaky:policy")
    evaluator = Evaluator(str(store), env, settings, str(tmp_path))
    first = evaluator.evaluate()
    assert "the heuristic lost its map" in first["baseline_error"]
    assert first["fraction_of_baseline"] is None and np.isfinite(first["eval_return"])
    make_checkpoint(store, 200, overrides=corridor)
    second = evaluator.evaluate()  # retried: this time the baseline runs
    assert second["baseline_error"] is None and second["fraction_of_baseline"] is not None


# -- config: kwargs and the evaluation env -------------------------------------------
def test_choosing_another_env_does_not_carry_the_warehouse_kwargs():
    assert compose_config(["env.id=CartPole-v1"]).env.kwargs == {}
    assert compose_config(["+exp=warehouse", "env.id=CartPole-v1"]).env.kwargs == {}


def test_the_evaluation_env_is_a_full_env_config():
    config = compose_config(
        ["+exp=cartpole", "evaluator.env={id: CartPole-v1, kwargs: {max_episode_steps: 50}}"]
    )
    assert config.evaluator.env == EnvConfig(id="CartPole-v1", kwargs={"max_episode_steps": 50})
    assert compose_config(["+exp=cartpole"]).evaluator.env.id == ""  # the training env
