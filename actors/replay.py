"""Replay a logged episode: print it step by step, re-simulate it and check it, or draw it.

Usage::

    python -m actors.replay RUN_DIR --list [--limit N]
    python -m actors.replay RUN_DIR --episode 0.0.3.5
    python -m actors.replay RUN_DIR --episode 0.0.3.5 --verify
    python -m actors.replay RUN_DIR --episode 0.0.3.5 --render episode.gif

``--list`` prints the run's episodes (id, logged steps, return, whether the last
logged step ended the episode). ``--episode ID`` prints one episode as a table, a
row per step: action, reward and its components, how the step ended, the policy
version and the key state decoded from the observation. With ``--verify`` it
prints no table: it rebuilds the env from the run's ``config.json``, resets it
with the episode's replay record (``episode_seed`` / ``reset_options`` on step 0)
and steps it with the logged actions, comparing every logged field the simulator
determines (obs, reward, reward components, terminated, truncated, bootstrap_obs,
episode_return, env_version). An episode the run stopped in the middle of is
verified as far as it was logged.

``--render FILE`` re-simulates the episode the same way, in-process, with the env's
render on, and draws it where it replays exactly: ``.gif`` an animation (one frame
after the reset and one after each step, at the env's ``render_fps``), ``.png`` a strip
of up to :data:`STRIP_FRAMES` frames evenly spaced (the first and last included), both
from the ``rgb_array`` render; ``.txt`` the ``ansi`` (text) render, frame after frame.
Each frame is captioned with the step, the action, its reward and the return so far.

Exit status: 0 success, 1 the re-simulation differs from the log (the first
difference is named: step, field, logged and re-simulated values), 2 a usage
problem (no such run directory, no transitions, unknown episode, an env that cannot
draw itself in the format asked for).

:func:`verify_episode` does the same check in-process and returns a
:class:`VerifyResult`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import gymnasium
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors.envs import describe_env, make_env
from actors.transition_log import part_names, transitions
from sims import WAREHOUSE_ID
from sims.warehouse import observation
from sims.warehouse.layout import ACTION_NAMES
from turnwise.config import EnvConfig, SimulatorConfig, env_config_from_dict
from turnwise.policy.distributions import ActionHead, make_head
from turnwise.policy.observations import encode, stack
from turnwise.run_store import RunStore

if TYPE_CHECKING:
    from PIL.Image import Image

LIST_LIMIT = 50  # episodes --list shows unless told otherwise
NO_WRAP = 10_000  # console width when the output is not a terminal
OBS_PREVIEW = 4  # observation values shown as the key state of envs we cannot decode

RenderMode = Literal["rgb_array", "ansi"]
RENDER_MODES: dict[str, RenderMode] = {".gif": "rgb_array", ".png": "rgb_array", ".txt": "ansi"}
STRIP_FRAMES = 16  # frames a --render PNG strip shows, evenly spaced
STRIP_COLUMNS = 8  # frames per row of the strip
STRIP_GAP = 4  # pixels between the strip's frames
DEFAULT_FPS = 4.0  # GIF frames per second for an env that declares no render_fps
LAST_FRAME_MS = 2000  # the GIF holds its last frame this long before it loops
MIN_FRAME_WIDTH = 240  # pixels: room for the caption under a narrow frame
CAPTION_PIXELS = 34  # height of the two caption lines under each frame
CAPTION_FONT = 12


class ReplayError(Exception):
    """A problem with the request or the run directory, not with the episode (exit 2)."""


@dataclass(frozen=True)
class Mismatch:
    """The first place where the log and the re-simulation disagree."""

    step: int
    field: str
    logged: Any
    simulated: Any
    note: str = ""

    def __str__(self) -> str:
        text = (
            f"step {self.step}: {self.field} differs: logged {self.logged}, "
            f"re-simulated {self.simulated}"
        )
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class VerifyResult:
    episode_id: str
    steps: int  # steps that matched the log
    mismatch: Mismatch | None = None
    cut_by_simulator_failure: bool = False  # the log ends the episode at a dead simulator

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def message(self) -> str:
        if self.mismatch is None:
            cut = " (then cut by a simulator failure)" if self.cut_by_simulator_failure else ""
            return f"verified {self.steps} steps of episode {self.episode_id}{cut}"
        return f"episode {self.episode_id} does not replay: {self.mismatch}"


@dataclass(frozen=True)
class EpisodeSummary:
    episode_id: str
    steps: int
    total_reward: float
    terminated: bool
    truncated: bool

    @property
    def complete(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True)
class StepOutcome:
    """What the re-simulated env returned for one step."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    components: dict[str, float]
    episode_return: float


# -- reading the run ----------------------------------------------------------------


def open_run(run_dir: str | Path | RunStore) -> RunStore:
    """The run (a directory or a run store URI such as ``s3://bucket/prefix``), checked
    to exist and to hold transitions."""
    run = run_dir if isinstance(run_dir, RunStore) else RunStore(run_dir)
    if not run.is_dir():
        raise ReplayError(f"no run directory {run.uri!r}")
    if not part_names(run):
        raise ReplayError(f"no transitions under {run.uri_of('transitions')}")
    return run


def load_env_config(run_dir: str | Path | RunStore) -> EnvConfig:
    """The run's env config, from ``config.json``."""
    run = run_dir if isinstance(run_dir, RunStore) else RunStore(run_dir)
    path = run.uri_of("config.json")
    try:
        return env_config_from_dict(json.loads(run.read("config.json"))["env"])
    except FileNotFoundError as error:
        raise ReplayError(f"{path} not found: it says which env the run used") from error
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ReplayError(f"{path} has no valid 'env' entry: {error}") from error


def load_episode(run_dir: str | Path | RunStore, episode_id: str) -> pa.Table:
    """Every logged row of one episode, in step order."""
    condition = pc.field("episode_id") == episode_id
    actor = _actor_of(episode_id)
    if actor is not None:  # lets Parquet skip other actors' parts by their statistics
        condition = condition & (pc.field("actor_id") == actor)
    table = transitions(run_dir).to_table(filter=condition)
    if table.num_rows == 0:
        raise ReplayError(
            f"no episode {episode_id!r} in {run_dir}; "
            f"`python -m actors.replay {run_dir} --list` shows its episodes"
        )
    return table.sort_by("step")


def list_episodes(run_dir: str | Path | RunStore) -> list[EpisodeSummary]:
    """One summary per logged episode, in id order (actor, incarnation, env, n)."""
    columns = ["episode_id", "step", "reward", "terminated", "truncated"]
    table = transitions(run_dir).to_table(columns=columns)
    aggregates = [(c, "any") for c in ("terminated", "truncated")]
    grouped = table.group_by("episode_id").aggregate(
        [("step", "count"), ("reward", "sum"), *aggregates]
    )
    summaries = [
        EpisodeSummary(
            row["episode_id"],
            row["step_count"],
            row["reward_sum"],
            row["terminated_any"],
            row["truncated_any"],
        )
        for row in grouped.to_pylist()
    ]
    return sorted(summaries, key=lambda s: _id_key(s.episode_id))


def _id_parts(episode_id: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in episode_id.split("."))
    except ValueError:
        return None


def _actor_of(episode_id: str) -> int | None:
    parts = _id_parts(episode_id)
    return parts[0] if parts and len(parts) == 4 and 0 <= parts[0] < 2**31 else None


def _id_key(episode_id: str) -> tuple[int, tuple[int, ...], str]:
    parts = _id_parts(episode_id)
    return (0, parts, "") if parts is not None else (1, (), episode_id)


def reward_component_names(table: pa.Table) -> list[str]:
    metadata = table.schema.metadata or {}
    if b"turnwise.reward_components" in metadata:
        return json.loads(metadata[b"turnwise.reward_components"])
    return [name.removeprefix("reward_") for name in table.column_names if name[:7] == "reward_"]


# -- verification ---------------------------------------------------------------------


def verify_episode(run_dir: str | Path, episode_id: str) -> VerifyResult:
    """Re-simulate one logged episode and compare it with the log, step by step."""
    run = open_run(run_dir)
    return verify_table(load_episode(run, episode_id), load_env_config(run))


def verify_table(
    table: pa.Table, config: EnvConfig, drawing: Drawing | None = None
) -> VerifyResult:
    """Verify one episode's rows (sorted by step) against a fresh env built from ``config``;
    with a ``drawing``, that env renders in-process and each state is drawn into it."""
    episode_id = table.column("episode_id")[0].as_py()
    rows = table.to_pylist()
    problem = (
        _check_env_identity(table, config, rows) or _check_steps(rows) or _check_record(rows[0])
    )
    if problem is not None:
        return VerifyResult(episode_id, 0, problem)
    env = _build_env(config) if drawing is None else _render_env(config, drawing.mode)
    draw = drawing or (lambda env: None)
    try:
        return _resimulate(env, rows, reward_component_names(table), episode_id, draw)
    finally:
        env.close()


def _build_env(config: EnvConfig) -> gymnasium.Env:
    try:
        return make_env(config)
    except ValueError as error:
        raise ReplayError(f"cannot rebuild the run's env: {error}") from error


def _check_env_identity(table: pa.Table, config: EnvConfig, rows: list[dict]) -> Mismatch | None:
    logged_id = (table.schema.metadata or {}).get(b"turnwise.env_id", b"").decode()
    if logged_id and logged_id != config.id:
        return Mismatch(0, "env id", logged_id, config.id, "config.json names another env")
    try:
        version = describe_env(config).version
    except ValueError as error:
        raise ReplayError(f"cannot rebuild the run's env: {error}") from error
    for row in rows:
        if row["env_version"] != version:
            note = "the simulator's code or its config changed since the run was logged"
            return Mismatch(row["step"], "env_version", row["env_version"], version, note)
    return None


def _check_steps(rows: list[dict]) -> Mismatch | None:
    for index, row in enumerate(rows):
        if row["step"] != index:
            note = (
                "the episode's first rows are not in the log; it cannot be re-created"
                if index == 0
                else "logged steps are not contiguous (rows missing or duplicated)"
            )
            return Mismatch(index, "step", row["step"], index, note)
    return None


def _check_record(first: dict) -> Mismatch | None:
    if first["episode_seed"] is None and first["reset_options"] is None:
        note = "step 0 carries neither episode_seed nor reset_options"
        return Mismatch(0, "episode_seed/reset_options", None, "a replay record", note)
    return None


def _resimulate(
    env: gymnasium.Env,
    rows: list[dict],
    components: list[str],
    episode_id: str,
    draw: Callable[[gymnasium.Env], None],
) -> VerifyResult:
    try:
        obs = _reset(env, rows[0])
    except Exception as error:  # a replay record the simulator rejects is a finding
        mismatch = Mismatch(0, "reset_options", rows[0]["reset_options"], f"reset raised {error!r}")
        return VerifyResult(episode_id, 0, mismatch)
    draw(env)
    episode_return, ended = 0.0, False
    head = make_head(env.action_space)
    for row in rows:
        step = row["step"]
        if ended:
            note = "logged rows continue after the episode ended"
            return VerifyResult(episode_id, step, Mismatch(step, "step", step, "none", note))
        mismatch = _obs_mismatch(step, "obs", row["obs"], obs)
        if mismatch is not None:
            return VerifyResult(episode_id, step, mismatch)
        if row.get("simulator_failure"):  # this action never ran: nothing more to re-simulate
            return VerifyResult(episode_id, step, cut_by_simulator_failure=True)
        try:
            outcome = _step(env, head, row["action"], episode_return)
        except Exception as error:  # the simulator rejecting a logged action is a finding
            mismatch = Mismatch(step, "action", row["action"], f"env.step raised {error!r}")
            return VerifyResult(episode_id, step, mismatch)
        mismatch = next(_step_mismatches(row, outcome, components), None)
        if mismatch is not None:
            return VerifyResult(episode_id, step, mismatch)
        obs, episode_return = outcome.obs, outcome.episode_return
        ended = outcome.terminated or outcome.truncated
        draw(env)
    return VerifyResult(episode_id, len(rows))


def _reset(env: gymnasium.Env, first: dict) -> np.ndarray:
    options = None if first["reset_options"] is None else json.loads(first["reset_options"])
    obs, _ = env.reset(seed=first["episode_seed"], options=options)
    return _flat(env, obs)


def _flat(env: gymnasium.Env, obs: Any) -> np.ndarray:
    """An observation as the log holds it (``turnwise.policy.observations.encode``)."""
    return encode(env.observation_space, stack(env.observation_space, [obs]))[0]


def _step(env: gymnasium.Env, head: ActionHead, action: Any, episode_return: float) -> StepOutcome:
    """The logged (policy) action sent as the rollout actor sent it (clipped, offset)."""
    obs, reward, terminated, truncated, info = env.step(head.to_env(np.asarray([action]))[0])
    return StepOutcome(
        obs=_flat(env, obs),
        reward=float(reward),
        terminated=bool(terminated),
        truncated=bool(truncated),
        components={k: float(v) for k, v in info.get("reward_components", {}).items()},
        episode_return=episode_return + float(reward),
    )


def _step_mismatches(row: dict, out: StepOutcome, components: list[str]) -> Iterator[Mismatch]:
    """Every disagreement of one step's logged fields with its re-simulation, in order."""
    step = row["step"]
    yield from _float_mismatch(step, "reward", row["reward"], out.reward)
    for name in components:
        simulated = out.components.get(name)
        yield from _float_mismatch(step, f"reward_{name}", row[f"reward_{name}"], simulated)
    for name in ("terminated", "truncated"):
        if row[name] != getattr(out, name):
            yield Mismatch(step, name, row[name], getattr(out, name))
    yield from _bootstrap_mismatch(row, out)
    yield from _return_mismatch(row, out)


def _bootstrap_mismatch(row: dict, out: StepOutcome) -> Iterator[Mismatch]:
    step, logged = row["step"], row["bootstrap_obs"]
    if logged is None and out.truncated:
        note = "a truncated step must carry its final observation"
        yield Mismatch(step, "bootstrap_obs", None, "the final observation", note)
    elif logged is not None:
        mismatch = _obs_mismatch(step, "bootstrap_obs", logged, out.obs)
        if mismatch is not None:
            yield mismatch


def _return_mismatch(row: dict, out: StepOutcome) -> Iterator[Mismatch]:
    step, logged = row["step"], row["episode_return"]
    if out.terminated or out.truncated:
        yield from _float_mismatch(step, "episode_return", logged, out.episode_return)
    elif logged is not None:
        note = "episode_return belongs on the episode's last step only"
        yield Mismatch(step, "episode_return", _f32(logged), None, note)


def _float_mismatch(
    step: int, name: str, logged: float | None, simulated: Any
) -> Iterator[Mismatch]:
    """Logged floats are float32: the re-simulated value must round to the same one."""
    if logged is None or simulated is None:
        if logged is not simulated:
            yield Mismatch(step, name, _f32(logged), _f32(simulated))
        return
    a, b = np.float32(logged), np.float32(simulated)
    if not (a == b or (np.isnan(a) and np.isnan(b))):
        yield Mismatch(step, name, a, b)


def _obs_mismatch(step: int, name: str, logged: list[float], simulated: Any) -> Mismatch | None:
    a = np.asarray(logged, dtype=np.float32)
    b = np.asarray(simulated, dtype=np.float32).reshape(-1)
    if a.shape != b.shape:
        return Mismatch(step, f"{name} shape", a.shape, b.shape)
    differ = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
    if len(differ) == 0:
        return None
    i = int(differ[0])
    return Mismatch(step, f"{name}[{i}]", a[i], b[i], f"{len(differ)} of {a.size} values differ")


def _f32(value: float | None) -> np.float32 | None:
    return None if value is None else np.float32(value)


# -- drawing ----------------------------------------------------------------------------


@dataclass
class Drawing:
    """The env's render after the reset and after each re-simulated step that matched."""

    mode: RenderMode
    frames: list[Any] = field(default_factory=list)  # RGB arrays (H, W, 3) or text
    fps: float = DEFAULT_FPS  # the env's render_fps

    def __call__(self, env: gymnasium.Env) -> None:
        self.fps = float(env.metadata.get("render_fps") or DEFAULT_FPS)
        self.frames.append(_picture(env, self.mode))


def render_episode(run_dir: str | Path, episode_id: str, path: str | Path) -> VerifyResult:
    """Re-simulate one logged episode with the env's render on and, where it replays
    exactly, draw it to ``path`` (the format from its suffix: see the module docstring)."""
    path = Path(path)
    mode = render_mode_for(path)
    run = open_run(run_dir)
    table, config = load_episode(run, episode_id), load_env_config(run)
    drawing = Drawing(mode)
    result = verify_table(table, config, drawing)
    if result.ok:
        captions = episode_captions(table.to_pylist(), config)
        write_frames(path, drawing.frames, captions[: len(drawing.frames)], drawing.fps)
    return result


def render_mode_for(path: Path) -> RenderMode:
    if path.suffix.lower() not in RENDER_MODES:
        raise ReplayError(f"--render writes {', '.join(RENDER_MODES)} files, not {path.name!r}")
    return RENDER_MODES[path.suffix.lower()]


def _render_env(config: EnvConfig, mode: RenderMode) -> gymnasium.Env:
    """The run's env, in-process whatever simulator mode the run used, rendering ``mode``."""
    local = dataclasses.replace(config, simulator=SimulatorConfig())
    probe = _build_env(local)
    try:
        modes = list(probe.metadata.get("render_modes") or [])
    finally:
        probe.close()
    if mode not in modes:
        hint = "; --render FILE.txt draws its text render" if "ansi" in modes else ""
        raise ReplayError(f"{config.id} has no {mode} render (its modes: {modes}){hint}")
    return make_env(local, render_mode=mode)


def _picture(env: gymnasium.Env, mode: RenderMode) -> np.ndarray | str:
    name = env.spec.id if env.spec else type(env.unwrapped).__name__
    try:
        picture = env.render()
    except (gymnasium.error.DependencyNotInstalled, ImportError) as error:
        raise ReplayError(f"{name} cannot draw itself here: {error}") from error
    if mode == "ansi" and isinstance(picture, str):
        return picture
    array = np.asarray(picture)
    if mode == "ansi" or array.ndim != 3 or array.shape[-1] not in (3, 4):
        shape = getattr(picture, "shape", type(picture).__name__)
        raise ReplayError(f"{name}'s {mode} render returned {shape}, not a frame")
    return array[..., :3].astype(np.uint8)


def episode_captions(rows: list[dict], config: EnvConfig) -> list[str]:
    """One caption per frame: the reset, then each step's action, reward and return."""
    seed = rows[0]["episode_seed"]
    captions = ["reset" + (f" (seed {seed})" if seed is not None else " (replay record)")]
    total, last = 0.0, rows[-1]["step"]
    for row in rows:
        total += row["reward"]
        ending = " terminated" if row["terminated"] else " truncated" if row["truncated"] else ""
        action = _action_text(row["action"], config.id == WAREHOUSE_ID)
        captions.append(
            f"step {row['step']}/{last}: {action}{ending}\n"
            f"reward {row['reward']:+.2f}, return {total:.2f}"
        )
    return captions


def write_frames(path: Path, frames: list[Any], captions: list[str], fps: float) -> None:
    """A GIF of every frame, a PNG strip of up to STRIP_FRAMES, or the text frames."""
    if path.suffix.lower() == ".txt":
        text = "\n".join(
            f"{caption}\n{frame}" for frame, caption in zip(frames, captions, strict=True)
        )
        path.write_text(text, encoding="utf-8")
        return
    width = max(MIN_FRAME_WIDTH, max(frame.shape[1] for frame in frames))
    images = [_captioned(f, c, width) for f, c in zip(frames, captions, strict=True)]
    if path.suffix.lower() == ".gif":
        durations = [round(1000 / fps)] * (len(images) - 1) + [LAST_FRAME_MS]
        images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    else:
        _strip(images).save(path, optimize=True)


def _captioned(frame: np.ndarray, caption: str, width: int) -> Image:
    """The frame, centred on a canvas ``width`` wide, with its caption below."""
    from PIL import Image, ImageDraw

    height = frame.shape[0]
    canvas = Image.new("RGB", (width, height + CAPTION_PIXELS), "white")
    canvas.paste(Image.fromarray(frame), ((width - frame.shape[1]) // 2, 0))
    ImageDraw.Draw(canvas).multiline_text((4, height + 3), caption, fill="black", font=_font())
    return canvas


@cache
def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=CAPTION_FONT)


def _strip(images: list[Image]) -> Image:
    """Up to STRIP_FRAMES of the images, evenly spaced, STRIP_COLUMNS a row."""
    from PIL import Image

    shown = sorted({int(i) for i in np.linspace(0, len(images) - 1, STRIP_FRAMES).round()})
    columns = min(len(shown), STRIP_COLUMNS)
    rows = -(-len(shown) // columns)
    width, height = images[0].size
    gap = STRIP_GAP
    strip = Image.new(
        "RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), (200, 200, 200)
    )
    for n, index in enumerate(shown):
        row, column = divmod(n, columns)
        strip.paste(images[index], (gap + column * (width + gap), gap + row * (height + gap)))
    return strip


# -- printing -------------------------------------------------------------------------


def print_listing(summaries: list[EpisodeSummary], limit: int, console: Console) -> None:
    shown = summaries if limit <= 0 else summaries[:limit]
    table = Table("episode", "steps", "return", "complete")
    for s in shown:
        ending = "terminated" if s.terminated else "truncated" if s.truncated else ""
        complete = f"yes ({ending})" if s.complete else "no (run stopped)"
        cells = (s.episode_id, str(s.steps), f"{s.total_reward:.4g}", complete)
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    done = sum(s.complete for s in summaries)
    note = f"{len(summaries)} episodes, {done} complete"
    if len(shown) < len(summaries):
        note += f"; showing the first {len(shown)} (--limit 0 shows all)"
    console.print(note)


def print_episode(table: pa.Table, config: EnvConfig, console: Console) -> None:
    env = _build_env(config)
    try:
        base = env.unwrapped
        warehouse = getattr(base, "config", None) if config.id == WAREHOUSE_ID else None
    finally:
        env.close()
    rows = table.to_pylist()
    console.print(_header(rows, config), markup=False, highlight=False)
    console.print(_step_table(rows, reward_component_names(table), warehouse))


def _header(rows: list[dict], config: EnvConfig) -> str:
    first, last = rows[0], rows[-1]
    versions = sorted({row["env_version"] for row in rows})
    policies = sorted({row["policy_version"] for row in rows})
    ending = "terminated" if last["terminated"] else "truncated" if last["truncated"] else None
    total = sum(row["reward"] for row in rows)
    lines = [
        f"episode {first['episode_id']} (actor {first['actor_id']}, env {first['env_index']})",
        f"env {config.id} {json.dumps(config.kwargs, sort_keys=True)}, "
        f"version {', '.join(versions)}",
        f"reset: seed={first['episode_seed']} options={first['reset_options']}"
        if first["step"] == 0
        else "reset: step 0 is not in the log",
        f"{len(rows)} steps logged, "
        + (f"ended {ending} on step {last['step']}" if ending else "run stopped mid-episode"),
        f"return {total:.6g}"
        + (f" (logged episode_return {last['episode_return']:.6g})" if ending else ""),
        f"policy versions {policies[0]}..{policies[-1]}",
    ]
    return "\n".join(lines)


def _step_table(rows: list[dict], components: list[str], warehouse: Any) -> Table:
    table = Table("step", "action", "reward", *(f"reward_{c}" for c in components))
    for name in ("done", "policy", "key state"):
        table.add_column(name)
    for row in rows:
        done = "terminated" if row["terminated"] else "truncated" if row["truncated"] else ""
        cells = (
            str(row["step"]),
            _action_text(row["action"], warehouse is not None),
            _float_text(row["reward"]),
            *(_float_text(row[f"reward_{c}"]) for c in components),
            done,
            str(row["policy_version"]),
            _key_state(row["obs"], warehouse),
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: brackets are not markup
    return table


def _action_text(action: Any, warehouse: bool) -> str:
    if warehouse and isinstance(action, int) and 0 <= action < len(ACTION_NAMES):
        return ACTION_NAMES[action]
    if isinstance(action, list):
        return "[" + ", ".join(f"{v:.3g}" for v in action) + "]"
    return str(action)


def _float_text(value: float) -> str:
    return "0" if value == 0 else str(np.float32(value))


def _key_state(obs: list[float], warehouse: Any) -> str:
    if warehouse is None:
        return f"obs[:{OBS_PREVIEW}] {_preview(obs)}"
    return warehouse_state(np.asarray(obs, dtype=np.float32), warehouse)


def warehouse_state(obs: np.ndarray, config: Any) -> str:
    """Robot cell, item carried and current order, decoded from a Warehouse-v0 observation
    (layout in :mod:`sims.warehouse.observation`; the one-hots are located from the end,
    which the layout's leading fields do not move)."""
    if len(obs) != observation.observation_size(config):
        return f"obs[:{OBS_PREVIEW}] {_preview(obs)} (not the current Warehouse layout)"
    k, view = config.n_items, (2 * config.view_radius + 1) ** 2
    order = len(obs) - (1 + k + view + 1) - (k + 1)  # before orders_left, inventory, ...
    carrying = order - (k + 1)
    row = round(float(obs[0]) * max(config.height - 1, 1))
    col = round(float(obs[1]) * max(config.width - 1, 1))
    held = int(np.argmax(obs[carrying:order]))
    wanted = int(np.argmax(obs[order : order + k + 1]))
    return (
        f"robot ({row},{col}) carrying {held - 1 if held else '-'} "
        f"order {wanted - 1 if wanted else 'done'}"
    )


def _preview(obs: Sequence[float]) -> str:
    values = ", ".join(f"{v:.4g}" for v in obs[:OBS_PREVIEW])
    return f"[{values}{', ...' if len(obs) > OBS_PREVIEW else ''}]"


# -- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.replay",
        description="Print or re-simulate an episode from a run's transition log.",
    )
    parser.add_argument(
        "run_dir", help="the run: its directory or store URI (holds config.json, transitions/)"
    )
    parser.add_argument("--episode", metavar="ID", help='episode id, e.g. "0.0.3.5"')
    parser.add_argument("--verify", action="store_true", help="re-simulate and compare")
    parser.add_argument(
        "--render",
        metavar="FILE",
        type=Path,
        help="re-simulate, check and draw the episode: FILE.gif, FILE.png (a strip), FILE.txt",
    )
    parser.add_argument("--list", action="store_true", help="list the run's episodes")
    parser.add_argument("--limit", type=int, default=LIST_LIMIT, help="episodes --list shows")
    args = parser.parse_args(argv)
    if args.episode is None and not args.list:
        parser.error("give --episode ID or --list")
    if (args.verify or args.render) and args.episode is None:
        parser.error("--verify and --render need --episode ID")
    if args.verify and args.render:
        parser.error("--render checks the episode as it draws it: give --render or --verify")
    return args


def run(args: argparse.Namespace, console: Console) -> int:
    run_dir = open_run(args.run_dir)
    if args.list:
        print_listing(list_episodes(run_dir), args.limit, console)
    if args.episode is None:
        return 0
    if args.verify:
        result = verify_episode(run_dir, args.episode)
        print(result.message(), file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    if args.render:
        result = render_episode(run_dir, args.episode, args.render)
        if not result.ok:
            print(f"{result.message()}; nothing drawn", file=sys.stderr)
            return 1
        print(f"{result.message()}; drew it to {args.render}")
        return 0
    print_episode(load_episode(run_dir, args.episode), load_env_config(run_dir), console)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console.width = NO_WRAP  # piped: rows stay whole lines, for grep and scripts
    try:
        return run(args, console)
    except ReplayError as error:
        print(f"replay: error: {error}", file=sys.stderr)
    except (pa.ArrowException, OSError) as error:
        print(f"replay: error: cannot read the transition log: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
