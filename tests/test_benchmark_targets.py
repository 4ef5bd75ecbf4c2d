"""The suite's target verdicts, from reports built by hand: each target met and missed."""

from __future__ import annotations

from benchmarks.suite_report import targets


def report(ours: float, rllib: float, sb3: float, solve: dict) -> dict:
    return {
        "throughput": [
            {"system": "turnwise", "env_steps_per_second": ours},
            {"system": "rllib", "env_steps_per_second": rllib},
            {"system": "sb3", "env_steps_per_second": sb3},
        ],
        "ceiling": [{"env_steps_per_second": 100_000.0}, {"env_steps_per_second": 80_000.0}],
        "solve": [
            {"system": s, "task": "warehouse", "solved": solved, "curve": curve}
            for s, (solved, curve) in solve.items()
        ],
    }


def at(seconds: float) -> dict:
    return {"seconds": seconds, "env_steps": 1000}


def verdicts(rep: dict) -> list:
    return [t["met"] for t in targets(rep)]


def test_every_target_met():
    solve = {"turnwise": (at(10), [at(10)]), "rllib": (at(30), [at(30)]), "sb3": (at(25), [])}
    assert verdicts(report(30_000, 5_000, 6_000, solve)) == [True, True, True, True]


def test_every_target_missed():
    solve = {"turnwise": (at(20), [at(20)]), "rllib": (at(30), [at(30)]), "sb3": (None, [at(90)])}
    assert verdicts(report(20_000, 5_000, 6_000, solve)) == [False, False, False, False]


def test_a_capped_baseline_counts_with_the_time_it_was_given():
    solve = {"turnwise": (at(20), [at(20)]), "rllib": (None, [at(100)]), "sb3": (None, [at(50)])}
    solved = targets(report(30_000, 1, 1, solve))[2]
    assert solved["met"] is True and "lower bound" in solved["measured"]


def test_turnwise_not_solving_misses_the_target():
    solve = {"turnwise": (None, [at(20)]), "rllib": (at(30), [at(30)]), "sb3": (at(30), [])}
    assert targets(report(30_000, 1, 1, solve))[2]["met"] is False
