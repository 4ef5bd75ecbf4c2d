"""The training driver: Ray, rollout actors, the learner loop, checkpoints.

``train(config, run_dir)`` is the whole run. Everything that can be checked
without Ray (config, env id and kwargs, checkpoint URI, resume state) is checked
before ``ray.init``. The driver only orchestrates: the learner, the rollout actors and
the evaluator are Ray actors placed by their resources, and each writes its own records
(checkpoints, transition log, evaluations) to the run store (``store.uri``); the driver
writes the run record and ``metrics.jsonl`` there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from actors.envs import EnvInfo, close_launchers, describe_env
from actors.health import ActorFailing, ActorHealth
from actors.rollout import RolloutWorker
from evaluator.baselines import resolve_baseline
from evaluator.remote import RemoteEvaluator
from learner.actor import LearnerActor
from learner.ppo import PPOLearner
from learner.progress import (
    ConsoleProgress,
    EpisodeStats,
    evaluation_line,
    trim_metrics,
)
from monitoring.cloudwatch import CloudWatchExporter
from monitoring.tensorboard import TensorBoardLog
from sims.registry import user_module_path
from turnwise.checkpoint import (
    CheckpointError,
    checkpoint_name,
    load_checkpoint,
    read_manifest,
    retain,
    save_checkpoint,
)
from turnwise.checkpoint_store import CheckpointStore, open_store
from turnwise.config import Config, check_values, evaluation_env
from turnwise.metrics import TrainingMetrics
from turnwise.run_store import RecordFile, RunStore, node_record, write_atomic
from turnwise.spaces import space_to_json

log = logging.getLogger(__name__)

ACTOR_START_TIMEOUT_S = 300.0
EVALUATION_DRAIN_S = 300.0  # at the end of a run, wait this long for queued evaluations


class Schedule:
    """Which env-step multiples (checkpoint, evaluation) a run has crossed."""

    def __init__(self, env_steps: int, config: Config) -> None:
        self.every = (config.checkpoint.every_env_steps, config.evaluator.every_env_steps)
        self.next = [(env_steps // n + 1) * n for n in self.every]

    def due(self, env_steps: int) -> tuple[bool, bool]:
        crossed = [env_steps >= n for n in self.next]
        self.next = [
            (env_steps // every + 1) * every if hit else n
            for hit, every, n in zip(crossed, self.every, self.next, strict=True)
        ]
        return crossed[0], crossed[1]


@dataclass
class Counters:
    """What a run has done; saved in every checkpoint and restored on resume."""

    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    dropped_batches: int = 0
    actor_failures: int = 0
    evaluations: int = 0
    evaluator_failures: int = 0


@dataclass
class TrainResult:
    run_dir: Path
    counters: Counters
    checkpoint: str
    train_return: float


def check_config(config: Config) -> None:
    """Every value against its valid range (``turnwise.config.RULES``), also for a
    Config built in code; raises ValueError naming each key and what is valid."""
    check_values(config)


def run_store(config: Config, run_dir: Path) -> RunStore:
    """Where the run's records go: ``store.uri``, else the run directory."""
    return RunStore(config.store.uri or run_dir)


def checkpoint_store(config: Config, run_dir: Path) -> CheckpointStore:
    """``checkpoint.uri``, else the run store's ``checkpoints``."""
    return open_store(config.checkpoint.uri or run_store(config, run_dir).uri_of("checkpoints"))


def placement(num_cpus: float, resources: dict[str, float], num_gpus: float = 0) -> dict:
    """``.options()`` for an actor of these resources (none where they are empty)."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "resources": dict(resources) or None}
    if num_gpus:
        options["num_gpus"] = num_gpus
    return options


def check_evaluation(config: Config, training: EnvInfo) -> None:
    """The evaluation env and its baseline can be had (before Ray starts)."""
    if not config.evaluator.enabled:
        return
    env = evaluation_env(config.evaluator, config.env)
    info = training if env is config.env else describe_env(env)
    resolve_baseline(config.evaluator.baseline, info.declarations)


def user_modules(config: Config) -> list[str]:
    """Local paths of the user's modules the run names (a plug-in env, a baseline
    policy) that Ray workers on other nodes would not have: shipped with the job."""
    envs = [config.env, evaluation_env(config.evaluator, config.env)]
    # a connect-mode env runs in its server: its module (if any) is the server's business
    names = [env.id for env in envs if env.simulator.mode != "connect"]
    names.append(config.evaluator.baseline)
    paths = {user_module_path(name) for name in names if ":" in name}
    return sorted(path for path in paths if path)


def ray_init_options(config: Config) -> dict[str, Any]:
    """``ray.init``'s keyword arguments: ``ray.init`` as given, with the user's modules
    added to its runtime env's ``py_modules``."""
    options = dict(config.ray.init)
    modules = user_modules(config)
    if modules:
        runtime_env = dict(options.get("runtime_env") or {})
        runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), *modules]
        options["runtime_env"] = runtime_env
    return options


_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode


@contextmanager
def loopback_node(enabled: bool = True) -> Iterator[None]:
    """While a local Ray starts: Ray's single-machine mode (its default on macOS and
    Windows), whose node address is 127.0.0.1, so that GCS, raylet, object manager,
    workers and agents listen on loopback only. (``ray.init(_node_ip_address=
    "127.0.0.1")`` cannot do it: Ray swaps a loopback address for a reachable one.)"""
    from ray._private import ray_constants  # no public switch; this is the one Ray reads

    if not enabled or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    saved = os.environ.get(_SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE] = "0"  # the processes ray.init starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process, which imported Ray already
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


@contextmanager
def ray_session(config: Config) -> Iterator[None]:
    """Join ``ray.address`` (or start a local Ray, on loopback unless ``ray.init`` names
    a ``_node_ip_address``); leave an already running one alone."""
    if ray.is_initialized():
        yield
        return
    # "local" starts a fresh Ray even when a `ray start` cluster or RAY_ADDRESS is around:
    # an empty ray.address never joins a cluster by accident.
    address, options = config.ray.address or "local", ray_init_options(config)
    with loopback_node(address == "local" and "_node_ip_address" not in options):
        ray.init(address=address, **options)
    try:
        yield
    finally:
        ray.shutdown()


class Trainer:
    """The learner loop around a PPOLearner and a pool of rollout actors."""

    def __init__(self, config: Config, run_dir: Path) -> None:
        check_config(config)
        self.config, self.run_dir = config, run_dir
        self.env: EnvInfo = describe_env(config.env)
        check_evaluation(config, self.env)
        close_launchers()  # a launch-mode probe server is not needed for the whole run
        self.records = run_store(config, run_dir)
        self.store = checkpoint_store(config, run_dir)
        # the initial (or resumed) policy, checked here; it trains in the learner actor
        self.learner = PPOLearner(
            self.env.observation_space, self.env.action_space, config.learner, "cpu"
        )
        self.learner_actor: ray.actor.ActorHandle | None = None  # started by run()
        self.counters = Counters()
        self.episodes = EpisodeStats()
        self._stop = threading.Event()
        self._evaluations_before = self._evaluator_failures_before = 0
        self._marked: dict[str, bool] = {}  # checkpoint name -> marked for evaluation
        self._saved: tuple[int, bool, str] | None = None  # the last save: steps, marked, URI
        self.evaluator: RemoteEvaluator | None = None
        self.telemetry = TrainingMetrics(run=run_dir.resolve().name, experiment=self.env.env_id)
        self.cloudwatch = CloudWatchExporter(  # makes no AWS call at all unless enabled
            config.monitoring.cloudwatch, run=run_dir.resolve().name, experiment=self.env.env_id
        )
        self.tensorboard: TensorBoardLog | None = None  # opened by run() when asked for
        if config.resume:
            self._restore()

    def stop(self) -> None:
        """Ask the loop to finish after the current batch (then it checkpoints as usual)."""
        self._stop.set()

    # -- checkpoints ----------------------------------------------------------------
    def _restore(self) -> None:
        try:
            checkpoint = load_checkpoint(self.store)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"resume=true, but {error}") from error
        if checkpoint.manifest["env_version"] != self.env.version:
            log.warning(
                "resuming a checkpoint of env version %s with env version %s",
                checkpoint.manifest["env_version"],
                self.env.version,
            )
        self.learner.load_state_dict({"model": checkpoint.weights, **checkpoint.trainer["learner"]})
        self.counters = Counters(**checkpoint.trainer["counters"])
        self._evaluations_before = self.counters.evaluations
        self._evaluator_failures_before = self.counters.evaluator_failures
        log.info("resumed from %s at %s env steps", checkpoint.name, self.counters.env_steps)

    def save(self, evaluate: bool = False) -> str:
        """Checkpoint now (the learner actor's state, written here); ``evaluate`` marks it
        for the external evaluator."""
        manifest = {
            "evaluate": evaluate,
            "env_id": self.env.env_id,
            "env_version": self.env.version,
            "observation_space": space_to_json(self.env.observation_space),
            "action_space": space_to_json(self.env.action_space),
            "env_steps": self.counters.env_steps,
            "policy_version": self.learner.version,  # the learner actor's, as last reported
            "counters": dataclasses.asdict(self.counters),
            "train_return": self.episodes.summary()["train_return"],
            "config": dataclasses.asdict(self.config),
        }
        state = ray.get(self.learner_actor.state.remote())
        trainer = {
            "learner": {"optimizer": state["optimizer"], "version": state["version"]},
            "counters": dataclasses.asdict(self.counters),
        }
        uri = save_checkpoint(self.store, state["model"], trainer, manifest)  # keep_last: below
        self._marked[checkpoint_name(self.counters.env_steps)] = evaluate
        self._saved = (self.counters.env_steps, evaluate, uri)
        self._retain()
        self.telemetry.observe_checkpoint()
        return uri

    def _save_final(self) -> str:
        """The final checkpoint; the loop's last one where it is of this very env step and
        marked alike (saving it again wrote, and logged, the same checkpoint twice)."""
        evaluate = self.evaluator is not None
        if self._saved is not None and self._saved[:2] == (self.counters.env_steps, evaluate):
            return self._saved[2]
        return self.save(evaluate=evaluate)

    def _retain(self) -> None:
        """``checkpoint.keep_last``, sparing up to ``checkpoint.keep_awaiting_evaluation``
        checkpoints that await evaluation (the oldest: the evaluator works oldest first),
        so a slow or restarting evaluator still finds them."""
        cfg = self.config.checkpoint
        if cfg.keep_last <= 0:
            return
        old = self.store.list()[: -cfg.keep_last]
        waiting = [name for name in old if self._awaits_evaluation(name)]
        spared = waiting[: cfg.keep_awaiting_evaluation]
        for name in waiting[cfg.keep_awaiting_evaluation :]:
            log.warning(
                "retention deletes %s unevaluated: more than %d checkpoints await evaluation "
                "(checkpoint.keep_awaiting_evaluation)",
                name,
                cfg.keep_awaiting_evaluation,
            )
        retain(self.store, cfg.keep_last, protect=spared)

    def _awaits_evaluation(self, name: str) -> bool:
        evaluator = self.evaluator
        if evaluator is None or evaluator.gone or name in evaluator.evaluated:
            return False
        if name not in self._marked:  # written before a resume
            try:
                manifest = read_manifest(self.store, name)
            except (FileNotFoundError, CheckpointError):  # gone or corrupt: not protected
                return False
            self._marked[name] = bool(manifest.get("evaluate"))
        return self._marked[name]

    # -- the run --------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._write_run_record()
        self._serve_metrics()
        self.cloudwatch.ensure_divergence_alarm()
        self.tensorboard = self._open_tensorboard()
        with ray_session(self.config):
            self.learner_actor = self._start_learner()
            actors = self._start_actors()
            self.evaluator = self._start_evaluator()
            # every actor starts sampling at once, and start-up is not counted in steps/s
            started = [actor.ping.remote() for actor in actors]
            if self.evaluator is not None:
                started.append(self.evaluator.ready)
            ray.get(started, timeout=ACTOR_START_TIMEOUT_S)
            self._write_placement()
            self._start_counting_evaluations()
            metrics = RecordFile(self.records, "metrics.jsonl", self.config.store.flush_interval_s)
            if self.config.resume:  # the stretch after the checkpoint is redone
                trim_metrics(metrics, self.counters.env_steps)
            progress = ConsoleProgress(
                self.config.train.env_steps, self.counters.env_steps, self.config.train.progress
            )
            try:
                self._loop(actors, metrics, progress)
                uri = self._save_final()
                if self.evaluator is not None:  # the final checkpoint is evaluated too
                    self.evaluator.request()
                    for row in self.evaluator.drain(timeout=EVALUATION_DRAIN_S):
                        self._observe_evaluation(row)
                    self._count_evaluations()
                    self._retain()  # the backlog spared for evaluation is evaluated now
            finally:
                progress.close()
                metrics.close()
                for actor in actors:
                    ray.kill(actor)
                if self.evaluator is not None:
                    ray.kill(self.evaluator.actor)
                ray.kill(self.learner_actor)
                self._linger()
                self.telemetry.close()
                self.cloudwatch.close()
                if self.tensorboard is not None:
                    self.tensorboard.close()
        log.info("run finished at %s env steps; checkpoint %s", self.counters.env_steps, uri)
        return TrainResult(
            self.run_dir, self.counters, uri, self.episodes.summary()["train_return"]
        )

    def _start_learner(self) -> ray.actor.ActorHandle:
        """The learner actor, where ``learner.num_gpus`` / ``learner.resources`` are (a
        local Ray: this machine), starting from the checked initial or resumed policy. It
        runs at normal OS priority, as the driver did: Ray starts its workers at niceness
        15, which would let every rollout actor and any other process on the node take
        the CPU from the run's serial stage."""
        cfg = self.config.learner
        return (
            ray.remote(LearnerActor)
            .options(
                name=f"turnwise-learner@{self.run_dir.resolve()}",
                runtime_env={"env_vars": {"RAY_worker_niceness": "0"}},
                **placement(cfg.num_cpus, cfg.resources, cfg.num_gpus),
            )
            .remote(
                self.env.observation_space,
                self.env.action_space,
                cfg,
                self.learner.state_dict(),
            )
        )

    def _start_actors(self) -> list[ray.actor.ActorHandle]:
        cfg = self.config
        remote = ray.remote(RolloutWorker)
        log_dir = self.records.uri if cfg.transition_log.enabled else None
        return [
            remote.options(
                name=rollout_actor_name(self.run_dir, i),
                max_restarts=cfg.actors.max_restarts,
                **placement(cfg.actors.num_cpus, cfg.actors.resources),
            ).remote(i, cfg.env, cfg.actors, cfg.learner, cfg.train.seed, log_dir)
            for i in range(cfg.actors.num_actors)
        ]

    def _start_evaluator(self) -> RemoteEvaluator | None:
        if not self.config.evaluator.enabled:
            return None
        return RemoteEvaluator(self.config, self.run_dir, self.store.uri, self.records.uri)

    def _write_placement(self) -> None:
        """``placement.json`` in the run store: the cluster's nodes and their resources,
        and the nodes of the driver, the learner (and its device) and the evaluator as the
        run started. Each rollout actor life records
        its own node in its ``transitions/actor-NNN/incarnation-III.json``."""
        record: dict[str, Any] = {"time": time.time(), "driver": node_record()}
        record["nodes"] = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        record["learner"] = ray.get(self.learner_actor.describe.remote())
        if self.evaluator is not None:
            record["evaluator"] = ray.get(self.evaluator.actor.describe.remote())
        self.records.write("placement.json", json.dumps(record, indent=2).encode())
        log.info(
            "learner on node %s (%s); run store %s",
            record["learner"]["node_id"],
            record["learner"]["device"],
            self.records.uri,
        )

    def _linger(self) -> None:
        """Hold the metrics endpoint open with the final values for a last scrape."""
        if self.config.monitoring.metrics_port >= 0 and self.config.monitoring.linger_s > 0:
            log.info(
                "metrics endpoint stays up %.0f s for a last scrape",
                self.config.monitoring.linger_s,
            )
            time.sleep(self.config.monitoring.linger_s)

    def _serve_metrics(self) -> None:
        """The Prometheus endpoint; a busy port falls back to a free one (logged and
        written to RUN_DIR/metrics_endpoint)."""
        cfg = self.config.monitoring
        if cfg.metrics_port < 0:
            return
        try:
            port = self.telemetry.serve(cfg.metrics_port, cfg.metrics_host)
        except OSError as error:
            log.warning(
                "metrics port %d unavailable (%s); using a free one", cfg.metrics_port, error
            )
            port = self.telemetry.serve(0, cfg.metrics_host)
        url = f"http://{cfg.metrics_host}:{port}/metrics"
        write_atomic(self.run_dir / "metrics_endpoint", url.encode())

    def _observe_evaluation(self, row: dict[str, Any]) -> None:
        if row.get("divergence_alert"):
            log.warning("%s  ALERT divergence %.2f", evaluation_line(row), row["eval_train_ratio"])
        else:
            log.info("%s", evaluation_line(row))
        self.telemetry.observe_evaluation(row)
        self.cloudwatch.publish(row)
        if self.tensorboard is not None:
            self.tensorboard.evaluation(row)

    def _open_tensorboard(self) -> TensorBoardLog | None:
        cfg = self.config.monitoring
        if not cfg.tensorboard:
            return None
        log_dir = cfg.tensorboard_dir or self.run_dir / "tensorboard"
        log.info("TensorBoard scalars: tensorboard --logdir %s", log_dir)
        return TensorBoardLog(log_dir)

    def _start_counting_evaluations(self) -> None:
        """The evaluator's table as it was before this run: on resume it may hold more
        than the checkpoint's counters (the final checkpoint's own evaluation)."""
        if self.evaluator is None:
            return
        self.evaluator.start()
        if self.config.resume:
            self._evaluations_before = max(self._evaluations_before, len(self.evaluator.evaluated))

    def _count_evaluations(self) -> None:
        if self.evaluator is not None:
            for row in self.evaluator.poll():
                self._observe_evaluation(row)
            self.counters.evaluations = len(self.evaluator.results) + self._evaluations_before
            self.counters.evaluator_failures = (
                self.evaluator.failures + self._evaluator_failures_before
            )

    def _actor_failed(self, health: ActorHealth, error: Exception, submitted: float) -> None:
        """Count a crash once (not each call failing while Ray restarts the actor);
        raise when the actor keeps failing."""
        try:
            if health.failed(error, submitted):
                self.counters.actor_failures += 1
                log.warning("%s failed (%s); Ray restarts it", health.name, type(error).__name__)
            health.check()
        except ActorFailing as failing:
            raise failing from error

    def _loop(self, actors, metrics: RecordFile, progress: ConsoleProgress) -> None:
        cfg = self.config
        learner = self.learner_actor
        weights = learner.weights.remote()
        pending: dict[ray.ObjectRef, tuple[int, float]] = {  # -> (actor, when submitted)
            actor.sample.remote(weights): (i, time.monotonic())
            for i, actor in enumerate(actors)
            for _ in range(cfg.actors.max_in_flight)
        }
        health = [ActorHealth(f"rollout actor {i}") for i in range(len(actors))]
        schedule = Schedule(self.counters.env_steps, cfg)
        started, start_steps = time.monotonic(), self.counters.env_steps
        deadline = started + cfg.train.max_seconds if cfg.train.max_seconds > 0 else float("inf")
        while (
            self.counters.env_steps < cfg.train.env_steps
            and not self._stop.is_set()
            and time.monotonic() < deadline
        ):
            # the batch stays where it is until the learner fetches it (not via the driver)
            [ref], _ = ray.wait(list(pending), num_returns=1, fetch_local=False)
            i, submitted = pending.pop(ref)
            summary_ref, new_weights = learner.update.options(num_returns=2).remote(
                [ref], self.counters.env_steps / cfg.train.env_steps
            )
            # keep the actor busy meanwhile
            pending[actors[i].sample.remote(weights)] = (i, time.monotonic())
            summary = ray.get(summary_ref)
            if summary["failed"]:  # the actor's error, read from the reference
                try:
                    ray.get(ref)
                except (RayActorError, RayTaskError, ObjectLostError) as error:
                    # lost: the batch was made on a node that has gone, with its actor
                    self._actor_failed(health[i], error, submitted)
                continue
            health[i].succeeded()
            if summary["dropped"]:
                self.counters.dropped_batches += 1
                continue
            weights, stats = new_weights, summary["stats"]
            self.learner.version = summary["version"]
            self.counters.env_steps += summary["rows"]
            self.counters.updates += 1
            self.counters.episodes += self.episodes.add(summary["episodes"])
            self._count_evaluations()
            elapsed = max(time.monotonic() - started, 1e-9)
            row = {
                "env_steps": self.counters.env_steps,
                "updates": self.counters.updates,
                "policy_version": self.learner.version,
                "time_s": elapsed,
                "env_steps_per_second": (self.counters.env_steps - start_steps) / elapsed,
                **{k: v for k, v in dataclasses.asdict(self.counters).items() if k != "env_steps"},
                **self.episodes.summary(),
                **stats,
            }
            metrics.append(row)
            self.telemetry.observe_update(row)
            self.cloudwatch.publish(row)
            if self.tensorboard is not None:
                self.tensorboard.update(row)
            progress.update(self.counters.env_steps, row)
            checkpoint_due, evaluation_due = schedule.due(self.counters.env_steps)
            if checkpoint_due or (evaluation_due and self.evaluator is not None):
                self.save(evaluate=evaluation_due and self.evaluator is not None)
                if evaluation_due and self.evaluator is not None:
                    self.evaluator.request()

    def _write_run_record(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "env_id": self.env.env_id,
            "env_version": self.env.version,
            "run_seed": self.config.train.seed,
            "seed_derivation": (
                "actor envs: SeedSequence([run_seed, actor_id, incarnation]).generate_state(n); "
                "recorded per actor life in transitions/actor-*/incarnation-*.json"
            ),
            "resumed_from_env_steps": self.counters.env_steps if self.config.resume else None,
            "started": time.time(),
        }
        name = "run.json" if not self.config.resume else f"run-resume-{int(time.time())}.json"
        self.records.write(name, json.dumps(record, indent=2).encode())
        self.records.write(
            "config.json", json.dumps(dataclasses.asdict(self.config), indent=2).encode()
        )
        if not self.records.local and self.config.store.uri:
            log.info("run store: %s (this directory keeps the driver's log)", self.records.uri)


def rollout_actor_name(run_dir: Path, index: int) -> str:
    """Ray name of a run's rollout actor (for operators: ``ray.get_actor(name)``)."""
    return f"turnwise-rollout-{index}@{run_dir.resolve()}"


def train(config: Config, run_dir: str | Path) -> TrainResult:
    """Run training; SIGTERM or SIGINT (a spot interruption, Ctrl-C) ends it gracefully
    with a final checkpoint. Bad config values, env ids, kwargs and baselines raise
    ValueError here, before Ray starts."""
    return run_trainer(Trainer(config, Path(run_dir)))


def run_trainer(trainer: Trainer) -> TrainResult:
    """The run of a checked :class:`Trainer`, ended gracefully by SIGTERM or SIGINT."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: trainer.stop())
    return trainer.run()
