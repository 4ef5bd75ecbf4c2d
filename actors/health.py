"""Crashes of a Ray actor, told apart from the calls that fail while Ray restarts it.

A crashed actor (``max_restarts``) fails its call in flight, and then every call
made while Ray restarts it: ``ActorUnavailableError`` about every 1-2 s, for as long
as the restart takes (30 s and more on a loaded node). Counting those calls counts
the restart's length, not the crashes. :class:`ActorHealth` counts an outage once:
the first failed call starts it, the first call that succeeds ends it.

"Keeps failing" is judged on outages, not calls: more than ``max_crashes``
outages within ``window_s``, an outage longer than ``max_down_s``, a call made
during an outage that finds the actor dead (``ActorDiedError``: Ray will not
restart it), or more than ``max_errors`` calls in a row that raise in a live actor.
"""

from __future__ import annotations

import time
from collections import deque

from ray.exceptions import ActorDiedError, RayTaskError

CRASH_WINDOW_S = 600.0  # crashes are counted over this sliding window
MAX_CRASHES = 5  # more crashes than this within the window: the actor keeps failing
MAX_DOWN_S = 300.0  # an actor not back after this long (Ray restarting it) has failed
MAX_ERRORS = 20  # calls in a row that raise inside a live actor


class ActorFailing(RuntimeError):
    """An actor that keeps failing, or that Ray will not restart."""


class ActorHealth:
    """One actor's outages; ``now`` and ``submitted`` are ``time.monotonic()`` values."""

    def __init__(
        self,
        name: str,
        window_s: float = CRASH_WINDOW_S,
        max_crashes: int = MAX_CRASHES,
        max_down_s: float = MAX_DOWN_S,
        max_errors: int = MAX_ERRORS,
    ) -> None:
        self.name = name
        self.window_s, self.max_crashes = window_s, max_crashes
        self.max_down_s, self.max_errors = max_down_s, max_errors
        self.crashes: deque[float] = deque()  # outage starts within the window
        self.crashes_total = 0
        self.down_since: float | None = None
        self.errors = 0  # consecutive calls that raised inside the actor

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, error: Exception, submitted: float, now: float | None = None) -> bool:
        """Record a failed call made at ``submitted``; True when it starts an outage
        (a crash, to be counted), False for a call failing during one."""
        now = time.monotonic() if now is None else now
        if self.gone(error, submitted):
            raise ActorFailing(f"{self.name} is dead and Ray will not restart it: {error}")
        if isinstance(error, RayTaskError):
            self.errors += 1
        if self.down:
            return False
        self.down_since = now
        self.crashes.append(now)
        self.crashes_total += 1
        return True

    def gone(self, error: Exception, submitted: float) -> bool:
        """A call made during an outage that finds the actor dead: Ray gave up on it
        (restarts used up, or its constructor raised)."""
        return (
            isinstance(error, ActorDiedError)
            and self.down_since is not None
            and submitted >= self.down_since
        )

    def succeeded(self) -> None:
        self.down_since = None
        self.errors = 0

    def check(self, now: float | None = None) -> None:
        """Raise :class:`ActorFailing` when the actor keeps failing."""
        now = time.monotonic() if now is None else now
        while self.crashes and now - self.crashes[0] > self.window_s:
            self.crashes.popleft()
        if len(self.crashes) > self.max_crashes:
            raise ActorFailing(
                f"{self.name} keeps failing: {len(self.crashes)} crashes in {self.window_s:.0f} s"
            )
        if self.down_since is not None and now - self.down_since > self.max_down_s:
            raise ActorFailing(
                f"{self.name} keeps failing: no call succeeded for {self.max_down_s:.0f} s"
            )
        if self.errors > self.max_errors:
            raise ActorFailing(f"{self.name} keeps failing: {self.errors} calls in a row raised")
