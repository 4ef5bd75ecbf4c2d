"""Sessions: a multi-turn client's recurrent policy state, kept between its requests.

One store holds every session of the app, so any ``PolicyServer`` replica can answer any
turn: :class:`SessionStore` is the plain logic (tested in-process), and
:class:`SessionStoreServer` the app's single-replica Serve deployment around it (Serve
starts, restarts and deletes it with the app). A turn is two calls: :meth:`get` the
state, compute the action, :meth:`commit` the next state, which succeeds only if the
session is still at the turn that was read (so two requests for one turn cannot both
advance it).

Bounds: at most ``max_sessions`` open; a new session beyond that is refused (never an
open one evicted: a client mid-episode keeps its state), after expired ones are purged.
A session expires ``idle_ttl_s`` after its last turn, or ``max_age_s`` after it started,
whichever comes first. Ended and expired sessions are remembered (up to
``max_sessions`` of them) so their next request is told so (410) rather than "unknown"
(404).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from ray import serve

Gone = Literal["ended", "expired_idle", "expired_age"]


@dataclass
class Session:
    policy: str  # the checkpoint that started it (or computed its last turn)
    state_size: int
    created: float
    used: float  # last start or committed turn
    turn: int = 0  # turns answered so far
    state: np.ndarray | None = None  # (state_size,) float32; None: the zero state


class SessionStore:
    """Bounded, expiring sessions; every method is short and does not block, so one
    event loop serves them atomically."""

    def __init__(
        self,
        max_sessions: int = 10_000,
        idle_ttl_s: float = 300.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions, self.idle_ttl_s, self.max_age_s = max_sessions, idle_ttl_s, max_age_s
        self._clock = clock
        self._open: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._gone: OrderedDict[str, Gone] = OrderedDict()  # ended or expired, oldest first
        self.counts = {"started": 0, "refused": 0, "ended": 0, "expired": 0, "conflicts": 0}
        self._swept = -math.inf  # when every open session was last checked for expiry

    def start(self, policy: str, state_size: int) -> dict[str, Any]:
        """A new session at turn 0 (the zero state), or ``{"error": "full", ...}``."""
        now = self._clock()
        self._purge(now, everything=len(self._open) >= self.max_sessions)
        if len(self._open) >= self.max_sessions:
            self.counts["refused"] += 1
            return {"error": "full", "retry_after_s": self._next_expiry(now)}
        session_id = secrets.token_urlsafe(18)
        self._open[session_id] = Session(policy, state_size, created=now, used=now)
        self.counts["started"] += 1
        return {"session_id": session_id, "turn": 0}

    def get(self, session_id: str) -> dict[str, Any]:
        """The session's ``turn``, ``state`` (None: zeros), ``state_size`` and ``policy``,
        or ``{"error": "unknown" | "ended" | "expired_idle" | "expired_age"}``."""
        session = self._live(session_id)
        if isinstance(session, dict):
            return session
        return {
            "turn": session.turn,
            "state": session.state,
            "state_size": session.state_size,
            "policy": session.policy,
        }

    def commit(self, session_id: str, turn: int, state: np.ndarray, policy: str) -> dict[str, Any]:
        """Store the state after ``turn``, if the session is still at ``turn``; else
        ``{"error": "conflict", "turn": its turn}`` (or gone, as in :meth:`get`)."""
        session = self._live(session_id)
        if isinstance(session, dict):
            return session
        if session.turn != turn:
            self.counts["conflicts"] += 1
            return {"error": "conflict", "turn": session.turn}
        session.state = np.asarray(state, dtype=np.float32).reshape(-1)
        session.state_size, session.policy = session.state.size, policy
        session.turn, session.used = turn + 1, self._clock()
        self._open.move_to_end(session_id)
        return {"turn": session.turn}

    def end(self, session_id: str) -> dict[str, Any]:
        """Close the session: ``{"turns": n}``, or an error as in :meth:`get`."""
        session = self._live(session_id)
        if isinstance(session, dict):
            return session
        del self._open[session_id]
        self._remember(session_id, "ended")
        self.counts["ended"] += 1
        return {"turns": session.turn}

    def stats(self) -> dict[str, Any]:
        self._purge(self._clock(), everything=True)
        return {
            "open": len(self._open),
            "max_sessions": self.max_sessions,
            "idle_ttl_s": self.idle_ttl_s,
            "max_age_s": self.max_age_s,
            **{f"{name}_total": count for name, count in self.counts.items()},
        }

    # -- expiry -------------------------------------------------------------------------
    def _live(self, session_id: str) -> Session | dict[str, Any]:
        session = self._open.get(session_id)
        if session is None:
            return {"error": self._gone.get(session_id, "unknown")}
        reason = self._expired(session, self._clock())
        if reason is not None:
            self._expire(session_id, reason)
            return {"error": reason}
        return session

    def _expired(self, session: Session, now: float) -> Gone | None:
        if now - session.created >= self.max_age_s:
            return "expired_age"
        if now - session.used >= self.idle_ttl_s:
            return "expired_idle"
        return None

    def _expire(self, session_id: str, reason: Gone) -> None:
        del self._open[session_id]
        self._remember(session_id, reason)
        self.counts["expired"] += 1

    def _purge(self, now: float, everything: bool = False) -> None:
        """Drop expired sessions: the idle ones at the front of the LRU order and, with
        ``everything`` (the bound is reached) and at most once a second, every one, so
        sessions past ``max_age_s`` but still busy go too."""
        if everything and now - self._swept >= 1.0:
            self._swept = now
            candidates = list(self._open.items())
        else:
            candidates = []
            for session_id, session in self._open.items():
                if now - session.used < self.idle_ttl_s:
                    break
                candidates.append((session_id, session))
        for session_id, session in candidates:
            reason = self._expired(session, now)
            if reason is not None:
                self._expire(session_id, reason)

    def _next_expiry(self, now: float) -> int:
        """Whole seconds until the first open session expires (at least 1)."""
        soonest = min(
            min(s.used + self.idle_ttl_s, s.created + self.max_age_s) for s in self._open.values()
        )
        return max(1, math.ceil(soonest - now))

    def _remember(self, session_id: str, reason: Gone) -> None:
        self._gone[session_id] = reason
        while len(self._gone) > self.max_sessions:
            self._gone.popitem(last=False)


# Serve options of the store: exactly one replica (it is the single source of truth), no
# CPU reserved (its calls are microseconds of work), many calls in flight.
STORE_DEPLOYMENT: dict[str, Any] = {
    "name": "SessionStore",
    "num_replicas": 1,
    "max_ongoing_requests": 4096,
    "ray_actor_options": {"num_cpus": 0},
    "health_check_period_s": 5.0,
}


@serve.deployment
class SessionStoreServer:
    """The app's session store as a Serve deployment; async methods around the plain
    :class:`SessionStore`, so the replica's event loop runs one call at a time."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.store = SessionStore(**settings)

    async def start(self, policy: str, state_size: int) -> dict[str, Any]:
        return self.store.start(policy, state_size)

    async def get(self, session_id: str) -> dict[str, Any]:
        return self.store.get(session_id)

    async def commit(
        self, session_id: str, turn: int, state: np.ndarray, policy: str
    ) -> dict[str, Any]:
        return self.store.commit(session_id, turn, state, policy)

    async def end(self, session_id: str) -> dict[str, Any]:
        return self.store.end(session_id)

    async def stats(self) -> dict[str, Any]:
        return self.store.stats()
