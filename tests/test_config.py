"""Configuration: every conf/ group matches its dataclass; bad keys fail before Ray."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import timed_command
from hydra.errors import ConfigCompositionException

from turnwise.config import CONF_DIR, GROUPS, Config, compose_config


def group_options() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_group_option_composes_into_its_dataclass(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("checkpoint", "s3"):
        overrides.append("checkpoint.uri=s3://bucket/prefix")
    config = compose_config(overrides)
    section = getattr(config, group)
    assert isinstance(section, GROUPS[group])
    keys = set(yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {})
    fields = {f.name for f in dataclasses.fields(GROUPS[group])}
    assert keys - {"defaults"} <= fields


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF_DIR / "exp").glob("*.yaml")))
def test_every_experiment_composes(exp):
    assert isinstance(compose_config([f"+exp={exp}"]), Config)


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("learner.lrr=0.1", ConfigCompositionException),
        ("train.env_steps=lots", ConfigCompositionException),
        ("+learner.extra=1", ValueError),
        ("+extra=1", ValueError),
    ],
)
def test_bad_overrides_fail_at_compose_time(override, error):
    with pytest.raises(error) as caught:
        compose_config(["+exp=warehouse", override])
    cause = caught.value.__cause__ or caught.value
    key = override.split("=")[0].lstrip("+")
    assert key in str(caught.value) + str(cause)


def test_misspelled_key_on_the_command_line_fails_fast_naming_it_without_ray(tmp_path):
    command = ["-m", "learner", "+exp=warehouse", "learner.lrr=0.1", f"hydra.run.dir={tmp_path}"]
    code, stdout, stderr, elapsed = timed_command(command, timeout=60)
    output = stdout + stderr
    assert code != 0
    assert "lrr" in output
    assert "Ray" not in output and "ray" not in output.lower().replace("array", "")
    assert elapsed < 30  # generous for a loaded CI box; typically about a second


def test_unknown_env_id_fails_before_ray():
    from learner.driver import Trainer

    config = compose_config(["+exp=warehouse", "env.id=NoSuchEnv-v0"])
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        Trainer(config, Path("/tmp/never-used"))


def test_bad_env_kwargs_fail_before_ray():
    from learner.driver import Trainer

    config = compose_config(["+exp=warehouse", "+env.kwargs.colour=red"])
    with pytest.raises(ValueError, match="colour"):
        Trainer(config, Path("/tmp/never-used"))
