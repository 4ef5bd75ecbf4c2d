"""Pictures that explain a run: replays drawn from the transition log, visitation drawn on
the layout it happened in, and a coverage view for envs without a grid.

The runs are real: a tiny Warehouse-v0 and a tiny CartPole-v1 training run (evaluator on,
as by default), and a transition log of a test-local env with an rgb_array render.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from PIL import Image, ImageSequence

from actors.replay import STRIP_FRAMES, render_episode
from actors.replay import main as replay_main
from actors.rollout import RolloutWorker
from actors.transition_log import part_files
from evaluator.visitation import PANELS
from learner.driver import train
from learner.report import coverage_figure, load_run, visitation_figure, write_report
from sims.warehouse import WarehouseEnv, WarehouseOracle
from sims.warehouse import render as warehouse_render
from turnwise.config import ActorsConfig, Config, EnvConfig, PPOConfig, compose_config

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
QUIET = ["train.progress=false", "monitoring.metrics_port=0"]
# 8,192 steps over 64 envs: every env passes its 100-step shift budget at least once, so
# whole episodes are logged however many fragments are in flight when training stops.
WAREHOUSE_RUN = ["+exp=warehouse", "train.env_steps=8192", "evaluator.every_env_steps=8192"]
WAREHOUSE_RUN += ["actors.envs_per_actor=32", "actors.fragment_length=32", *QUIET]
CARTPOLE_RUN = ["+exp=cartpole", "train.env_steps=4096", "evaluator.every_env_steps=2048"]
CARTPOLE_RUN += ["actors.envs_per_actor=8", *QUIET]
CELL = warehouse_render.CELL


# -- a test-local env with an rgb_array render -----------------------------------------------
DOT_CELLS, DOT_PIXELS, DOT_COLOR = 8, 12, (220, 30, 30)


class Dot(gymnasium.Env):
    """A dot on a line of DOT_CELLS cells: left or right; its frame is a strip with the
    dot drawn red on its cell."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, DOT_CELLS - 1.0, (1,), np.float32)
        self.position, self.steps = 0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position, self.steps = int(self.np_random.integers(DOT_CELLS)), 0
        return self._obs(), {}

    def step(self, action: int):
        self.position = int(np.clip(self.position + (1 if action else -1), 0, DOT_CELLS - 1))
        self.steps += 1
        return self._obs(), 0.0, False, self.steps >= 12, {}

    def render(self) -> np.ndarray:
        frame = np.full((DOT_PIXELS, DOT_CELLS * DOT_PIXELS, 3), 255, dtype=np.uint8)
        frame[:, self.position * DOT_PIXELS : (self.position + 1) * DOT_PIXELS] = DOT_COLOR
        return frame

    def _obs(self) -> np.ndarray:
        return np.array([self.position], dtype=np.float32)


if "PicturesDot-v0" not in gymnasium.registry:
    gymnasium.register(id="PicturesDot-v0", entry_point=Dot)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny Warehouse-v0 and a tiny CartPole-v1 run, as ``python -m learner`` makes them."""
    root = tmp_path_factory.mktemp("pictures")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, overrides in (("warehouse", WAREHOUSE_RUN), ("cartpole", CARTPOLE_RUN)):
            train(compose_config(overrides), root / name)
    finally:
        ray.shutdown()
    return {"warehouse": root / "warehouse", "cartpole": root / "cartpole"}


def logged_rows(run_dir: Path) -> dict[str, list[dict]]:
    """Every logged episode's rows, in step order."""
    episodes: dict[str, list[dict]] = {}
    for path in part_files(run_dir):
        for row in pq.read_table(path).to_pylist():
            episodes.setdefault(row["episode_id"], []).append(row)
    return {key: sorted(rows, key=lambda r: r["step"]) for key, rows in episodes.items()}


def complete_episode(run_dir: Path, moves: int = 2) -> tuple[str, list[dict]]:
    """A logged episode from its first step to its end, whose robot visits ``moves`` cells."""
    for episode_id, rows in logged_rows(run_dir).items():
        whole = rows[0]["step"] == 0 and (rows[-1]["terminated"] or rows[-1]["truncated"])
        if whole and len({tuple(r["obs"][:2]) for r in rows}) >= moves:
            return episode_id, rows
    raise AssertionError(f"no complete episode in {run_dir}")


def command(module: str, *args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def gif_durations(path: Path) -> list[int]:
    with Image.open(path) as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
        return durations


def close_to(pixels: np.ndarray, color: tuple[int, int, int], tolerance: int = 20) -> np.ndarray:
    return np.abs(pixels.astype(int) - np.array(color)).max(axis=-1) <= tolerance


def robot_cell(frame: np.ndarray) -> tuple[int, int]:
    """The cell of the robot's disk in a Warehouse frame."""
    rows, cols = np.nonzero(close_to(frame, warehouse_render.ROBOT))
    assert len(rows), "no robot drawn"
    return int(rows.mean() // CELL), int(cols.mean() // CELL)


def logged_robot(obs: list[float], size: int = 6) -> tuple[int, int]:
    return round(obs[0] * (size - 1)), round(obs[1] * (size - 1))


# -- replay: --render ----------------------------------------------------------------------------
def test_render_gif_shows_the_robot_where_the_log_has_it(runs, tmp_path):
    episode_id, rows = complete_episode(runs["warehouse"])
    out = tmp_path / "episode.gif"
    result = command("actors.replay", runs["warehouse"], "--episode", episode_id, "--render", out)
    assert result.returncode == 0, result.stderr
    assert f"verified {len(rows)} steps" in result.stdout
    frames = gif_frames(out)
    assert len(frames) == len(rows) + 1  # after the reset, and after every step
    height = 6 * CELL
    offset = (frames[0].shape[1] - height) // 2  # a narrow frame is centred above its caption
    pictures = [f[:height, offset : offset + height] for f in frames]
    seen = [robot_cell(p) for p in pictures]
    assert seen[:-1] == [logged_robot(r["obs"]) for r in rows]  # obs before each step
    changed = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    assert changed, "the robot never moved"
    for i in changed:  # the frames differ where the robot moved
        assert not np.array_equal(pictures[i], pictures[i - 1])
    assert gif_durations(out) == [250] * len(rows) + [2000]  # render_fps 4; the end held
    assert out.stat().st_size < 1_000_000


def test_render_png_strip_and_text_frames(runs, tmp_path):
    episode_id, rows = complete_episode(runs["warehouse"])
    strip, text = tmp_path / "strip.png", tmp_path / "episode.txt"
    for out in (strip, text):
        assert render_episode(runs["warehouse"], episode_id, out).ok
    with Image.open(strip) as image:
        assert image.format == "PNG"
        width, height = image.size
    shown = min(STRIP_FRAMES, len(rows) + 1)
    assert width > 6 * CELL * min(shown, 8) and height > 6 * CELL * (-(-shown // 8))
    frames = text.read_text().split("\n\n")
    assert len(frames) == len(rows) + 1
    assert frames[0].startswith("reset") and frames[-1].startswith(f"step {rows[-1]['step']}/")
    for frame, row in zip(frames, rows, strict=False):  # the robot glyph where the log has it
        grid = frame.splitlines()[-6:]
        r, c = logged_robot(row["obs"])
        assert grid[r][c] in "RABC", (frame, row["obs"][:2])


def test_render_draws_any_env_with_an_rgb_array_render(tmp_path):
    run_dir = write_dot_run(tmp_path / "dot")
    episode_id, rows = next(
        (k, v) for k, v in logged_rows(run_dir).items() if v[0]["step"] == 0 and v[-1]["truncated"]
    )
    out = tmp_path / "dot.gif"
    assert render_episode(run_dir, episode_id, out).ok
    frames = gif_frames(out)
    assert len(frames) == len(rows) + 1
    offset = (frames[0].shape[1] - DOT_CELLS * DOT_PIXELS) // 2
    for frame, row in zip(frames, rows, strict=False):
        red = np.nonzero(close_to(frame[:DOT_PIXELS], DOT_COLOR).all(axis=0))[0]
        assert (red.min() - offset) // DOT_PIXELS == int(row["obs"][0])
    assert len({frame.tobytes() for frame in frames}) > 2


def test_render_draws_nothing_where_the_log_does_not_replay(tmp_path, capsys):
    run_dir = write_dot_run(tmp_path / "dot")
    part = next(part_files(run_dir))
    table = pq.read_table(part)
    actions = table.column("action").to_pylist()
    row = 3  # a logged action the re-simulation will not reproduce
    actions[row] = 1 - actions[row]
    index = table.schema.get_field_index("action")
    field = table.schema.field(index)
    pq.write_table(table.set_column(index, field, pa.array(actions, field.type)), part)
    episode_id = table.column("episode_id")[row].as_py()
    out = tmp_path / "dot.gif"
    assert replay_main([str(run_dir), "--episode", episode_id, "--render", str(out)]) == 1
    assert "does not replay" in capsys.readouterr().err and not out.exists()


def write_dot_run(directory: Path) -> Path:
    env = EnvConfig(id="test_pictures:PicturesDot-v0")
    actors = ActorsConfig(envs_per_actor=2, fragment_length=16)
    directory.mkdir(parents=True)
    config = dataclasses.asdict(Config(env=env, actors=actors))
    (directory / "config.json").write_text(json.dumps(config))
    threads = torch.get_num_threads()  # the worker sets 1 for the whole process
    try:
        worker = RolloutWorker(0, env, actors, PPOConfig(), run_seed=0, run_dir=str(directory))
        worker.sample(None)
        worker.envs.close()
    finally:
        torch.set_num_threads(threads)
    return directory


def test_render_explains_what_it_cannot_draw(runs, tmp_path, capsys):
    episode_id, _ = complete_episode(runs["warehouse"])
    movie = tmp_path / "x.mp4"
    assert (
        replay_main([str(runs["warehouse"]), "--episode", episode_id, "--render", str(movie)]) == 2
    )
    assert "--render writes .gif, .png, .txt" in capsys.readouterr().err
    assert not movie.exists()
    cartpole = sorted(logged_rows(runs["cartpole"]))[0]
    out = tmp_path / "cartpole.gif"
    result = command("actors.replay", runs["cartpole"], "--episode", cartpole, "--render", out)
    if importlib.util.find_spec("pygame") is None:  # CartPole draws itself with pygame
        assert result.returncode == 2 and "pygame" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not out.exists()
    else:
        assert result.returncode == 0 and len(gif_frames(out)) > 1, result.stderr


def test_warehouse_rgb_array_draws_layout_robot_and_carried_item():
    env = WarehouseEnv(render_mode="rgb_array")
    env.reset(seed=3)
    frame, shift = env.render(), env.shift
    assert frame.shape == (6 * CELL, 6 * CELL, 3) and frame.dtype == np.uint8
    centre = lambda cell: tuple(frame[cell[0] * CELL + CELL // 2, cell[1] * CELL + CELL // 2])  # noqa: E731
    for cell in np.argwhere(shift.obstacles):
        assert centre(cell) == warehouse_render.PILLAR
    for item, cell in enumerate(shift.shelves):
        assert centre(cell) == warehouse_render.item_color(item)
    assert centre(env.robot) == warehouse_render.ROBOT
    r, c = shift.dropoff
    assert tuple(frame[r * CELL + 4, c * CELL + 4]) == warehouse_render.DROPOFF
    assert tuple(frame[1, CELL * 3]) == warehouse_render.WALL
    oracle = WarehouseOracle()
    while not env.carrying:
        env.step(oracle.act(env))
    frame = env.render()
    assert centre(env.robot) == warehouse_render.item_color(env.carrying - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium's checks, its render modes' included
        check_env(gymnasium.make("Warehouse-v0", render_mode="rgb_array").unwrapped)


# -- visitation on each layout, coverage without a grid ------------------------------------------
def test_evaluation_rows_carry_small_per_layout_visits(runs):
    rows = load_run(runs["warehouse"]).evaluations
    panels = rows[-1]["visitation_episodes"]
    assert [p["seed"] for p in panels] == list(range(1_000_000, 1_000_000 + PANELS))
    for panel in panels:  # every state of the episode, its first included, counted once
        assert np.sum(panel["grid"]) == panel["length"] + 1
    assert rows[-1]["visitation_cells"] is None  # Warehouse keys its own states
    assert len(json.dumps(rows[-1])) < 6_000


def test_visitation_draws_each_layout_under_its_visits(runs, tmp_path):
    run = load_run(runs["warehouse"])
    fig = visitation_figure(run)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("seed")]
    assert len(panels) == PANELS and len(fig.axes) == PANELS + 1  # and one colour bar
    rows = run.evaluations[-1]["visitation_episodes"]
    for ax, row in zip(panels, rows, strict=True):
        image = np.asarray(ax.images[0].get_array())
        env = WarehouseEnv()
        env.reset(seed=row["seed"])
        assert_layout_drawn(image, env, np.asarray(row["grid"]))
    out = tmp_path / "report"
    write_report(runs["warehouse"], out)
    assert (out / "visitation.png").stat().st_size > 20_000
    assert not (out / "coverage.png").exists()
    assert "](visitation.png)" in (out / "report.md").read_text()


def test_visitation_without_the_env_draws_the_visits_and_says_why(runs, tmp_path):
    for name in ("metrics.jsonl", "evaluations.jsonl"):  # no config.json: no env to draw
        (tmp_path / name).write_bytes((runs["warehouse"] / name).read_bytes())
    fig = visitation_figure(load_run(tmp_path))
    assert "layout not drawn: no env config" in fig.get_suptitle()
    panels = [ax for ax in fig.axes if ax.get_title().startswith("seed")]
    rows = load_run(tmp_path).evaluations[-1]["visitation_episodes"]
    for ax, row in zip(panels, rows, strict=True):
        visits = np.ma.getdata(ax.images[0].get_array())
        np.testing.assert_allclose(visits * np.sum(row["grid"]), row["grid"])


def assert_layout_drawn(image: np.ndarray, env: WarehouseEnv, grid: np.ndarray) -> None:
    """Pillars, shelves and drop-off where the seed's layout has them; the floor coloured
    exactly where the episode went."""
    shift = env.shift
    centre = lambda r, c: tuple(image[r * CELL + CELL // 2, c * CELL + CELL // 2])  # noqa: E731
    corner = lambda r, c: tuple(image[r * CELL + 4, c * CELL + 4])  # noqa: E731
    special = {tuple(shift.dropoff), *map(tuple, shift.shelves.tolist())}
    for r, c in np.ndindex(shift.obstacles.shape):
        visited = r < grid.shape[0] and c < grid.shape[1] and grid[r, c] > 0
        if shift.obstacles[r, c]:
            assert centre(r, c) == warehouse_render.PILLAR
        elif (r, c) not in special:
            assert (centre(r, c) == warehouse_render.FLOOR) != visited, (r, c)
    for item, (r, c) in enumerate(shift.shelves):
        assert centre(r, c) == warehouse_render.item_color(item)
    assert corner(*shift.dropoff) == warehouse_render.DROPOFF


def test_coverage_view_for_an_env_without_a_grid(runs, tmp_path):
    run = load_run(runs["cartpole"])
    last = run.evaluations[-1]
    assert last["visitation_episodes"] is None and len(run.evaluations) >= 2
    fig = coverage_figure(run)
    states, cells = fig.axes[0], fig.axes[1]
    line = states.get_lines()[0]
    assert list(line.get_ydata()) == [r["visited_states"] for r in run.evaluations]
    share = np.asarray(cells.images[0].get_array())
    assert share.shape == (4, 10)  # CartPole's four numbers, ten bins each
    np.testing.assert_allclose(share.sum(axis=1), 1.0)
    counts = np.asarray(last["visitation_cells"]["counts"])
    visits = round(last["episode_length"] * last["episodes"]) + last["episodes"]
    assert (counts.sum(axis=1) == visits).all()  # every state counted once per number
    labels = [t.get_text() for t in cells.get_yticklabels()]
    assert labels[0] == "obs[0] [-4.8, 4.8]" and labels[1] == "obs[1] unbounded (tanh)"
    write_report(runs["cartpole"], tmp_path)
    assert (tmp_path / "coverage.png").is_file() and not (tmp_path / "visitation.png").exists()
    assert "](coverage.png)" in (tmp_path / "report.md").read_text()


# -- the pictures in the docs --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["returns.png", "visitation.png", "coverage.png", "replay.gif"])
def test_docs_pictures_are_committed_small_and_shown(name):
    path = IMAGES / name
    assert path.is_file(), f"docs/images/{name} is missing"
    assert path.stat().st_size < 300_000
    with Image.open(path) as image:
        assert image.format == ("GIF" if name.endswith(".gif") else "PNG")
        assert min(image.size) > 150
    shown = (REPO / "README.md").read_text() + (REPO / "docs" / "evaluation.md").read_text()
    assert f"images/{name}" in shown
