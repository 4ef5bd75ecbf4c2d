"""Sample Factory 2's APPO (async PPO with V-trace) behind the benchmark interface.

Sample Factory runs in its own venv (``benchmarks.sample_factory_env``: it needs
gymnasium < 1.0 and numpy < 2), as a subprocess: ``sample_factory_runner.py`` trains
with Sample Factory's parallel runner (rollout workers, an inference worker and the
learner, each a process) and asks the learner for a checkpoint every
``eval_every_env_steps``. This process evaluates each checkpoint with the common
evaluation: it stops the whole run (SIGSTOP to its process group), rebuilds the greedy
actor from the checkpoint's weights (``greedy_actor``), evaluates on the held-out seeds
with the training clock paused, and lets the run go on (SIGCONT). A point's time is the
training time when its checkpoint was written.

``settings.extra`` holds Sample Factory's own options by their command-line names
(``rollout``, ``batch_size``, ``num_epochs``, ``learning_rate``...; ``matched_extra()``
gives turnwise's ``+exp=warehouse`` settings, ``UNMATCHED`` what cannot be matched).
The network is ``settings.hidden_sizes`` with tanh and no RNN, on the CPU;
``settings.num_envs`` envs are split over ``num_workers`` rollout workers (default:
the cores, at most half the envs) unless ``num_envs_per_worker`` is given.

Needed to make Sample Factory 2.1.1 run here (see ``sample_factory_runner``):
``--decorrelate_envs_on_one_worker False`` (its start-up decorrelation steps each env
for a different number of steps one by one: minutes with 128 envs a worker);
V-trace needs ``--recurrence`` equal to ``--rollout`` even without an RNN, and
``--normalize_returns False`` (its V-trace mixes normalized values with raw rewards);
its summaries crash under V-trace (patched in the runner); ``--train_for_seconds``
never fires (this adapter stops the run); and the run is ended by killing its process
group (its own shutdown can hang joining its processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from benchmarks.sample_factory_env import sample_factory_python
from benchmarks.systems.common import (
    Budget,
    Settings,
    SolveRecorder,
    Task,
    batch_act,
    evaluate,
    finite_or_none,
    matched,
    throughput_result,
)
from turnwise.config import compose_config

SYSTEM = "sample_factory"
RUNNER = Path(__file__).with_name("sample_factory_runner.py")
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600  # processes spawned and the first training iteration done
POLL_S = 0.05

# What every run gets whatever ``settings.extra`` says: how the runs are driven here.
FIXED = {
    "device": "cpu",
    "use_rnn": False,
    "nonlinearity": "tanh",
    "restart_behavior": "overwrite",
    "save_every_sec": 10**9,  # checkpoints come when the runner asks for them
    "keep_checkpoints": 10**6,
    "save_best_every_sec": 10**9,
    "with_wandb": False,
    "log_to_file": False,
}
DEFAULTS = {"decorrelate_envs_on_one_worker": False}  # see the module's docstring

UNMATCHED = {
    "ppo_clip_ratio": "Sample Factory clips the ratio to [1/(1+e), 1+e] = [0.833, 1.2], "
    "turnwise to [1-e, 1+e] = [0.8, 1.2]",
    "gae_lambda": "Sample Factory's V-trace has no lambda (its c-hat traces are "
    "min(1, ratio)); turnwise's are lambda x min(c_clip, ratio), lambda 0.95",
    "normalizer": "turnwise normalizes observations over a 200K-env-step window, clip "
    "10; Sample Factory keeps running mean and variance over all steps, clip 5",
    "value_bootstrap": "turnwise bootstraps a truncated episode's last step from the "
    "value of its final observation; Sample Factory's value_bootstrap (on) adds "
    "gamma x v(t) of the last observation it has (its rollouts keep no final one)",
    "vtrace_bootstrap": "Sample Factory's V-trace bootstraps a rollout's last step from "
    "(v(T-1) - r(T-1)) / gamma, its rollouts keeping no next observation; turnwise from "
    "the value of the next observation",
    "pipeline": "Sample Factory's rollout workers send observations to a separate "
    "inference worker for each step (double-buffered: worker_num_splits 2); turnwise's "
    "rollout actors act themselves, one batched forward pass per step",
}


MATCHED_KEYWORDS = {  # Sample Factory option -> common.Matched field
    "num_envs_per_worker": "num_envs",
    "rollout": "rollout_steps",
    "recurrence": "rollout_steps",  # V-trace needs it equal to the rollout
    "batch_size": "minibatch_size",
    "num_epochs": "epochs",
    "learning_rate": "lr",
    "gamma": "gamma",
    "gae_lambda": "gae_lambda",  # unused under V-trace (UNMATCHED)
    "ppo_clip_ratio": "clip",
    "exploration_loss_coeff": "entropy_coef",
    "max_grad_norm": "max_grad_norm",
    "normalize_input": "normalize_observations",
}


def matched_extra(experiment: str = "warehouse") -> dict[str, Any]:
    """Sample Factory's options (and ``num_envs``) that give it ``+exp=<experiment>``'s
    algorithm settings, in turnwise's own layout: ``actors.num_actors`` workers of
    ``actors.envs_per_actor`` envs, rollouts of ``actors.fragment_length`` steps, one
    update per ``envs_per_actor x fragment_length`` rows (``UNMATCHED``: what differs)."""
    config = compose_config([f"+exp={experiment}"])
    learner, actors = config.learner, config.actors
    settings = matched(experiment, num_envs=actors.envs_per_actor)
    if settings.rows_per_update % settings.minibatch_size:
        raise ValueError(f"{settings.rows_per_update} rows per update are not whole minibatches")
    return {
        "num_envs": actors.num_actors * actors.envs_per_actor,
        "num_workers": actors.num_actors,
        **settings.keywords(MATCHED_KEYWORDS),
        "num_batches_per_epoch": settings.rows_per_update // settings.minibatch_size,
        "lr_schedule": "constant",
        "with_vtrace": learner.correction == "vtrace",
        "vtrace_rho": learner.rho_clip,
        "vtrace_c": learner.c_clip,
        "normalize_returns": False,  # turnwise does not; V-trace needs it off
        "max_policy_lag": learner.max_policy_lag,  # older batches are dropped, as turnwise's
        "value_bootstrap": True,  # truncated episodes bootstrapped (UNMATCHED: how)
        "ppo_clip_value": 1e6,  # no value clipping in turnwise
        # Sample Factory's value loss is value_loss_coeff x mean squared error,
        # turnwise's value_coef x 0.5 x mean squared error
        "value_loss_coeff": settings.value_coef * 0.5,
        "adam_eps": 1e-5,  # turnwise's Adam
        "actor_critic_share_weights": False,  # turnwise: separate policy and value MLPs
    }


def _argv(options: dict[str, Any]) -> list[str]:
    """Sample Factory's command line for ``options`` (lists: one value each)."""
    argv = []
    for key, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [f"--{key}", *(str(v) for v in values)]
    return argv


def sample_factory_options(task: Task, settings: Settings, train_dir: Path) -> dict[str, Any]:
    """Every option of the run: defaults, then ``settings``, then ``settings.extra``,
    then what this adapter needs (``FIXED``)."""
    extra = dict(settings.extra)
    num_envs = int(extra.pop("num_envs", settings.num_envs))  # not an option of its own
    workers = int(extra.pop("num_workers", min(os.cpu_count() or 1, max(num_envs // 2, 1))))
    per_worker = int(extra.pop("num_envs_per_worker", max(num_envs // workers, 2)))
    if per_worker % 2:
        raise ValueError(f"{per_worker} envs a worker: Sample Factory needs an even number")
    return {
        **DEFAULTS,
        "seed": settings.seed,
        "encoder_mlp_layers": list(settings.hidden_sizes),
        "num_workers": workers,
        "num_envs_per_worker": per_worker,
        **extra,
        **FIXED,
        "train_dir": str(train_dir),
        "experiment": "run",
    }


def greedy_actor(state: dict[str, torch.Tensor], action_space: gymnasium.Space):
    """The greedy actions of a Sample Factory MLP actor-critic's checkpointed weights
    (shared or separate weights): observations normalized as its running mean-std
    does (``(x - mean) / sqrt(var + 1e-5)``, clipped to +-5), the encoder's linear
    layers with tanh, then the action head (argmax of the logits, or the Gaussian's
    mean)."""
    prefix = next(
        p for p in ("actor_encoder", "encoder") if f"{p}.encoders.obs.mlp_head.0.weight" in state
    )
    layers = []
    index = 0
    while f"{prefix}.encoders.obs.mlp_head.{index}.weight" in state:
        key = f"{prefix}.encoders.obs.mlp_head.{index}"
        layers.append((state[f"{key}.weight"].float(), state[f"{key}.bias"].float()))
        index += 2  # Linear, Tanh, Linear, Tanh...
    head = state["action_parameterization.distribution_linear.weight"].float()
    head_bias = state["action_parameterization.distribution_linear.bias"].float()
    norm = "obs_normalizer.running_mean_std.running_mean_std.obs"
    mean = state.get(f"{norm}.running_mean")
    std = None if mean is None else torch.sqrt(state[f"{norm}.running_var"].float() + 1e-5)

    def predict(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(obs, dtype=torch.float32)
            if mean is not None:
                x = ((x - mean.float()) / std).clamp(-5.0, 5.0)
            for weight, bias in layers:
                x = torch.tanh(x @ weight.T + bias)
            out = x @ head.T + head_bias
            if isinstance(action_space, gymnasium.spaces.Discrete):
                return out.argmax(-1).numpy()
            return out[:, : int(np.prod(action_space.shape))].numpy()  # means, then log-stds

    return predict


# What a Sample Factory checkpoint holds besides tensors and Python numbers: its best
# score, a numpy scalar, pickled by the SF venv's numpy 1.x (hence the old module name).
_CHECKPOINT_GLOBALS = [
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(kind)) for kind in (np.float32, np.float64, np.int32, np.int64, np.bool_)),
]


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights, loaded ``weights_only`` (nothing unpickled beyond
    tensors, containers and the numpy scalars allowed above)."""
    with torch.serialization.safe_globals(_CHECKPOINT_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)["model"]


class SampleFactoryRun:
    """One Sample Factory training subprocess, its progress lines and checkpoints."""

    def __init__(self, task: Task, settings: Settings, save_every: int) -> None:
        python, error = sample_factory_python()
        if python is None:
            raise RuntimeError(error)
        self.dir = Path(tempfile.mkdtemp(prefix="sample-factory-"))
        self.progress_path = self.dir / "progress.jsonl"
        self.save_request = self.dir / "save-request"
        self.options = sample_factory_options(task, settings, self.dir)
        self.checkpoint_dir = self.dir / "run" / "checkpoint_p0"
        command = [
            str(python), str(RUNNER), "--env-id", task.env_id,
            "--env-kwargs", json.dumps(task.kwargs), "--progress", str(self.progress_path),
            "--save-every", str(save_every), "--save-request", str(self.save_request),
            "--", *_argv(self.options),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("VIRTUAL_ENV", None)
        self.log_path = self.dir / "sample_factory.log"
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                command, cwd=self.dir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped and ended whole
            )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._read = 0
        self.seen: set[Path] = set()

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"Sample Factory exited {self.process.returncode}:\n{tail}")

    def progress(self) -> list[dict[str, Any]]:
        """All progress lines so far (one per training iteration)."""
        if self.progress_path.exists():
            with self.progress_path.open() as file:
                file.seek(self._read)
                text = file.read()
            complete = text[: text.rfind("\n") + 1]
            self._read += len(complete.encode())
            self.lines += [json.loads(line) for line in complete.splitlines()]
        return self.lines

    def wait(self, until: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := until()):
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Sample Factory: nothing after {timeout:.0f} s ({self.log_path})"
                )
            time.sleep(POLL_S)
        return found

    def new_checkpoint(self) -> tuple[Path, int] | None:
        """The oldest checkpoint not yet returned, with its env steps."""
        paths = sorted(set(self.checkpoint_dir.glob("checkpoint_*.pth")) - self.seen)
        if not paths:
            return None
        self.seen.add(paths[0])
        return paths[0], int(paths[0].stem.rsplit("_", 1)[1])

    def request_checkpoint(self) -> None:
        self.save_request.touch()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.process.pid, sig)

    def close(self) -> None:
        """End every process of the run (its own shutdown can hang) and its files."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.process.wait()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def _notes(run: SampleFactoryRun, **more: Any) -> dict[str, Any]:
    options = {k: v for k, v in run.options.items() if k not in ("train_dir", "experiment")}
    return {"sample_factory_options": options, "sample_factory": "2.1.1", **more}


def throughput(task: Task, seconds: float, settings: Settings) -> dict[str, Any]:
    """Env steps the learner consumed per second over a window of ``seconds``, from the
    end of the first training iteration (start-up excluded) to the first iteration
    ``seconds`` later."""
    run = SampleFactoryRun(task, settings, save_every=0)
    try:
        first = run.wait(
            lambda: next((p for p in run.progress() if p["env_steps"] > 0), None), START_TIMEOUT_S
        )
        last = run.wait(
            lambda: next((p for p in run.progress() if p["time"] >= first["time"] + seconds), None),
            seconds + START_TIMEOUT_S,
        )
        return throughput_result(
            SYSTEM, task, last["env_steps"] - first["env_steps"], last["time"] - first["time"],
            settings, **_notes(run),
        )  # fmt: skip
    finally:
        run.close()


def _train_return(lines: list[dict[str, Any]], at: float) -> float | None:
    before = [p["train_return"] for p in lines if p["time"] <= at and p["train_return"] is not None]
    return finite_or_none(before[-1]) if before else None


def time_to_solve(task: Task, budget: Budget, settings: Settings) -> dict[str, Any]:
    """Train until solved or out of budget, evaluating each checkpoint (one every
    ``eval_every_env_steps``) with the run stopped and the training clock paused. The
    clock starts at the first training iteration, as the other systems' start after
    their set-up."""
    run = SampleFactoryRun(task, settings, save_every=budget.eval_every_env_steps)
    action_space = task.make_env().action_space
    try:
        run.wait(lambda: run.progress(), START_TIMEOUT_S)  # the first iteration
        recorder = SolveRecorder(SYSTEM, task, budget, settings)
        requested = False
        while True:
            run.check()
            found = run.new_checkpoint()
            if found is None:
                lines = run.progress()
                if not requested and recorder.out_of_budget(lines[-1]["env_steps"]):
                    run.request_checkpoint()  # one more point, at the cap
                    requested = True
                time.sleep(POLL_S)
                continue
            run.signal(signal.SIGSTOP)
            path, env_steps = found
            written = path.stat().st_mtime
            seconds = recorder.clock.seconds() - max(time.time() - written, 0.0)
            with recorder.clock.paused():
                state = _load_weights(path)
                scores = evaluate(task, batch_act(greedy_actor(state, action_space)))
            point = {
                "seconds": seconds,
                "env_steps": env_steps,
                "train_return": _train_return(run.progress(), written),
            }
            if recorder.add({**point, **scores}):
                break
            run.signal(signal.SIGCONT)
        return recorder.result(**_notes(run))
    finally:
        run.close()
