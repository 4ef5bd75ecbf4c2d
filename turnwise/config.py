"""The run configuration: one dataclass per component, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts from the ``turnwise`` schema below, so every group file
and every command-line override is checked against these dataclasses at compose
time: a misspelled key or a wrong type fails before Ray starts, naming the key.
Library options pass through as one mapping (``ray.init``, ``env.kwargs``).
"""

from __future__ import annotations

import dataclasses
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
    num_cpus: float = 0.5  # CPUs Ray reserves per rollout actor
    max_restarts: int = -1  # Ray restarts a crashed actor this often (-1: always)


@dataclass
class NormalizerConfig:
    kind: str = "window"  # window: running mean/var over the last window_env_steps; none
    window_env_steps: int = 200_000  # how far back the statistics reach (tracks drift)
    clip: float = 10.0  # normalized observations are clipped to [-clip, clip]


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
    max_policy_lag: int = 8  # batches from older policy versions are dropped
    correction: str = "vtrace"  # off-policy correction for lagged data: vtrace or none
    rho_clip: float = 1.0  # V-trace rho-bar (importance weight truncation)
    c_clip: float = 1.0  # V-trace c-bar (trace cutting)
    device: str = "auto"  # auto: cuda when available, else cpu
    cpu_threads: int = 1  # torch threads of a CPU learner: a small MLP runs fastest on one,
    # and the rollout actors need the other cores (0: torch's default)
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)


@dataclass
class CheckpointConfig:
    uri: str = ""  # local dir or s3://bucket/prefix; empty: RUN_DIR/checkpoints
    every_env_steps: int = 50_000  # checkpoint interval
    keep_last: int = 3  # older checkpoints are deleted (best is always kept)


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
    env: EnvConfig = field(default_factory=lambda: EnvConfig(id=""))  # the fixed
    # evaluation env, a full env config; an empty env.id: the training env as configured
    baseline: str = "auto"  # auto: the env's oracle if it declares one; oracle; none; a
    # reference return (a number); or package.module:function, a baseline policy
    num_cpus: float = 0.25  # CPUs Ray reserves for the evaluator actor
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
FREE_FORM = ("env.kwargs", "evaluator.env.kwargs", "ray.init", "monitoring.cloudwatch.dimensions")


def _schema_node() -> Any:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Config)
    for path in FREE_FORM:
        OmegaConf.set_struct(OmegaConf.select(node, path), False)
    return node


def register_configs() -> None:
    """Register the schema ("turnwise") and one schema per group ("<group>_schema")."""
    store = ConfigStore.instance()
    store.store(name="turnwise", node=_schema_node())
    for group, node in GROUPS.items():
        store.store(group=group, name=f"{group}_schema", node=node)


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
    (Hydra's ``+key=value`` can add them past struct mode)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    unknown = list(_unknown_keys(Config, data, ""))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; see turnwise/config.py for the schema")
    return OmegaConf.to_object(cfg)


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
