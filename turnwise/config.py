"""The run configuration: one dataclass per component, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts from the ``turnwise`` schema below, so every group file
and every command-line override is checked against these dataclasses at compose
time: a misspelled key or a wrong type fails before Ray starts, naming the key.
:data:`RULES` holds the valid range of every numeric and enum-valued field, checked
by :func:`to_config` (``actors.num_cpus=-1: must be >= 0 (CPUs per rollout actor)``);
:func:`check_command_line` turns all of these, Hydra's type errors included, into one
message without a traceback. Library options pass through as one mapping
(``ray.init``, ``env.kwargs``).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SimulatorConfig:
    mode: str = "inprocess"  # inprocess; connect: a running sims.server; launch: one per actor
    address: str = ""  # connect: HOST:PORT of the simulator server
    host: str = "127.0.0.1"  # launch: bind address of the launched server
    timeout_s: float = 30.0  # a simulator silent this long counts as dead
    connect_retries: int = 20  # connection attempts (backing off to 2 s) before giving up


@dataclass
class EnvConfig:
    id: str = "Warehouse-v0"  # a Gymnasium env id, or package.module:EnvId for your own
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the env's constructor
    vectorization: str = "auto"  # auto: the env's batched vector_entry_point if it has one; sync
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)  # where the env runs


@dataclass
class ActorsConfig:
    num_actors: int = 2  # rollout actors (Ray processes)
    envs_per_actor: int = 128  # environments each actor steps
    fragment_length: int = 32  # steps per env in one batch (batch rows = this x envs_per_actor)
    max_in_flight: int = 1  # sample() calls outstanding per actor
    env_groups: int = 1  # the policy acts for the envs in this many groups a step; with a
    # remote simulator one group's step then overlaps the policy's work on the next (2
    # pays where the simulator has CPUs of its own); part of what a seed means
    num_cpus: float = 0.5  # CPUs Ray reserves per rollout actor
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per
    # actor, e.g. {rollout: 1}: actors land only on nodes that advertise them
    max_restarts: int = -1  # Ray restarts a crashed actor this often (-1: always)


@dataclass
class NormalizerConfig:
    kind: str = "window"  # window: running mean/var over the last window_env_steps; none
    window_env_steps: int = 200_000  # how far back the statistics reach (tracks drift)
    clip: float = 10.0  # normalized observations are clipped to [-clip, clip]


@dataclass
class ModelConfig:
    core: str = "mlp"  # mlp: memoryless; lstm or gru: a recurrent core before both MLPs
    core_size: int = 64  # width of the recurrent core (lstm, gru)


@dataclass
class PPOConfig:
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant; linear: decays to 0 over train.env_steps
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE / V-trace lambda
    clip: float = 0.2  # PPO ratio clip
    epochs: int = 3  # passes over each batch
    minibatch_size: int = 2048  # rows per gradient step
    value_coef: float = 0.5  # weight of the value loss
    entropy_coef: float = 0.01  # weight of the entropy bonus
    max_grad_norm: float = 0.5  # gradient clipping
    target_kl: float = 0.0  # stop a batch's epochs once approx. KL to the behaviour policy
    # passes 1.5 x this (SB3's rule); 0: off, every epoch runs
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # MLP widths (actor, critic)
    model: ModelConfig = field(default_factory=ModelConfig)  # the policy's core (memory)
    max_policy_lag: int = 8  # batches from older policy versions are dropped
    correction: str = "vtrace"  # off-policy correction for lagged data: vtrace or none
    rho_clip: float = 1.0  # V-trace rho-bar (importance weight truncation)
    c_clip: float = 1.0  # V-trace c-bar (trace cutting)
    device: str = "auto"  # auto: cuda when available, else cpu
    cpu_threads: int = 1  # torch threads of a CPU learner: a small MLP runs fastest on one,
    # and the rollout actors need the other cores (0: torch's default)
    num_cpus: float = 0.0  # CPUs Ray reserves for the learner actor (0: none, as for a driver)
    num_gpus: float = 0.0  # GPUs Ray reserves for it: the learner lands on a GPU node
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources for
    # the learner actor, e.g. {learner: 1}
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)


@dataclass
class CheckpointConfig:
    uri: str = ""  # local dir or s3://bucket/prefix; empty: RUN_DIR/checkpoints
    every_env_steps: int = 50_000  # checkpoint interval
    keep_last: int = 3  # older checkpoints are deleted (best is always kept)
    keep_awaiting_evaluation: int = 8  # older ones the evaluator has yet to evaluate are
    # spared, up to this many (the oldest); beyond it they are deleted with a warning


@dataclass
class StoreConfig:
    uri: str = ""  # where a run's records go (checkpoints unless checkpoint.uri, transitions,
    # metrics, evaluations, alerts): a local dir or s3://bucket/prefix; empty: RUN_DIR
    flush_interval_s: float = 10.0  # on S3: metrics.jsonl is uploaded whole at most this
    # often (and at the end); evaluations and alerts on every row


@dataclass
class TransitionLogConfig:
    enabled: bool = True  # every transition to Parquet under RUN_DIR/transitions


@dataclass
class EvaluatorConfig:
    enabled: bool = True  # run the external evaluator actor during training
    every_env_steps: int = 50_000  # evaluate at each multiple of this many env steps
    episodes: int = 32  # fixed evaluation episodes
    seed: int = 1_000_000  # first evaluation seed (disjoint from training seeds)
    divergence_threshold: float = 0.8  # alert when eval return / train return falls below
    divergence_warmup_env_steps: int = 400_000  # no divergence alert for checkpoints
    # before this (docs/evaluation.md, "The divergence alert")
    env: EnvConfig = field(default_factory=lambda: EnvConfig(id=""))  # the fixed
    # evaluation env, a full env config; an empty env.id: the training env as configured
    baseline: str = "auto"  # auto: the env's oracle if it declares one; oracle; none; a
    # reference return (a number); or package.module:function, a baseline policy
    num_cpus: float = 0.25  # CPUs Ray reserves for the evaluator actor
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources for it
    max_restarts: int = -1  # Ray restarts a crashed evaluator this often (-1: always)
    niceness: int = 10  # OS priority offset of the evaluator's process: it yields the CPU
    # to rollout and learning on a shared node (0: same priority)


@dataclass
class CloudWatchConfig:
    enabled: bool = False  # publish to CloudWatch (needs AWS credentials)
    namespace: str = "turnwise"  # CloudWatch namespace of every metric
    region: str | None = None  # None: boto3's default (AWS_DEFAULT_REGION, profile)
    dimensions: dict[str, str] = field(default_factory=dict)  # added to run and experiment
    flush_interval_s: float = 60.0  # buffered datums are sent at most this often (0: each put)
    storage_resolution: int = 60  # 60: standard; 1: high resolution (costs more)
    alarm_threshold: float = 0.8  # divergence alarm: eval/train return ratio below this
    alarm_period_s: int = 300  # seconds per alarm evaluation period (Minimum statistic)
    alarm_evaluation_periods: int = 1  # periods below the threshold before ALARM
    alarm_actions: list[str] = field(default_factory=list)  # ARNs notified (e.g. SNS topics)


@dataclass
class MonitoringConfig:
    metrics_port: int = 9464  # Prometheus endpoint of the driver; 0: any free port; -1: off
    metrics_host: str = "127.0.0.1"  # bind address of the endpoint (0.0.0.0 inside a pod)
    linger_s: float = 0.0  # keep the endpoint up this long after the run so the final
    # values are scraped (set it to at least the scrape interval where that matters)
    cloudwatch: CloudWatchConfig = field(default_factory=CloudWatchConfig)  # off by default
    tensorboard: bool = False  # metrics.jsonl and evaluation rows as TensorBoard scalars
    tensorboard_dir: str = ""  # where the event files go; empty: RUN_DIR/tensorboard


@dataclass
class RayConfig:
    address: str = ""  # empty: start a new local Ray (never joins one); auto or host:port: join
    init: dict[str, Any] = field(default_factory=dict)  # further ray.init keyword arguments


@dataclass
class TrainConfig:
    env_steps: int = 1_000_000  # env-step budget
    max_seconds: float = 0.0  # wall-clock budget of the training loop (0: none); ends
    # like SIGTERM, with a final checkpoint
    seed: int = 0  # root of every actor and env seed
    progress: bool = True  # live progress display on the console


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    learner: PPOConfig = field(default_factory=PPOConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    transition_log: TransitionLogConfig = field(default_factory=TransitionLogConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False  # continue the run in RUN_DIR from its latest checkpoint


def env_config_from_dict(data: dict[str, Any]) -> EnvConfig:
    """An EnvConfig from its JSON form (config.json, a checkpoint manifest)."""
    data = dict(data)
    simulator = SimulatorConfig(**data.pop("simulator", None) or {})
    return EnvConfig(**data, simulator=simulator)


def evaluation_env(evaluator: EvaluatorConfig, training: EnvConfig) -> EnvConfig:
    """The evaluator's fixed env: ``evaluator.env`` where it names one, else the
    training env (its kwargs and simulator included)."""
    return evaluator.env if evaluator.env.id else training


GROUPS: dict[str, type] = {
    "env": EnvConfig,
    "actors": ActorsConfig,
    "learner": PPOConfig,
    "checkpoint": CheckpointConfig,
    "evaluator": EvaluatorConfig,
    "monitoring": MonitoringConfig,
    "ray": RayConfig,
}


# Mappings passed through to a library or an env: open, so that a whole mapping can be
# given on the command line (``env.kwargs={max_steps: 50}``), not only key by key.
FREE_FORM = (
    "env.kwargs",
    "evaluator.env.kwargs",
    "ray.init",
    "monitoring.cloudwatch.dimensions",
    "actors.resources",
    "learner.resources",
    "evaluator.resources",
)


def _schema_node() -> Any:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Config)
    for path in FREE_FORM:
        OmegaConf.set_struct(OmegaConf.select(node, path), False)
    return node


def register_configs() -> None:
    """Register the schema ("turnwise"): the group files merge into it, so each is
    checked against its section's dataclass without a schema of its own (which
    ``--help`` would list as a group option)."""
    ConfigStore.instance().store(name="turnwise", node=_schema_node())


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str] | None = None) -> Config:
    """The run config for command-line style overrides, without running anything.

    >>> compose_config(["+exp=warehouse", "train.env_steps=1000"]).train.env_steps
    1000
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose("config", overrides=overrides or []))


def to_config(cfg: Any) -> Config:
    """The composed DictConfig as a :class:`Config`, refusing keys the schema lacks
    (Hydra's ``+key=value`` can add them past struct mode) and values :data:`RULES`
    refuses (ValueError naming each key and what is valid)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    unknown = list(_unknown_keys(Config, data, ""))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; see turnwise/config.py for the schema")
    config = OmegaConf.to_object(cfg)
    check_values(config)
    return config


def _unknown_keys(schema: type, data: dict[str, Any], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in data.items():
        if key not in fields:
            yield prefix + key
            continue
        nested = (
            fields[key].default_factory
            if dataclasses.is_dataclass(fields[key].default_factory)
            else None
        )
        if nested is not None and isinstance(value, dict):
            yield from _unknown_keys(nested, value, f"{prefix}{key}.")


# -- value checks -------------------------------------------------------------------------
# The valid values of the enum-valued fields; the code that reads each field accepts these.
SIMULATOR_MODES = ("inprocess", "connect", "launch")  # actors/envs.py
VECTORIZATIONS = ("auto", "sync")  # actors/envs.py
NORMALIZER_KINDS = ("window", "none")  # turnwise/policy/network.py reads these
POLICY_CORES = ("mlp", "lstm", "gru")  # turnwise/policy/network.py
LR_SCHEDULES = ("constant", "linear")  # learner/ppo.py reads these
CORRECTIONS = ("vtrace", "none")  # learner/ppo.py
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class Rule:
    """A field's valid values: ``ok(value)``; else it ``must`` be ..., and ``what`` it is."""

    ok: Callable[[Any], bool]
    must: str
    what: str

    def problem(self, key: str, value: Any) -> str | None:
        """``key=value: must be ... (what)``, or None where the value is valid."""
        try:
            valid = bool(self.ok(value))
        except (TypeError, ValueError):  # a value of another type (a Config built in code)
            valid = False
        return None if valid else f"{key}={_show(value)}: must be {self.must} ({self.what})"


def _show(value: Any) -> str:
    """A value as an override would spell it (``-1`` for -1.0, ``''`` for empty)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) and value else repr(value)


def at_least(low: float, what: str) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}", what)


def above(low: float, what: str) -> Rule:
    return Rule(lambda v: v > low, f"> {low}", what)


def within(low: float, high: float, what: str, low_open: bool = False) -> Rule:
    bracket = "(" if low_open else "["
    return Rule(
        lambda v: (low < v if low_open else low <= v) and v <= high,
        f"in {bracket}{low}, {high}]",
        what,
    )


def one_of(choices: Sequence[Any], what: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(map(str, choices)), what)


def resources(what: str) -> Rule:
    """A mapping of custom Ray resource names to amounts (CPU and GPU have their keys)."""
    return Rule(
        lambda v: all(k not in ("CPU", "GPU") and float(n) >= 0 for k, n in v.items()),
        "a mapping of custom resource names to amounts >= 0 (not CPU or GPU: use num_cpus, "
        "num_gpus)",
        what,
    )


def store_uri(what: str) -> Rule:
    from turnwise.run_store import check_uri

    return Rule(
        lambda v: check_uri(v) is None, "s3://bucket[/prefix], file:///path or a path", what
    )


# Per config dataclass, the rule of each field it checks: every numeric field has one.
RULES: dict[type, dict[str, Rule]] = {
    SimulatorConfig: {
        "mode": one_of(SIMULATOR_MODES, "where the env runs"),
        "timeout_s": above(0, "seconds of silence before a simulator counts as dead"),
        "connect_retries": at_least(1, "connection attempts to a simulator"),
    },
    EnvConfig: {"vectorization": one_of(VECTORIZATIONS, "how an actor batches its envs")},
    ActorsConfig: {
        "num_actors": at_least(1, "rollout actors"),
        "envs_per_actor": at_least(1, "environments each actor steps"),
        "fragment_length": at_least(1, "steps per env in one batch"),
        "max_in_flight": at_least(1, "sample() calls outstanding per actor"),
        "env_groups": at_least(1, "groups an actor's envs step in"),
        "num_cpus": at_least(0, "CPUs per rollout actor"),
        "resources": resources("custom Ray resources per rollout actor"),
        "max_restarts": at_least(-1, "Ray restarts of a crashed actor; -1: always"),
    },
    NormalizerConfig: {
        "kind": one_of(NORMALIZER_KINDS, "observation normalizer"),
        "window_env_steps": at_least(1, "env steps the normalizer statistics reach back"),
        "clip": above(0, "bound of normalized observations"),
    },
    ModelConfig: {
        "core": one_of(POLICY_CORES, "policy core"),
        "core_size": at_least(1, "width of the recurrent core"),
    },
    PPOConfig: {
        "lr": above(0, "Adam learning rate"),
        "lr_schedule": one_of(LR_SCHEDULES, "learning-rate schedule"),
        "gamma": within(0, 1, "discount", low_open=True),
        "gae_lambda": within(0, 1, "GAE / V-trace lambda"),
        "clip": above(0, "PPO ratio clip"),
        "epochs": at_least(1, "passes over each batch"),
        "minibatch_size": at_least(1, "rows per gradient step"),
        "value_coef": at_least(0, "weight of the value loss"),
        "entropy_coef": at_least(0, "weight of the entropy bonus"),
        "max_grad_norm": above(0, "gradient-norm clip"),
        "target_kl": at_least(0, "approx. KL that stops a batch's epochs; 0: off"),
        "hidden_sizes": Rule(
            lambda v: all(size >= 1 for size in v), "a list of integers >= 1", "MLP widths"
        ),
        "max_policy_lag": at_least(0, "policy versions a batch may lag"),
        "correction": one_of(CORRECTIONS, "off-policy correction"),
        "rho_clip": above(0, "V-trace rho-bar"),
        "c_clip": above(0, "V-trace c-bar"),
        "device": Rule(
            lambda v: _DEVICE.fullmatch(v) is not None,
            "auto, cpu, cuda, cuda:N or mps",
            "learner device",
        ),
        "cpu_threads": at_least(0, "torch threads of a CPU learner; 0: torch's default"),
        "num_cpus": at_least(0, "CPUs of the learner actor"),
        "num_gpus": at_least(0, "GPUs of the learner actor"),
        "resources": resources("custom Ray resources of the learner actor"),
    },
    StoreConfig: {
        "uri": store_uri("the run store"),
        "flush_interval_s": at_least(0, "seconds between uploads of metrics.jsonl on S3"),
    },
    CheckpointConfig: {
        "uri": store_uri("the checkpoint store"),
        "every_env_steps": at_least(1, "env steps between checkpoints"),
        "keep_last": at_least(0, "checkpoints kept; 0: all"),
        "keep_awaiting_evaluation": at_least(0, "old checkpoints spared for the evaluator"),
    },
    EvaluatorConfig: {
        "every_env_steps": at_least(1, "env steps between evaluations"),
        "episodes": at_least(1, "evaluation episodes"),
        "seed": at_least(0, "first evaluation seed"),
        "divergence_threshold": within(0, 1, "eval/train return ratio that alerts"),
        "divergence_warmup_env_steps": at_least(0, "env steps before the alert can fire"),
        "num_cpus": at_least(0, "CPUs of the evaluator actor"),
        "resources": resources("custom Ray resources of the evaluator actor"),
        "max_restarts": at_least(-1, "Ray restarts of a crashed evaluator; -1: always"),
        "niceness": within(0, 19, "OS priority offset of the evaluator; 0: same priority"),
    },
    CloudWatchConfig: {
        "flush_interval_s": at_least(0, "seconds between CloudWatch sends; 0: each put"),
        "storage_resolution": one_of((1, 60), "CloudWatch storage resolution in seconds"),
        "alarm_threshold": within(0, 1, "eval/train return ratio that alarms"),
        "alarm_period_s": Rule(
            lambda v: v in (10, 20, 30) or (v >= 60 and v % 60 == 0),
            "10, 20, 30 or a multiple of 60",
            "seconds per alarm evaluation period",
        ),
        "alarm_evaluation_periods": at_least(1, "periods below the threshold before ALARM"),
    },
    MonitoringConfig: {
        "metrics_port": within(-1, 65535, "Prometheus port; 0: any free port, -1: off"),
        "linger_s": at_least(0, "seconds the metrics endpoint stays up after the run"),
    },
    TrainConfig: {
        "env_steps": at_least(1, "env-step budget"),
        "max_seconds": at_least(0, "wall-clock budget in seconds; 0: none"),
        "seed": at_least(0, "root of every seed"),
    },
}


def value_problems(node: Any, prefix: str = "") -> list[str]:
    """What :data:`RULES` finds wrong in ``node`` (a config dataclass) and its sections."""
    rules = RULES.get(type(node), {})
    problems: list[str] = []
    for item in dataclasses.fields(node):
        key, value = prefix + item.name, getattr(node, item.name)
        if dataclasses.is_dataclass(value):
            problems += value_problems(value, f"{key}.")
        elif item.name in rules and (problem := rules[item.name].problem(key, value)):
            problems.append(problem)
    return problems


def check_values(config: Config) -> None:
    """Raise ValueError naming every out-of-range value (``key=value: must be ...``)."""
    problems = value_problems(config)
    if problems:
        raise ValueError("; ".join(problems))


# -- the command line ---------------------------------------------------------------------
def check_command_line(args: Sequence[str]) -> None:
    """Compose the config ``python -m learner ARGS`` runs, before anything heavy: a wrong
    key, type or value raises ValueError whose message names the key and what is valid.

    Hydra's own flags (``--multirun``, ``-cn``) and ``hydra.*`` overrides are left to Hydra.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(arg.startswith("-") for arg in args):
        return
    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(_describe(error, overrides)) from None


def _describe(error: Exception, overrides: Sequence[str]) -> str:
    """A Hydra or OmegaConf error as one line naming the key and what is valid."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = error.__cause__ if error.__cause__ is not None else error
    key = getattr(cause, "full_key", None)
    if not key:
        return str(error).split("\nConfig search path")[0].replace("\n", " ").strip()
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return f"unknown config key {key!r}; see turnwise/config.py for the schema"
    given = {o.lstrip("+~").partition("=")[0]: o.partition("=")[2] for o in overrides}
    shown = f"{key}={given[key]}" if key in given else key
    expected = _expected_type(key)
    if expected is None:
        return f"{shown}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    rule = _rule(key)
    return f"{shown}: must be {expected}" + (f" ({rule.what})" if rule else "")


def _field(key: str) -> tuple[type, str, Any] | None:
    """(the dataclass, the field name, its type) of dotted ``key``; None if not a field."""
    node: Any = Config
    *parents, name = key.split(".")
    for part in parents:
        node = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
    if not dataclasses.is_dataclass(node):
        return None
    hint = typing.get_type_hints(node).get(name)
    return None if hint is None else (node, name, hint)


def _rule(key: str) -> Rule | None:
    found = _field(key)
    return None if found is None else RULES.get(found[0], {}).get(found[1])


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_LIST_NAMES = {int: "a list of integers", float: "a list of numbers", str: "a list of strings"}


def _expected_type(key: str) -> str | None:
    """What a field's annotation asks for, in words (None: say what OmegaConf says)."""
    found = _field(key)
    if found is None:
        return None
    hint = found[2]
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and args[0] in _LIST_NAMES:
        return _LIST_NAMES[args[0]]
    if dataclasses.is_dataclass(hint) or origin is dict:
        return "a mapping" + (f" ({hint.__name__} keys)" if dataclasses.is_dataclass(hint) else "")
    return None
