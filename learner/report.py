"""Plots and a Markdown summary of one run.

``python -m learner.report RUN [--out DIR] [--serving-metrics FILE_OR_URL]`` reads
``metrics.jsonl``, ``evaluations.jsonl`` and ``alerts.jsonl`` of a run (its directory, or
its run store URI ``s3://bucket/prefix``) and writes, by default to ``RUN_DIR/report/``
(for a run on S3: ``./report-<run name>/``):

- ``returns.png``: training and evaluation return over env steps, with the oracle;
- ``health.png``: the six health metrics over env steps (inference latency from a
  serving ``/metrics`` page when one is given, else marked "not served");
- ``visitation.png`` (grid envs): the last evaluation's first episodes, one panel per
  layout, each drawn by its env from the episode's seed with visits painted on its floor;
- ``coverage.png`` (other envs): distinct states visited per evaluation, and where the
  last evaluation's states lie in each observation number;
- ``report.md``: final figures, alerts and links to the plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from evaluator.visitation import (
    MAX_CELL_NUMBERS,
    Layouts,
    LayoutUnavailable,
    cell_labels,
    evaluation_env_of,
    layout_frames,
    observation_space,
    paint,
)
from learner.progress import read_metrics

log = logging.getLogger(__name__)

ENTROPY_FLOOR = 0.02  # the ActionEntropyCollapse alert's default (monitoring/rules.py)
DIVERGENCE_RATIO = 0.8  # the EvalTrainReturnDivergence alert's default
LATENCY_METRIC = "turnwise_serve_inference_latency_seconds"
TRAIN, EVAL, ORACLE, ALERT = "tab:blue", "tab:orange", "tab:green", "tab:red"
VISITS_CMAP = "YlOrRd"  # visits painted on a layout's floor
VISITS_COLUMNS = 3  # layout panels per row
VISITS_GAMMA = 0.5  # colour ~ sqrt(share): a cell crossed once stays visible beside a stall


class ReportError(Exception):
    """A run that cannot be reported on (the CLI exits 2 with this message)."""


@dataclass
class Run:
    path: Path
    metrics: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)

    def max_steps(self) -> float:
        return float(max([r["env_steps"] for r in self.metrics + self.evaluations] + [1]))

    def series(self, key: str, evaluations: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of ``key``, nulls as NaN."""
        rows = self.evaluations if evaluations else self.metrics
        steps = np.array([r["env_steps"] for r in rows], dtype=float)
        return steps, np.array([_float(r.get(key)) for r in rows], dtype=float)


@dataclass
class Latency:
    """A serving inference-latency histogram: cumulative counts per upper bound."""

    bounds: np.ndarray
    cumulative: np.ndarray

    def quantile(self, q: float) -> float:
        """Linear interpolation within the bucket, as PromQL's histogram_quantile."""
        total = self.cumulative[-1]
        if total <= 0:
            return math.nan
        i = int(np.searchsorted(self.cumulative, q * total))
        if math.isinf(self.bounds[i]):
            return float(self.bounds[i - 1]) if i else math.nan
        lower = self.bounds[i - 1] if i else 0.0
        below = self.cumulative[i - 1] if i else 0.0
        inside = self.cumulative[i] - below
        return float(lower + (self.bounds[i] - lower) * (q * total - below) / max(inside, 1e-12))


def load_run(path: Path) -> Run:
    if not path.is_dir():
        raise ReportError(f"run directory {path} does not exist")

    def rows(name: str) -> list[dict[str, Any]]:
        return read_metrics(path / name) if (path / name).is_file() else []

    run = Run(path, rows("metrics.jsonl"), rows("evaluations.jsonl"), rows("alerts.jsonl"))
    if not run.metrics and not run.evaluations:
        raise ReportError(f"no metrics in {path} (metrics.jsonl and evaluations.jsonl)")
    if (path / "run.json").is_file():
        run.info = _json(path / "run.json")
    return run


def load_latency(source: str) -> Latency:
    """The inference-latency histogram from a Prometheus text page (file or URL)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=10) as response:
                text = response.read().decode()
        else:
            text = Path(source).read_text(encoding="utf-8")
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LATENCY_METRIC + "_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value  # sum replicas
    except (OSError, ValueError) as error:
        raise ReportError(f"cannot read serving metrics from {source}: {error}") from error
    if not buckets:
        raise ReportError(f"{source} has no {LATENCY_METRIC} histogram")
    bounds = np.array(sorted(buckets))
    return Latency(bounds, np.array([buckets[b] for b in bounds]))


# -- plots --------------------------------------------------------------------------
def plot_returns(run: Run, path: Path) -> None:
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    if run.metrics:
        steps, mean = run.series("train_return")
        _, std = run.series("train_return_std")
        ax.plot(steps, mean, color=TRAIN, label="training return (last 200 episodes)")
        ax.fill_between(steps, mean - std, mean + std, color=TRAIN, alpha=0.15, lw=0)
    if run.evaluations:
        steps, mean = run.series("eval_return", evaluations=True)
        _, std = run.series("eval_return_std", evaluations=True)
        ax.errorbar(
            steps,
            mean,
            yerr=std,
            color=EVAL,
            marker="o",
            capsize=4,
            label="evaluation return (fixed seeds, greedy)",
        )
        baseline = _last(run.evaluations, "baseline_return")
        if baseline is not None:
            name = _last(run.evaluations, "baseline") or "baseline"
            ax.axhline(baseline, color=ORACLE, ls="--", label=f"{name} {baseline:.2f}")
    ax.set(xlabel="env steps", ylabel="return per episode", title=_title(run, "Returns"))
    ax.set_xlim(0, run.max_steps() * 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    _save(fig, path)


def plot_health(run: Run, path: Path, latency: Latency | None) -> None:
    fig = Figure(figsize=(14, 8), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    fig.suptitle(_title(run, "Health metrics"))
    ax = axes[0]
    _line(ax, run, "episode_length", "training")
    _points(ax, run, "episode_length", "evaluation")
    _finish(ax, "Episode length", "steps")
    ax = axes[1]
    _line(ax, run, "entropy", "training policy")
    _points(ax, run, "action_entropy", "evaluation states")
    ax.axhline(ENTROPY_FLOOR, color=ALERT, ls="--", lw=1, label=f"alert floor {ENTROPY_FLOOR}")
    _finish(ax, "Action entropy", "nats")
    ax = axes[2]
    _points(ax, run, "state_coverage", "coverage (visited / reachable)")
    _points(ax, run, "visitation_entropy", "visitation entropy (normalized)", color=ORACLE)
    ax.set_ylim(0, 1.05)
    _finish(ax, "State visitation (evaluation)", "share")
    ax = axes[3]
    if run.metrics:
        steps, std = run.series("train_return_std")
        ax.plot(steps, std**2, color=TRAIN, label="training returns")
    _finish(ax, "Reward variance", "return variance")
    _plot_ratio(axes[4], run)
    for ax in axes[:5]:  # one env-step axis for every metric of the run
        ax.set_xlim(0, run.max_steps() * 1.03)
    _plot_latency(axes[5], latency)
    _save(fig, path)


def _plot_ratio(ax: Axes, run: Run) -> None:
    steps, ratio = run.series("eval_train_ratio", evaluations=True)
    ax.plot(steps, ratio, color=EVAL, marker="o", label="eval / train return")
    alerted = np.array([bool(r.get("divergence_alert")) for r in run.evaluations], dtype=bool)
    if alerted.any():
        ax.scatter(steps[alerted], ratio[alerted], color=ALERT, zorder=3, s=60, label="alert")
    ax.axhline(DIVERGENCE_RATIO, color=ALERT, ls="--", lw=1, label=f"alert {DIVERGENCE_RATIO}")
    if run.evaluations and np.isnan(ratio).all():
        _note(ax, "undefined: training return\nnot positive at any evaluation")
    _finish(ax, "Eval vs train return", "ratio")


def _plot_latency(ax: Axes, latency: Latency | None) -> None:
    if latency is None:
        _note(ax, "not served\n(pass --serving-metrics FILE_OR_URL)")
        ax.set(title="Inference latency", xticks=[], yticks=[])
        return
    finite = np.isfinite(latency.bounds)
    total = max(latency.cumulative[-1], 1.0)
    ax.step(
        latency.bounds[finite] * 1e3,
        latency.cumulative[finite] / total,
        where="post",
        color=TRAIN,
        label="share of forward passes",
    )
    for q, style in ((0.5, ":"), (0.99, "--")):
        value = latency.quantile(q)
        if math.isfinite(value):
            ax.axvline(
                value * 1e3, color=ALERT, ls=style, lw=1, label=f"p{q * 100:g} {value * 1e3:.2f} ms"
            )
    ax.set_xscale("log")
    _finish(ax, "Inference latency (serving)", "cumulative share", xlabel="ms per forward pass")


def plot_visitation(run: Run, path: Path) -> bool:
    """One panel per layout (the last evaluation's first episodes): the warehouse as its
    env draws it, its floor coloured by visits; False for an env without a grid."""
    fig = visitation_figure(run)
    if fig is None:
        return False
    _save(fig, path)
    return True


def visitation_figure(run: Run) -> Figure | None:
    """The figure of :func:`plot_visitation`; None without per-layout visits."""
    last = run.evaluations[-1] if run.evaluations else {}
    panels = last.get("visitation_episodes")
    if not panels:
        return None
    layouts, missing = _layouts(run, [p["seed"] for p in panels])
    shares = [np.asarray(p["grid"], dtype=float) / max(np.sum(p["grid"]), 1) for p in panels]
    cmap = ListedColormap(colormaps[VISITS_CMAP](np.linspace(0.15, 1.0, 256)))
    norm = PowerNorm(VISITS_GAMMA, 0.0, max(float(s.max()) for s in shares) or 1.0)
    cols = min(VISITS_COLUMNS, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.3 * cols + 1.2, 3.5 * rows + 1.4), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(panels) :]:
        ax.remove()  # the figure's axes: one per panel, and the colour bar's
    for ax, panel, share in zip(axes, panels, shares, strict=False):
        _visits_panel(ax, panel, share, layouts, cmap, norm)
    fig.colorbar(
        ScalarMappable(norm, cmap),
        ax=axes[: len(panels)],
        label="share of the episode's states",
        format="{x:.0%}",
        shrink=0.8,
    )
    how = (
        "drawn by the env from each episode's seed; floor coloured by the share of the "
        "episode's states per cell"
        if layouts
        else f"layout not drawn: {missing}"
    )
    fig.suptitle(
        f"State visitation at {last['env_steps']:,} env steps: the first {len(panels)} of "
        f"{last.get('episodes', '?')} evaluation episodes, each on its own layout\n({how})",
        fontsize=11,
    )
    if layouts and layouts.legend:
        handles = [Patch(facecolor=np.array(c) / 255, label=n) for n, c in layouts.legend.items()]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7))
    return fig


def _layouts(run: Run, seeds: list[int]) -> tuple[Layouts | None, str]:
    try:
        return layout_frames(evaluation_env_of(run.path), seeds), ""
    except LayoutUnavailable as error:
        log.warning("visitation drawn without the layouts: %s", error)
        return None, str(error)


def _visits_panel(
    ax: Axes,
    panel: dict[str, Any],
    share: np.ndarray,
    layouts: Layouts | None,
    cmap: ListedColormap,
    norm: Normalize,
) -> None:
    if layouts is None:
        ax.imshow(np.ma.masked_equal(share, 0), cmap=cmap, norm=norm)
        height, width = share.shape
    else:
        frame = layouts.frames[panel["seed"]]
        colors = lambda v: (cmap(norm(v))[:, :3] * 255).astype(np.uint8)  # noqa: E731
        height, width = frame.shape[0] // layouts.cell, frame.shape[1] // layouts.cell
        image = paint(frame, layouts.cell, share, colors)
        ax.imshow(image, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    success = panel.get("success")
    ending = "" if success is None else ", success" if success else ", no success"
    ax.set_title(
        f"seed {panel['seed']}\nreturn {panel['return']:.2f}, {panel['length']} steps{ending}",
        fontsize=9,
    )
    ax.set_xticks(range(width) if width <= 16 else [])
    ax.set_yticks(range(height) if height <= 16 else [])
    ax.tick_params(labelsize=7)


def plot_coverage(run: Run, path: Path) -> bool:
    """For an env without a grid: distinct states over the evaluations, and where the
    last evaluation's states lie in each observation number; False without rows."""
    if not run.evaluations:
        return False
    _save(coverage_figure(run), path)
    return True


def coverage_figure(run: Run) -> Figure:
    """The figure of :func:`plot_coverage`."""
    last = run.evaluations[-1]
    fig = Figure(figsize=(14, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.5))
    fig.suptitle(_title(run, "State coverage (evaluation)"))
    steps, states = run.series("visited_states", evaluations=True)
    left.plot(steps, states, color=EVAL, marker="o", label="distinct states visited")
    left.set_ylim(bottom=0)
    left.set_xlim(0, run.max_steps() * 1.03)
    left.xaxis.set_major_locator(MaxNLocator(5))
    _finish(
        left,
        "Distinct states per evaluation",
        f"states (per seed, summed over {last.get('episodes', '?')} episodes)",
    )
    _cells_panel(right, run, last)
    return fig


def _cells_panel(ax: Axes, run: Run, last: dict[str, Any]) -> None:
    cells = last.get("visitation_cells")
    if not cells:
        _note(
            ax,
            "no cells to draw: the env keys its own states\n(state_key) or its "
            f"observation has over {MAX_CELL_NUMBERS} numbers",
        )
        ax.set(xticks=[], yticks=[], title="Visited states per observation number")
        return
    counts = np.asarray(cells["counts"], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    image = ax.imshow(share, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, label="share of the visited states", format="{x:.0%}")
    if share.size <= 200:
        for (row, col), value in np.ndenumerate(share):
            if counts[row, col]:
                color = "black" if value > 0.6 else "white"
                text = f"{value:.0%}" if value >= 0.005 else "<1%"
                ax.text(col, row, text, ha="center", va="center", fontsize=7, color=color)
    space = observation_space(evaluation_env_of(run.path)) if _has_config(run) else None
    labels = cell_labels(space, len(share))
    ax.set_yticks(range(len(share)), labels if len(labels) == len(share) else None, fontsize=8)
    ax.set(
        xticks=range(cells["bins"]),
        xlabel=f"bin: {cells['bins']} equal parts of the number's range, low to high",
        title=f"Where the visited states lie at {last['env_steps']:,} env steps "
        "(cells of the discretised observation)",
    )


def _has_config(run: Run) -> bool:
    return (run.path / "config.json").is_file()


def _line(ax: Axes, run: Run, key: str, label: str) -> None:
    if run.metrics:
        ax.plot(*run.series(key), color=TRAIN, label=label)


def _points(ax: Axes, run: Run, key: str, label: str, color: str = EVAL) -> None:
    if run.evaluations:
        ax.plot(*run.series(key, evaluations=True), color=color, marker="o", label=label)


def _finish(ax: Axes, title: str, ylabel: str, xlabel: str = "env steps") -> None:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _note(ax: Axes, text: str) -> None:
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.4"
    )


def _title(run: Run, what: str) -> str:
    env = run.info.get("env_id") or "unknown env"
    return f"{what}: run {run.path.resolve().name} ({env})"


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig).print_png(path)


# -- summary ------------------------------------------------------------------------
def summary(run: Run, plots: Sequence[str], latency: Latency | None) -> str:
    train = run.metrics[-1] if run.metrics else {}
    last = run.evaluations[-1] if run.evaluations else {}
    steps = max(train.get("env_steps", 0), last.get("env_steps", 0))
    rows = [
        ("env steps", f"{steps:,}"),
        ("training return (last 200 episodes)", _fmt(train.get("train_return"))),
        ("evaluation return", _eval_return(last)),
        (f"baseline return ({last.get('baseline', 'oracle')})", _fmt(last.get("baseline_return"))),
        ("fraction of the baseline", _fmt(last.get("fraction_of_baseline"), "{:.1%}")),
        ("success rate", _fmt(last.get("success_rate"), "{:.1%}")),
        ("eval / train return ratio", _ratio(last)),
        ("episode length (train / eval)", _pair(train, last, "episode_length", "{:.1f}")),
        ("action entropy, nats (train / eval)", _pair(train, last, "entropy", "{:.3f}")),
        ("state coverage", _fmt(last.get("state_coverage"), "{:.1%}")),
        ("state visitation entropy", _fmt(last.get("visitation_entropy"), "{:.3f}")),
        ("reward variance", _fmt(_square(train.get("train_return_std")))),
        ("inference latency p99", _latency(latency)),
    ]
    lines = [
        f"# Run report: {run.path.resolve().name}",
        "",
        f"Experiment `{run.info.get('env_id', '?')}` (env version "
        f"`{run.info.get('env_version', '?')}`, seed {run.info.get('run_seed', '?')}); "
        f"{len(run.metrics)} learner updates, {len(run.evaluations)} evaluations"
        + (f", last of checkpoint `{last['checkpoint']}`." if "checkpoint" in last else "."),
        "",
        "| metric | final value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "## Alerts",
        "",
        *_alerts(run.alerts),
        "",
        "## Plots",
        "",
        *(f"- [{name}]({name})" for name in plots),
        "",
        *(f"![{Path(name).stem}]({name})" for name in plots),
        "",
    ]
    return "\n".join(lines)


def _alerts(alerts: list[dict[str, Any]]) -> list[str]:
    if not alerts:
        return ["None raised (`alerts.jsonl`)."]
    lines = [
        "| time (UTC) | alert | checkpoint | env steps | eval / train |",
        "|---|---|---|---|---|",
    ]
    for a in alerts:
        when = dt.datetime.fromtimestamp(a.get("time", 0), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"| {when} | {a.get('alert', '?')} | {a.get('checkpoint', '')} | "
            f"{a.get('env_steps', '')} | {_fmt(a.get('eval_train_ratio'), '{:.1%}')} |"
        )
    return lines


def _eval_return(last: dict[str, Any]) -> str:
    if not _finite(last.get("eval_return")):
        return "no evaluation"
    std = last.get("eval_return_std")
    return _fmt(last["eval_return"]) + (f" ± {std:.3f}" if _finite(std) else "")


def _ratio(last: dict[str, Any]) -> str:
    if not last:
        return "no evaluation"
    if not _finite(last.get("eval_train_ratio")):
        return "undefined (training return not positive)"
    flag = " (below the alert threshold)" if last.get("divergence_alert") else ""
    return _fmt(last["eval_train_ratio"], "{:.1%}") + flag


def _pair(train: dict[str, Any], last: dict[str, Any], key: str, spec: str) -> str:
    eval_key = "action_entropy" if key == "entropy" else key
    return f"{_fmt(train.get(key), spec)} / {_fmt(last.get(eval_key), spec)}"


def _latency(latency: Latency | None) -> str:
    if latency is None:
        return "not served"
    p99 = latency.quantile(0.99)
    return f"{p99 * 1e3:.2f} ms" if math.isfinite(p99) else "no requests"


def _fmt(value: Any, spec: str = "{:.3f}") -> str:
    return spec.format(value) if _finite(value) else "n/a"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _float(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _square(value: Any) -> float | None:
    return value**2 if _finite(value) else None


def _last(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if _finite(r.get(key))]
    return values[-1] if values else None


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("cannot read %s", path)
        return {}


# -- CLI ----------------------------------------------------------------------------
RECORDS = ("metrics.jsonl", "evaluations.jsonl", "alerts.jsonl", "run.json", "config.json")


def fetch_records(uri: str, into: Path) -> Path:
    """Copy a run store's records (not its checkpoints or transitions) from ``uri`` (an
    ``s3://`` run store) into the directory ``into/<run name>``; returns that directory."""
    from turnwise.run_store import RunStore

    store = RunStore(uri)
    local = into / (store.uri.rstrip("/").rpartition("/")[2] or "run")
    local.mkdir(parents=True, exist_ok=True)
    found = 0
    for name in RECORDS:
        data = store.read_or_none(name)
        if data is not None:
            (local / name).write_bytes(data)
            found += 1
    if not found:
        raise ReportError(f"no run at {store.uri} (none of {', '.join(RECORDS)})")
    return local


def write_report(run_dir: str | Path, out: Path | None = None, serving: str | None = None) -> Path:
    """Write the plots and report.md; returns the path of report.md. ``run_dir`` may be
    an ``s3://`` run store: its records are read from there."""
    if str(run_dir).startswith("s3://"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="turnwise-report-") as tmp:
            local = fetch_records(str(run_dir), Path(tmp))
            return write_report(local, out or Path.cwd() / f"report-{local.name}", serving)
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    latency = load_latency(serving) if serving else None
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plot_returns(run, out / "returns.png")
    plot_health(run, out / "health.png", latency)
    plots = ["returns.png", "health.png"]
    if plot_visitation(run, out / "visitation.png"):
        plots.append("visitation.png")
    elif plot_coverage(run, out / "coverage.png"):
        plots.append("coverage.png")
    report = out / "report.md"
    report.write_text(summary(run, plots, latency), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m learner.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dir", help="a run directory (hydra.run.dir) or run store URI (s3://bucket/prefix)"
    )
    parser.add_argument("--out", type=Path, help="output directory (default RUN_DIR/report)")
    parser.add_argument(
        "--serving-metrics",
        metavar="FILE_OR_URL",
        help="a serving /metrics page, for the inference latency panel",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = write_report(args.run_dir, args.out, args.serving_metrics)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
