"""Admission control: shed a request at once when it would wait too long in the replica.

Each replica counts the requests it is working on (``in_flight``) and keeps a moving
estimate of its service interval: the mean time between two consecutive completions
while requests queue (service time / concurrency, i.e. 1 / throughput at capacity). A
gap counts only if ``BACKLOG`` requests or more were in flight all along it: at light
load the gaps between completions follow the arrivals, and a lone request's latency
would overstate the cost of one more request to a replica that batches. The estimate
starts at 0: a new replica admits everything until it has been seen busy. A request
arriving at the replica is admitted while

    expected wait = in_flight x service interval <= max_wait_s

and otherwise answered ``503 {"error": "overloaded", ...}`` with ``Retry-After`` before
its body is read, so a refusal costs little and the queue stays about ``max_wait_s``
long whatever the offered load.

A request counts from its arrival, while the replica fetches its body from Serve's
proxy (under load, that is where it waits), until it is answered; but not while its
body is stalled on the client: part of it received and the rest still missing, or
none of it after ``STALLED_AFTER_S``. So slow clients cannot keep the controller
shedding valid requests (their bodies have a deadline of their own, ``body_timeout_s``).

>>> import asyncio
>>> clock = iter([0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]).__next__  # its times
>>> admission = AdmissionController(max_wait_s=0.3, smoothing=1.0, clock=clock)
>>> async def body() -> dict:
...     return {"type": "http.request", "body": b"{}", "more_body": False}
>>> async def three() -> None:  # three at once, answered at 0.25, 0.5 and 0.75
...     with admission.admit(body) as a, admission.admit(body) as b, admission.admit(body) as c:
...         await a(), await b(), await c()
>>> asyncio.run(three())  # the gap from 0.25 to 0.5 had 2 in flight: a service interval
>>> admission.interval_s
0.25
>>> with admission.admit(body), admission.admit(body):  # the second expects 1 x 0.25 s
...     admission.admit(body).__enter__()  # a third would wait 2 x 0.25 s
Traceback (most recent call last):
serving.schema.ApiError: server overloaded: expected wait 0.50 s is over 0.3 s
>>> with admission.admit(body):  # at 1.0, no body byte yet: counted until 3.0
...     admission.in_flight(now=2.9), admission.in_flight(now=3.1)
(1, 0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from starlette.types import Message, Receive

from serving.schema import ApiError

SMOOTHING = 0.05  # weight of the newest interval in the moving estimate (~20 completions)
STALLED_AFTER_S = 2.0  # no body byte by then: the request waits on its client, not on us
BACKLOG = 2  # in flight all along a gap between completions, for it to measure capacity


class AdmissionController:
    """Admits requests while their expected wait is at most ``max_wait_s`` (0: always)."""

    def __init__(
        self,
        max_wait_s: float,
        smoothing: float = SMOOTHING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_wait_s, self.smoothing, self._clock = max_wait_s, smoothing, clock
        self.working = 0  # admitted, body read, not answered yet
        self._waiting: dict[object, float] = {}  # admitted, no body byte yet: since when
        self.interval_s = 0.0  # moving mean time between completions while busy
        self._last: float | None = None  # the last completion, if it left a backlog

    def in_flight(self, now: float) -> int:
        """Requests with their body read, or waiting for its first byte for a short while."""
        young, since = 0, now - STALLED_AFTER_S
        for started in reversed(self._waiting.values()):  # oldest first: count from the end
            if started < since:
                break
            young += 1
        return self.working + young

    def expected_wait_s(self, now: float) -> float:
        """How long a request admitted at ``now`` would wait behind those in flight."""
        return self.in_flight(now) * self.interval_s

    @contextmanager
    def admit(self, receive: Receive) -> Iterator[Receive]:
        """Hold a place for one request, or raise a 503 ``ApiError`` if it would wait too
        long; yields the request's ``receive``, watched to follow its body."""
        now, key, read = self._clock(), object(), False
        wait = self.expected_wait_s(now)
        if self.max_wait_s and wait > self.max_wait_s:
            raise overloaded(wait, self.max_wait_s)
        self._waiting[key] = now

        async def watched() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request" and not read:
                self._waiting.pop(key, None)  # part of the body: not counted until all of it
                if not message.get("more_body", False):
                    read = True
                    self.working += 1
            return message

        try:
            yield watched
        finally:
            self._waiting.pop(key, None)
            if read:  # a body never read is no work done
                self.working -= 1
                self._completed()

    def _completed(self) -> None:
        now, last = self._clock(), self._last
        if last is not None:
            self.interval_s += self.smoothing * (now - last - self.interval_s)
        self._last = now if self.in_flight(now) >= BACKLOG else None


def overloaded(wait_s: float, max_wait_s: float) -> ApiError:
    """The 503 for a shed request; ``Retry-After`` is the expected wait, at least 1 s.
    The connection is closed: the body is not read (a stalled one would hold it)."""
    return ApiError(
        503,
        "overloaded",
        f"server overloaded: expected wait {wait_s:.2f} s is over {max_wait_s:g} s",
        expected="a retry after the Retry-After header's seconds",
        headers={"Retry-After": str(max(1, math.ceil(wait_s))), "Connection": "close"},
    )
