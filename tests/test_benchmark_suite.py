"""The side-by-side benchmark harness (``python -m benchmarks``) on its tiny budget:
every system really runs (turnwise on its batched env and on plain Gymnasium envs,
RLlib PPO, SB3 PPO and Sample Factory 2 at matched settings, each in its own process,
one process per system and env case) and the JSON, the BENCHMARKS.md section and the
plot come out well formed. Figures are not checked: speed lives in the benchmark's own
report, not in tests. What the tiny mode does not measure (throughput windows, the
defaults rows, the harder tasks, repeats) is covered by tests/test_benchmark_targets.py
on reports built by hand."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest

from benchmarks import suite
from benchmarks.suite_report import targets
from benchmarks.systems.__main__ import SYSTEMS as REGISTERED

pytestmark = pytest.mark.slow

KEPT = "# turnwise benchmarks\n\n<!-- learning:begin -->\nkept as is\n<!-- learning:end -->\n"


def sb3_log_folders() -> set[Path]:
    """The folders SB3's default logger makes in ``$TMPDIR``."""
    return set(Path(tempfile.gettempdir()).glob("SB3-*"))


@pytest.fixture(scope="module")
def sb3_folders_before_the_run() -> set[Path]:
    return sb3_log_folders()


@pytest.fixture(scope="module")
def run(tmp_path_factory, sb3_folders_before_the_run):
    tmp = tmp_path_factory.mktemp("suite")
    markdown = tmp / "BENCHMARKS.md"
    markdown.write_text(KEPT)
    returned = suite.main(["--mode", "tiny", "--out-dir", str(tmp), "--markdown", str(markdown),
                           "--work-dir", str(tmp / "work")])  # fmt: skip
    return returned, json.loads((tmp / "suite.json").read_text()), markdown.read_text(), tmp


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_every_run_of_turnwise_rllib_and_sb3_ran_without_error(run):
    _, report, _, _ = run
    assert [row["run"] for row in report["solve"]] == list(suite.MATCHED)
    for row in report["solve"] + report["scaling"]:
        if row["system"] != "sample_factory":
            assert "error" not in row, row.get("error")


@pytest.mark.skipif("sample_factory" not in REGISTERED, reason="not in benchmarks.systems yet")
def test_sample_factory_ran_without_error(run):
    _, report, _, _ = run
    (row,) = [r for r in report["solve"] if r["system"] == "sample_factory"]
    assert "error" not in row, row.get("error")


def test_the_matched_runs_got_turnwise_settings(run):
    _, report, _, _ = run
    settings = {r["run"]: r["settings"] for r in report["solve"] if "error" not in r}
    assert settings["turnwise-sync"]["extra"] == {"overrides": ["env.vectorization=sync"]}
    assert settings["sb3"]["num_envs"] * settings["sb3"]["extra"]["n_steps"] == 4096
    assert settings["sb3"]["extra"]["normalize"] is True
    assert settings["rllib"]["extra"]["train_batch_size_per_learner"] == 4096
    assert report["matched"]["warehouse"]["rows_per_update"] == 4096


def test_the_scaling_row_is_a_throughput_measurement(run):
    _, report, _, _ = run
    (row,) = report["scaling"]
    assert row["task"] == "warehouse" and row["actors_x_envs"] == "2 actors x 16 envs"
    assert positive(row["env_steps"]) and positive(row["seconds"]), row
    assert row["env_steps_per_second"] == pytest.approx(row["env_steps"] / row["seconds"])


def test_time_to_solve_curves_are_evaluated_on_the_common_seeds(run):
    _, report, _, _ = run
    for row in report["solve"]:
        if "error" in row:
            continue
        assert row["curve"], row["run"]
        for point in row["curve"]:
            assert point["seconds"] >= 0 and point["env_steps"] > 0
            assert 0 < point["env_steps"] <= row["budget"]["env_steps"] + 40_000
            assert math.isfinite(point["eval_return"])
            assert point["fraction_of_baseline"] is not None  # Warehouse-v0 has an oracle
        assert row["stopped_by"] in {"solved", "time cap", "step cap"}
        steps = [p["env_steps"] for p in row["curve"]]
        assert steps == sorted(steps)


def test_ceilings_and_transport_are_measured(run):
    _, report, _, _ = run
    assert [r["batch_size"] for r in report["ceiling"]] == list(suite.MODES["tiny"].ceiling_batches)
    for row in report["ceiling"]:
        assert positive(row["env_steps_per_second"]) and positive(row["forward_rows_per_second"])
    plain = report["plain_ceiling"]
    assert plain["ceiling"] == pytest.approx(plain["env_steps_per_second"] * plain["actor_cores"])
    transport = report["transport"]
    assert transport["batch_rows"] > 0 and transport["batch_bytes"] > 0
    assert all(s >= 0 for s in transport["seconds_per_batch"].values())
    assert positive(transport["object_store_bytes_per_second"])


def test_markdown_holds_the_targets_and_five_sections_and_keeps_the_rest(run):
    returned, report, markdown, _ = run
    assert report == json.loads(json.dumps(returned))
    assert "<!-- learning:begin -->\nkept as is\n<!-- learning:end -->" in markdown
    assert markdown.count("<!-- suite:begin -->") == 1
    for heading in ("### Targets", "### 1. Ceiling", "### 2. Sampling", "### 3. Time to 90%",
                    "### 4. Scaling", "### 5. Transport"):  # fmt: skip
        assert heading in markdown
    assert len(targets(report)) == 8
    assert "python -m benchmarks --mode tiny" in markdown
    for row in report["solve"]:
        if "error" in row:
            assert "could not run: " in markdown


def test_the_plot_is_a_png(run):
    _, report, _, tmp = run
    png = (tmp / report["plot"]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000


def test_the_work_dir_keeps_every_measurement_and_the_results_so_far(run):
    _, report, _, tmp = run
    kept = json.loads((tmp / "work" / "results.json").read_text())
    for section in ("solve", "scaling"):
        assert kept[section] == report[section]
    assert len(list((tmp / "work").glob("*-solve-warehouse-*.json"))) == len(suite.MATCHED)


def test_the_load_is_recorded_at_the_start_and_the_end(run):
    _, report, markdown, _ = run
    assert len(report["load_average_start"]) == 3
    assert f"load average {report['load_average_start']} at the start" in markdown


def test_sb3_leaves_no_log_folders_behind(run, sb3_folders_before_the_run):
    assert sb3_log_folders() - sb3_folders_before_the_run == set()
