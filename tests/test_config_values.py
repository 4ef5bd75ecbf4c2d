"""Config values: every bad one fails before Ray starts, naming the key and what is
valid, without a traceback (``python -m learner KEY=VALUE`` exits 2)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from conftest import timed_command

from turnwise.config import (
    RULES,
    Config,
    check_command_line,
    check_values,
    value_problems,
)

# override: the whole message ``python -m learner`` prints after "error: "
CLI_CASES = {
    "actors.num_cpus=-1": "actors.num_cpus=-1: must be >= 0 (CPUs per rollout actor)",
    "actors.num_actors=0": "actors.num_actors=0: must be >= 1 (rollout actors)",
    "learner.gamma=1.5": "learner.gamma=1.5: must be in (0, 1] (discount)",
    "learner.lr=0": "learner.lr=0: must be > 0 (Adam learning rate)",
    "learner.correction=vtrac": (
        "learner.correction=vtrac: must be one of vtrace, none (off-policy correction)"
    ),
    "actors.num_actors=abc": "actors.num_actors=abc: must be an integer (rollout actors)",
    "train.progress=maybe": "train.progress=maybe: must be true or false",
}

# dotted key, a bad value, what the message says is valid (set on a Config built in code)
VALUE_CASES = [
    ("env.simulator.mode", "remote", "one of inprocess, connect, launch"),
    ("env.simulator.timeout_s", 0.0, "> 0"),
    ("env.vectorization", "async", "one of auto, sync"),
    ("actors.max_restarts", -2, ">= -1"),
    ("learner.gae_lambda", 1.1, "in [0, 1]"),
    ("learner.hidden_sizes", [64, 0], "a list of integers >= 1"),
    ("learner.device", "gpu", "auto, cpu, cuda, cuda:N or mps"),
    ("learner.normalizer.kind", "batch", "one of window, none"),
    ("learner.lr_schedule", "cosine", "one of constant, linear"),
    ("learner.lr", float("nan"), "> 0"),
    ("checkpoint.keep_last", -1, ">= 0"),
    ("evaluator.niceness", 25, "in [0, 19]"),
    ("evaluator.env.simulator.connect_retries", 0, ">= 1"),
    ("monitoring.metrics_port", 70000, "in [-1, 65535]"),
    ("monitoring.cloudwatch.storage_resolution", 5, "one of 1, 60"),
    ("monitoring.cloudwatch.alarm_period_s", 90, "10, 20, 30 or a multiple of 60"),
    ("train.seed", -1, ">= 0"),
    ("actors.num_cpus", "half", ">= 0"),  # a wrong type in code: refused, not a TypeError
]


def _with(key: str, value: Any) -> Config:
    config = Config()
    *parents, name = key.split(".")
    node = config
    for part in parents:
        node = getattr(node, part)
    setattr(node, name, value)
    return config


def _sections(schema: type = Config) -> list[type]:
    hints = typing.get_type_hints(schema)
    nested = [hints[f.name] for f in dataclasses.fields(schema)]
    found = [schema]
    for kind in nested:
        if dataclasses.is_dataclass(kind) and kind not in found:
            found += [s for s in _sections(kind) if s not in found]
    return found


@pytest.mark.parametrize("override", CLI_CASES)
def test_a_bad_value_on_the_command_line_fails_fast_naming_key_and_range(override, tmp_path):
    code, stdout, stderr, elapsed = timed_command(
        ["-m", "learner", override, f"hydra.run.dir={tmp_path}"]
    )
    output = stdout + stderr
    assert code == 2, output[-2000:]
    assert f"error: {CLI_CASES[override]}" in stderr, output[-2000:]
    assert "Traceback" not in output and "ray" not in output.lower().replace("array", "")
    assert elapsed < 10, f"{elapsed:.1f} s: the check must run before Ray and the learner"


@pytest.mark.parametrize(("key", "value", "valid"), VALUE_CASES)
def test_every_rule_names_the_key_the_value_and_what_is_valid(key, value, valid):
    problems = value_problems(_with(key, value))
    assert len(problems) == 1 and problems[0].startswith(f"{key}=")
    assert f": must be {valid} (" in problems[0]


def test_all_problems_are_reported_at_once():
    config = _with("actors.num_cpus", -1.0)
    config.train.env_steps = 0
    with pytest.raises(ValueError) as caught:
        check_values(config)
    assert str(caught.value) == (
        "actors.num_cpus=-1: must be >= 0 (CPUs per rollout actor); "
        "train.env_steps=0: must be >= 1 (env-step budget)"
    )


def test_defaults_and_documented_special_values_are_valid():
    assert value_problems(Config()) == []
    special = [
        ("actors.max_restarts", -1),
        ("monitoring.metrics_port", -1),
        ("monitoring.metrics_port", 0),
        ("learner.cpu_threads", 0),
        ("learner.device", "cuda:1"),
        ("checkpoint.keep_last", 0),
        ("learner.hidden_sizes", []),
    ]
    for key, value in special:
        assert value_problems(_with(key, value)) == [], key


def test_every_numeric_field_has_a_rule_and_every_rule_a_field():
    for section in _sections():
        hints = typing.get_type_hints(section)
        names = {f.name for f in dataclasses.fields(section)}
        assert set(RULES.get(section, {})) <= names, section.__name__
        numeric = {n for n in names if hints[n] in (int, float, list[int])}
        assert numeric <= set(RULES.get(section, {})), (section.__name__, numeric)


def test_hydra_flags_and_hydra_overrides_are_left_to_hydra():
    check_command_line(["--cfg", "job", "actors.num_actors=abc"])
    check_command_line(["+exp=warehouse", "hydra.run.dir=/tmp/never-used"])
    with pytest.raises(ValueError, match=r"unknown config key 'actors\.num_actorz'"):
        check_command_line(["actors.num_actorz=1"])
