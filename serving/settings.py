"""The server's options: builder arguments (``serving.app:build_app``) and ``user_config``.

Unknown keys are errors, so a misspelled option fails the deploy instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Serve deployment options the server starts from; ``deployment`` in the builder
# arguments (or the ``deployments:`` section of a Serve config file) overrides them.
# Serve hands a request to a replica before its body is read, so a replica's Serve slots
# are many and cheap (a request still reading its body holds one); the work admitted is
# bounded by time in the replica instead (``max_queue_wait_s``, serving/admission.py).
DEFAULT_DEPLOYMENT: dict[str, Any] = {
    "num_replicas": 1,
    "max_ongoing_requests": 512,  # per replica; >= max_batch_size keeps batches full
    "max_queued_requests": 64,  # per caller (proxy), once every replica holds 512: 503 at once
    "backpressure_config": {"retry_after_s": 1},  # Serve's own 503s carry Retry-After: 1
    "ray_actor_options": {"num_cpus": 1},
    "health_check_period_s": 5.0,
    "graceful_shutdown_timeout_s": 10.0,
    "max_constructor_retry_count": 3,  # a checkpoint that does not load fails the deploy soon
}


# Serve's HTTP proxy (``serve.start(http_options=...)``, ``http_options`` of a Serve config
# file) as ``python -m serving`` starts it: any request still unanswered after
# ``request_timeout_s`` is cancelled with a plain-text 408, a last resort behind the
# replica's own ``body_timeout_s`` and ``max_queue_wait_s``.
HTTP_OPTIONS: dict[str, Any] = {"request_timeout_s": 30}

# Ray Serve's throughput-optimized mode, as ``python -m serving`` (and the RayService's
# pods) run Serve: proxy-to-replica calls over gRPC, the router and user code on the
# replica's own event loop, request-path logs buffered and Serve's logs in files only
# (not also on stderr). Without its direct ingress, which would force the proxy onto the
# head node only, open a second HTTP port on every ingress replica (past the proxy's
# ``max_queued_requests``) and hold every ingress replica for at least 30 s on shutdown.
# Read by every Serve process when ray.serve is imported: set before Ray starts
# (``serve_environment``). BENCHMARKS.md ("Serving: Ray Serve's modes") has the figures.
SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def serve_environment() -> dict[str, str]:
    """Put :data:`SERVE_ENV` in this process's environment where not set already (the
    local Ray it starts inherits it) and return the values, for ``ray.init``'s
    ``runtime_env={"env_vars": ...}``. Call before ``ray.serve`` is imported."""
    import os

    for name, value in SERVE_ENV.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in SERVE_ENV}


class PolicySettings(BaseModel):
    """What can change on running replicas, through ``reconfigure(user_config)``."""

    model_config = ConfigDict(extra="forbid")

    pointer: Literal["best", "latest"] = "best"  # followed unless a checkpoint is pinned
    watch_interval_s: float = Field(10.0, ge=0)  # poll the pointer this often; 0: never
    max_batch_size: int = Field(128, ge=1, le=65_536)  # observation rows per model forward
    # 0: a batch is what queued while the previous one ran; > 0: wait this long to fill it
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)


class UserConfig(PolicySettings):
    """``user_config`` of the deployment: the settings above, and a checkpoint to pin."""

    checkpoint: str | None = None  # a checkpoint name in the store, or best/latest; None: pointer


class SessionSettings(BaseModel):
    """The session store's bounds (``POST /v1/sessions``, serving/sessions.py)."""

    model_config = ConfigDict(extra="forbid")

    max_sessions: int = Field(10_000, ge=1, le=10_000_000)  # open at once; more: 503
    idle_ttl_s: float = Field(300.0, gt=0)  # a session expires this long after its last turn
    max_age_s: float = Field(3600.0, gt=0)  # ... or this long after it started


class ServeArgs(PolicySettings):
    """Arguments of :func:`serving.app.build_app` (the ``args:`` of a Serve config file)."""

    checkpoint: str  # checkpoint dir, run dir, store path or s3:// URI (see serving.source)
    max_request_rows: int = Field(128, ge=1)  # observations in one request
    max_body_bytes: int = Field(1 << 20, ge=1024)  # larger request bodies get 413
    body_timeout_s: float = Field(10.0, gt=0, le=600)  # a body not read by then gets 408
    # shed (503 + Retry-After) a request expected to wait longer in the replica; 0: never
    max_queue_wait_s: float = Field(0.5, ge=0, le=60)
    check_bounds: bool = True  # refuse observations outside the space's low/high
    token_env: str | None = None  # env var holding the bearer token; None: no auth
    deployment: dict[str, Any] = Field(default_factory=dict)  # Serve deployment options
    sessions: SessionSettings = Field(default_factory=SessionSettings)  # stateful turns

    @model_validator(mode="after")
    def _rows_fit_a_batch(self) -> ServeArgs:
        check_rows(self.max_request_rows, self.max_batch_size)
        return self

    def deployment_options(self) -> dict[str, Any]:
        options = {**DEFAULT_DEPLOYMENT, **self.deployment}
        if options.get("autoscaling_config"):
            options.pop("num_replicas", None)
        return options


def check_rows(max_request_rows: int, max_batch_size: int) -> None:
    """A request's rows are never split between batches, so they must fit in one."""
    if max_request_rows > max_batch_size:
        raise ValueError(
            f"max_request_rows ({max_request_rows}) must not exceed "
            f"max_batch_size ({max_batch_size})"
        )
