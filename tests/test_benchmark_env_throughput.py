"""The env-throughput benchmark harness, run on a tiny budget: its JSON report and the
section it regenerates in BENCHMARKS.md. No timing thresholds: figures are not checked."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

import benchmarks.env_throughput as bench

OTHER_BEFORE = "# turnwise benchmarks\n\nIntro kept as is.\n\n## Another benchmark\n\n| a | b |\n"
STALE = f"{bench.BEGIN}\n## Env throughput\n\nstale figures 123\n{bench.END}\n"
OTHER_AFTER = "\n## Trailing section\n\nKept too.\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One quick run with 2 step() calls per repeat, into a BENCHMARKS.md that already
    holds an older env_throughput section between other content."""
    tmp = tmp_path_factory.mktemp("bench")
    out, markdown = tmp / "results" / "env_throughput.json", tmp / "BENCHMARKS.md"
    markdown.write_text(OTHER_BEFORE + "\n" + STALE + OTHER_AFTER)
    argv = ["--quick", "--calls", "2", "--repeats", "2", "--out", str(out)]
    argv += ["--markdown", str(markdown)]
    returned = bench.main(argv, console=Console(file=io.StringIO()))
    return returned, json.loads(out.read_text()), markdown.read_text()


def test_json_report_is_well_formed_with_every_implementation(run):
    returned, report, _ = run
    assert report == json.loads(json.dumps(returned))
    assert {row["implementation"] for row in report["results"]} == set(bench.LABELS)
    assert len(report["results"]) == len(bench.plan(quick=True))
    for row in report["results"]:
        rate = row["steps_per_second"]
        assert isinstance(rate, float) and math.isfinite(rate) and rate > 0, row
        assert len(row["repeat_steps_per_second"]) == len(row["seconds"]) == 2
        assert all(r > 0 for r in row["repeat_steps_per_second"])
        assert row["env_steps_per_repeat"] == 2 * row["num_envs"]
        assert row["label"] == bench.LABELS[row["implementation"]]
    single = [r for r in report["results"] if r["implementation"] == "single"]
    assert single[0]["speedup_vs_single"] == 1.0
    machine = report["machine"]
    for key in ("platform", "cpu_count", "python", "numpy", "gymnasium"):
        assert machine[key], key
    assert report["date"] and report["mode"] == "quick"
    assert report["command"].startswith("python -m benchmarks.env_throughput --quick")
    assert report["env"]["version"].startswith("warehouse+")


def test_markdown_section_replaces_the_old_one_and_keeps_the_rest(run):
    _, report, text = run
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    assert "stale figures" not in text
    assert text.startswith(OTHER_BEFORE)
    assert text.endswith(OTHER_AFTER)
    section = text[text.index(bench.BEGIN) : text.index(bench.END)]
    assert "| implementation | num_envs | steps/s | speed-up vs single env |" in section
    assert report["command"] in section
    for label in bench.LABELS.values():
        assert f"| {label} |" in section


def test_regenerating_twice_leaves_one_section(run, tmp_path):
    _, report, text = run
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(text)
    bench.update_markdown(markdown, bench.render_section(report))
    assert markdown.read_text() == text


def test_missing_markdown_is_created_with_a_header(run, tmp_path):
    _, report, _ = run
    markdown = tmp_path / "BENCHMARKS.md"
    bench.update_markdown(markdown, bench.render_section(report))
    text = markdown.read_text()
    assert text.startswith("# turnwise benchmarks\n")
    assert text.count(bench.BEGIN) == 1 and text.rstrip().endswith(bench.END)


def test_stale_duplicate_sections_are_removed_and_unbalanced_markers_refused(tmp_path):
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# t\n\n" + STALE + "\nmiddle\n\n" + STALE)
    bench.update_markdown(markdown, f"{bench.BEGIN}\nnew\n{bench.END}")
    text = markdown.read_text()
    assert text.count(bench.BEGIN) == 1 and "new" in text and "stale" not in text
    assert "middle" in text
    markdown.write_text(f"# t\n\n{bench.BEGIN}\nno end marker\n")
    with pytest.raises(ValueError, match="unbalanced"):
        bench.update_markdown(markdown, f"{bench.BEGIN}\nnew\n{bench.END}")
