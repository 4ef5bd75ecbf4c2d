"""The side-by-side benchmark harness (``python -m benchmarks``) on its tiny budget:
every system really runs (turnwise, RLlib PPO, SB3 PPO, each in its own process) and
the JSON, the BENCHMARKS.md section and the plot come out well formed. Figures are
not checked: speed lives in the benchmark's own report, not in tests."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import suite
from benchmarks.suite_report import targets

pytestmark = pytest.mark.slow

SYSTEMS = {"turnwise", "rllib", "sb3"}
KEPT = "# turnwise benchmarks\n\n<!-- learning:begin -->\nkept as is\n<!-- learning:end -->\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    markdown = tmp / "BENCHMARKS.md"
    markdown.write_text(KEPT)
    returned = suite.main(["--mode", "tiny", "--out-dir", str(tmp), "--markdown", str(markdown)])
    return returned, json.loads((tmp / "suite.json").read_text()), markdown.read_text(), tmp


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_every_measurement_ran_without_error(run):
    _, report, _, _ = run
    for row in report["throughput"] + report["solve"] + report["scaling"]:
        assert "error" not in row, row.get("error")
    assert {row["system"] for row in report["throughput"]} == SYSTEMS
    assert {row["system"] for row in report["solve"]} == SYSTEMS


def test_throughput_and_scaling_rows_are_well_formed(run):
    _, report, _, _ = run
    for row in report["throughput"] + report["scaling"]:
        assert row["task"] == "warehouse"
        assert positive(row["env_steps"]) and positive(row["seconds"]), row
        assert row["env_steps_per_second"] == pytest.approx(row["env_steps"] / row["seconds"])
    assert [r["actors_x_envs"] for r in report["scaling"]] == [
        f"{a} actors x {e} envs" for a, e in suite.MODES["tiny"].scaling
    ]


def test_time_to_solve_curves_are_evaluated_on_the_common_seeds(run):
    _, report, _, _ = run
    for row in report["solve"]:
        assert row["curve"], row["system"]
        for point in row["curve"]:
            assert point["seconds"] >= 0 and point["env_steps"] > 0
            assert 0 < point["env_steps"] <= row["budget"]["env_steps"] + 40_000
            assert math.isfinite(point["eval_return"])
            assert point["fraction_of_baseline"] is not None  # Warehouse-v0 has an oracle
        assert row["stopped_by"] in {"solved", "time cap", "step cap"}
        steps = [p["env_steps"] for p in row["curve"]]
        assert steps == sorted(steps)


def test_ceiling_and_transport_are_measured(run):
    _, report, _, _ = run
    assert [r["batch_size"] for r in report["ceiling"]] == list(suite.MODES["tiny"].ceiling_batches)
    for row in report["ceiling"]:
        assert positive(row["env_steps_per_second"]) and positive(row["forward_rows_per_second"])
    transport = report["transport"]
    assert transport["batch_rows"] > 0 and transport["batch_bytes"] > 0
    assert all(s >= 0 for s in transport["seconds_per_batch"].values())
    assert positive(transport["object_store_bytes_per_second"])


def test_markdown_holds_the_targets_and_five_sections_and_keeps_the_rest(run):
    returned, report, markdown, _ = run
    assert report == json.loads(json.dumps(returned))
    assert "<!-- learning:begin -->\nkept as is\n<!-- learning:end -->" in markdown
    assert markdown.count("<!-- suite:begin -->") == 1
    for heading in ("### Targets", "### 1. Ceiling", "### 2. Sampling + learning throughput",
                    "### 3. Time to solve", "### 4. Scaling", "### 5. Transport"):  # fmt: skip
        assert heading in markdown
    assert len(targets(report)) == 4
    assert "python -m benchmarks --mode tiny" in markdown


def test_the_plot_is_a_png(run):
    _, report, _, tmp = run
    png = (tmp / report["plot"]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
