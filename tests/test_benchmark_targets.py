"""The suite's plan, matched settings, target verdicts and tables, from reports built by
hand: every mode's measurements and every section's rows, each target met and missed,
and a run that could not run reported as such. (The harness test runs the tiny mode for
real; these cover what the tiny mode does not measure.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import suite
from benchmarks.suite_report import _how, _load, render, targets, title
from benchmarks.systems import rllib_ppo, sb3_ppo
from benchmarks.systems.common import TASKS, Settings, matched
from turnwise.config import compose_config

RUNS = {label: {"system": r.system, "settings": r.settings, "env": r.env}
        for label, r in suite.RUNS.items()}  # fmt: skip
HEADINGS = (
    "### Targets",
    "### 1. Ceiling",
    "### 2. Sampling + learning throughput",
    "### 3. Time to 90% of the oracle",
    "### 4. Scaling",
    "### 5. Transport",
)


def point(seconds: float, fraction: float) -> dict:
    return {"seconds": seconds, "env_steps": int(seconds * 1000), "eval_return": fraction,
            "fraction_of_baseline": fraction, "train_return": None}  # fmt: skip


def solve(label: str, task: str, seconds: float | None, cap: float = 150.0, repeat: int = 0):
    """A run that reached 90% at ``seconds``, or (None) one stopped by the cap."""
    end = seconds if seconds is not None else cap
    curve = [point(end / 2, 0.5), point(end, 0.95 if seconds is not None else 0.6)]
    return {
        "run": label, "system": RUNS[label]["system"], "task": task, "repeat": repeat,
        "curve": curve, "budget": {"seconds": cap, "env_steps": 10**8, "eval_every_env_steps": 1},
        "solved": None if seconds is None else {"seconds": seconds, "env_steps": 1000},
        "stopped_by": "solved" if seconds is not None else "time cap",
    }  # fmt: skip


def rate(label: str, value: float, repeat: int = 0) -> dict:
    return {"run": label, "system": RUNS[label]["system"], "task": "warehouse",
            "repeat": repeat, "env_steps": int(value * 10), "seconds": 10.0,
            "env_steps_per_second": value}  # fmt: skip


def failed(label: str, section_task: str = "warehouse") -> dict:
    return {
        "run": label,
        "system": RUNS[label]["system"],
        "task": section_task,
        "repeat": 0,
        "error": "Traceback ...\nModuleNotFoundError: No module named 'sample_factory'",
    }


def report(rates: dict[str, float], times: dict[tuple[str, str], float | None]) -> dict:
    """A full-shaped report: throughput per run (two repeats each), solve runs per
    (run, task) at the given seconds (None: capped)."""
    return {
        "command": "python -m benchmarks --mode full",
        "mode": "full",
        "date": "2026-12-01T00:00:00+00:00",
        "machine": {
            "cpu_model": "AMD EPYC",
            "cpu_count": 2,
            "load_average": [1.0, 1.0, 1.0],
            "torch": "2",
            "ray": "2",
            "stable_baselines3": "2",
            "gymnasium": "1",
            "pyarrow": "26",
        },
        "runs": RUNS,
        "matched": {"warehouse": {**vars(matched("warehouse")), "hidden_sizes": [64, 64]}},
        "unmatched": {"sb3": sb3_ppo.UNMATCHED, "rllib": rllib_ppo.UNMATCHED},
        "ceiling": [
            {
                "batch_size": 1024,
                "env_steps_per_second": 400_000.0,
                "forward_rows_per_second": 300_000.0,
            }
        ],
        "plain_ceiling": {"env_steps_per_second": 10_000.0, "actor_cores": 2, "ceiling": 20_000.0},
        "throughput": [
            rate(label, value * (1 + 0.1 * r), r) for r in (0, 1) for label, value in rates.items()
        ],
        "solve": [solve(label, task, seconds) for (label, task), seconds in times.items()],
        "scaling": [
            {**rate("turnwise", 40_000.0), "actors_x_envs": "1 actors x 128 envs"},
            {**rate("turnwise", 48_000.0), "actors_x_envs": "2 actors x 128 envs"},
        ],
        "transport": {
            "batch_rows": 4096,
            "batch_bytes": 2e6,
            "seconds_per_batch": {
                "env": 0.01,
                "inference": 0.01,
                "bookkeeping_and_arrow": 0.01,
                "collect_total": 0.03,
                "object_store": 0.001,
                "actor_call_overhead": 0.0005,
                "learner_update": 0.05,
            },
            "object_store_bytes_per_second": 2e9,
            "transport_share_of_learner_time": 0.02,
        },
    }


GOOD_RATES = {"turnwise": 120_000.0, "turnwise-sync": 17_000.0, "rllib": 5_000.0,
              "sb3": 8_000.0, "sample_factory": 15_000.0}  # fmt: skip
GOOD_TIMES = {("turnwise", "warehouse"): 9.0, ("sb3", "warehouse"): 66.0,
              ("rllib", "warehouse"): None, ("sample_factory", "warehouse"): 40.0,
              ("turnwise", "warehouse_medium"): 100.0, ("sb3", "warehouse_medium"): None,
              ("rllib", "warehouse_medium"): None,
              ("sample_factory", "warehouse_medium"): 200.0}  # fmt: skip


def verdicts(rep: dict) -> list:
    return [t["met"] for t in targets(rep)]


def test_every_target_met():
    assert verdicts(report(GOOD_RATES, GOOD_TIMES)) == [True] * 8


def test_every_target_missed():
    rates = {**GOOD_RATES, "turnwise": 40_000.0, "turnwise-sync": 12_000.0}
    times = {**GOOD_TIMES, ("turnwise", "warehouse"): 20.0, ("turnwise", "warehouse_medium"): None}
    assert verdicts(report(rates, times)) == [False] * 8


def test_a_capped_baseline_counts_with_the_time_it_was_given():
    times = {**GOOD_TIMES, ("sb3", "warehouse"): None}  # capped at 150 s: 9/150 <= 0.15
    solved = targets(report(GOOD_RATES, times))[3]
    assert solved["met"] is True and "lower bound" in solved["measured"]


def test_a_baseline_that_could_not_run_leaves_its_targets_unmeasured_and_says_why():
    rep = report(GOOD_RATES, GOOD_TIMES)
    rep["throughput"] = [r for r in rep["throughput"] if r["run"] != "sample_factory"]
    rep["throughput"].append(failed("sample_factory"))
    rep["solve"] = [r for r in rep["solve"] if r["run"] != "sample_factory"]
    rep["solve"].append(failed("sample_factory", "warehouse_medium"))
    found = targets(rep)
    assert [t["met"] for t in found] == [True, True, True, True, True, None, True, None]
    assert "could not run: ModuleNotFoundError" in found[5]["measured"]
    markdown = render(rep, Path("plot.png"))
    assert "could not run: ModuleNotFoundError: No module named 'sample_factory'" in markdown
    # ... while a target another baseline already misses stays missed
    rep["throughput"] = [r for r in rep["throughput"] if r["run"] != "sb3"]
    rep["throughput"].append(rate("sb3", 30_000.0))
    assert targets(rep)[5]["met"] is False


def test_the_tables_hold_every_section_run_and_task():
    rep = report(GOOD_RATES, GOOD_TIMES)
    rep["throughput"].append(rate("sb3-defaults", 2_000.0))
    markdown = render(rep, Path("plot.png"))
    assert all(heading in markdown for heading in HEADINGS)
    assert "| SB3 PPO, defaults | 1/1 | 2,000 |" in markdown
    assert "| SB3 PPO, matched | 2/2 | 8,400 (8,000 to 8,800) | 15.00x | 2.12x |" in markdown
    assert "| Warehouse-v0 medium | SB3 PPO, matched | 0/1 | — |" in markdown
    assert "plain-env ceiling is 20,000 env steps/s" in markdown
    assert "4,096 rows per update" in markdown and "64 plain envs x 64 steps" in markdown
    assert sb3_ppo.UNMATCHED["advantages"] in markdown
    assert "| medium warehouse | turnwise reaches 90% of the oracle | in 1 of 1 runs | yes |" in (
        markdown
    )


def test_run_titles_name_the_settings_and_the_env_case():
    rep = {"runs": RUNS}
    assert title(rep, "turnwise") == "turnwise, batched env"
    assert title(rep, "turnwise-sync") == "turnwise, plain env (`env.vectorization=sync`)"
    assert title(rep, "rllib") == "RLlib PPO, matched"
    assert title(rep, "sample_factory-defaults") == "Sample Factory 2 APPO, defaults"


@pytest.mark.parametrize("mode", sorted(suite.MODES))
def test_each_mode_alternates_systems_and_runs_every_system(mode):
    steps = suite.plan(suite.MODES[mode])
    systems = {suite.RUNS[s.run].system for s in steps}
    assert systems == set(suite.SYSTEMS)
    for case in suite.MODES[mode].cases:
        order = [s.run for s in steps if s.case is case]
        assert order == list(case.runs) * case.repeats  # round by round
        assert all(label in suite.RUNS for label in case.runs)
        assert case.task in TASKS


def test_each_mode_fits_its_stated_time():
    """At most: every window and cap in full, plus each process's start-up."""
    assert suite.longest_seconds(suite.MODES["full"]) / 60 <= 75
    assert suite.longest_seconds(suite.MODES["quick"]) / 60 <= 20


def test_tiny_mode_runs_one_process_per_system_and_env_case():
    steps = suite.plan(suite.MODES["tiny"])
    assert [s.run for s in steps if s.section == "solve"] == list(suite.MATCHED)
    assert [s.section for s in steps].count("scaling") == 1
    assert "throughput" not in {s.section for s in steps}


@pytest.mark.parametrize("experiment", ["warehouse", "warehouse_medium", "warehouse_large"])
def test_matched_settings_are_read_from_the_experiment(experiment):
    config = compose_config([f"+exp={experiment}"])
    learner, actors = config.learner, config.actors
    sb3 = sb3_ppo.matched_extra(experiment)
    assert sb3["num_envs"] * sb3["n_steps"] == actors.envs_per_actor * actors.fragment_length
    assert (sb3["batch_size"], sb3["n_epochs"], sb3["learning_rate"]) == (
        learner.minibatch_size, learner.epochs, learner.lr)  # fmt: skip
    assert (sb3["gamma"], sb3["gae_lambda"], sb3["clip_range"], sb3["ent_coef"]) == (
        learner.gamma, learner.gae_lambda, learner.clip, learner.entropy_coef)  # fmt: skip
    assert sb3["normalize"] is (learner.normalizer.kind != "none")
    rllib = rllib_ppo.matched_extra(experiment)
    assert rllib["train_batch_size_per_learner"] == sb3["num_envs"] * sb3["n_steps"]
    assert (rllib["minibatch_size"], rllib["num_epochs"], rllib["lr"], rllib["grad_clip"]) == (
        learner.minibatch_size, learner.epochs, learner.lr, learner.max_grad_norm)  # fmt: skip
    assert rllib["use_kl_loss"] is False and rllib["normalize"] == sb3["normalize"]
    # every system is built with Settings' network: it must be the experiment's
    assert (
        matched(experiment).hidden_sizes == Settings().hidden_sizes == tuple(learner.hidden_sizes)
    )


def test_a_system_that_is_not_installed_is_a_row_error_not_a_crash(tmp_path, monkeypatch):
    def absent(system, experiment):
        raise ModuleNotFoundError("No module named 'sample_factory'")

    monkeypatch.setattr(suite, "matched_extra", absent)
    case = suite.Case("solve", "warehouse", ("sample_factory",), 10)
    row = suite.take(suite.Step("solve", "sample_factory", case), tmp_path)
    assert row["run"] == "sample_factory" and "ModuleNotFoundError" in row["error"]
    assert list(tmp_path.iterdir()) == []  # no process was started


def test_an_option_dict_is_shown_by_its_layout_entries():
    options = {"num_workers": 2, "rollout": 32, "learning_rate": 0.001, "gamma": 0.99}
    shown = _how({"system": "sample_factory", "sample_factory_options": options, "x": 1.234})
    assert shown == "sample_factory_options=(num_workers=2, rollout=32; all 4 in suite.json), x=1.2"
    assert _how({"opts": {"gamma": 0.99}}) == "opts=(all 1 in suite.json)"


def test_the_load_average_says_when_it_was_taken():
    end = {"machine": {"load_average": [3.0, 2.0, 1.0]}}
    assert _load(end) == "load average [3.0, 2.0, 1.0] when the report was written"
    both = {**end, "load_average_start": [1.0, 1.5, 2.0]}
    assert _load(both) == "load average [1.0, 1.5, 2.0] at the start, [3.0, 2.0, 1.0] at the end"


def test_a_work_dir_that_is_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("a user's file")
    with pytest.raises(SystemExit) as exited:
        suite.main(["--mode", "tiny", "--work-dir", str(taken), "--out-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert f"--work-dir {taken}: exists and is not a directory" in capsys.readouterr().err
    assert taken.read_text() == "a user's file" and sorted(tmp_path.iterdir()) == [taken]
