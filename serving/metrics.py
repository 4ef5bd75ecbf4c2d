"""Serving metrics: a Prometheus registry per replica (``GET /metrics``) mirrored to Ray.

Every metric is recorded twice. The replica's own ``prometheus_client`` registry is
rendered by ``GET /metrics`` under the names below: exact, immediate, but one replica's
view (the proxy picks the replica). Inside a Serve replica the same values also go
through ``ray.serve.metrics`` to Ray's metrics export port on every node, which Ray
prefixes with ``ray_`` and tags with deployment, replica and application: scrape those
when there is more than one replica.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

ROUTES = ("/v1/act", "/v1/policy", "/healthz", "/metrics", "/v1/sessions")
# session paths carry an id; their label is the pattern
SESSION_ROUTES = {"act": "/v1/sessions/{id}/act", "": "/v1/sessions/{id}"}
INFERENCE_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25)
REQUEST_BUCKETS = (5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

# name -> (kind, description, label names, buckets)
SPECS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "turnwise_serve_inference_latency_seconds": (
        "histogram", "Model time of one batched forward pass.", (), INFERENCE_BUCKETS),
    "turnwise_serve_request_latency_seconds": (
        "histogram", "Whole request time in the replica, by route.", ("route",), REQUEST_BUCKETS),
    "turnwise_serve_batch_size": (
        "histogram", "Observation rows per forward pass.", (), BATCH_BUCKETS),
    "turnwise_serve_requests_total": (
        "counter", "Requests answered, by route and status class.",
        ("route", "status_class"), ()),
    "turnwise_serve_errors_total": (
        "counter", "Requests answered 4xx or 5xx, by route and status class.",
        ("route", "status_class"), ()),
    "turnwise_serve_reloads_total": (
        "counter", "Policy loads by result (loaded, refused, failed).", ("result",), ()),
    "turnwise_serve_policy_version": (
        "gauge", "Policy version being served (-1: none).", (), ()),
}  # fmt: skip


def _prometheus(registry: CollectorRegistry) -> dict[str, Any]:
    made: dict[str, Any] = {}
    for name, (kind, doc, labels, buckets) in SPECS.items():
        if kind == "histogram":
            made[name] = Histogram(name, doc, labels, registry=registry, buckets=buckets)
        elif kind == "counter":  # prometheus_client appends _total itself
            made[name] = Counter(name.removesuffix("_total"), doc, labels, registry=registry)
        else:
            made[name] = Gauge(name, doc, labels, registry=registry)
    return made


def _ray_mirror() -> dict[str, Any] | None:
    """The same metrics through ``ray.serve.metrics``, only inside a Serve replica."""
    try:
        from ray import serve
        from ray.serve import metrics as serve_metrics

        serve.get_replica_context()
    except Exception:
        return None
    made: dict[str, Any] = {}
    for name, (kind, doc, labels, buckets) in SPECS.items():
        if kind == "histogram":
            made[name] = serve_metrics.Histogram(name, doc, list(buckets), tag_keys=labels)
        elif kind == "counter":
            made[name] = serve_metrics.Counter(name, doc, tag_keys=labels)
        else:
            made[name] = serve_metrics.Gauge(name, doc, tag_keys=labels)
    return made


class ServeMetrics:
    """Recording helpers over both sinks; ``render()`` is the ``/metrics`` body."""

    def __init__(self, mirror_to_ray: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._prom = _prometheus(self.registry)
        self._ray = _ray_mirror() if mirror_to_ray else None
        self.set_policy_version(-1)

    def _record(self, name: str, value: float, **labels: str) -> None:
        metric = self._prom[name]
        target = metric.labels(**labels) if labels else metric
        kind = SPECS[name][0]
        if kind == "histogram":
            target.observe(value)
        elif kind == "counter":
            target.inc(value)
        else:
            target.set(value)
        if self._ray is not None:
            ray_metric, tags = self._ray[name], labels or None
            if kind == "histogram":
                ray_metric.observe(value, tags=tags)
            elif kind == "counter":
                ray_metric.inc(value, tags=tags)
            else:
                ray_metric.set(value, tags=tags)

    def observe_inference(self, seconds: float, rows: int) -> None:
        self._record("turnwise_serve_inference_latency_seconds", seconds)
        self._record("turnwise_serve_batch_size", rows)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        status_class = f"{status // 100}xx"
        self._record("turnwise_serve_request_latency_seconds", seconds, route=route)
        self._record("turnwise_serve_requests_total", 1, route=route, status_class=status_class)
        if status >= 400:
            self._record("turnwise_serve_errors_total", 1, route=route, status_class=status_class)

    def count_reload(self, result: str) -> None:
        self._record("turnwise_serve_reloads_total", 1, result=result)

    def set_policy_version(self, version: int) -> None:
        self._record("turnwise_serve_policy_version", version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_metrics: ServeMetrics | None = None


def get_metrics() -> ServeMetrics:
    """This process's metrics (one Serve replica per process)."""
    global _metrics
    if _metrics is None:
        _metrics = ServeMetrics()
    return _metrics


def route_label(scope: dict[str, Any]) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    if path in ROUTES:
        return path
    parts = path.split("/")  # "", "v1", "sessions", id[, "act"]
    if parts[1:3] == ["v1", "sessions"] and len(parts) in (4, 5):
        return SESSION_ROUTES.get(parts[4] if len(parts) == 5 else "", "other")
    return "other"


class RequestMetricsMiddleware:
    """Pure ASGI middleware: times every HTTP request and counts it by status class."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            try:
                get_metrics().observe_request(
                    route_label(scope), status, time.perf_counter() - start
                )
            except Exception:  # metrics must never fail a request
                logger.exception("recording request metrics failed")
