"""The Ray Serve application: one deployment serving a checkpointed policy over HTTP.

    serve run serving.app:build_app checkpoint=/tmp/run        # or serve_config.yaml

Each replica loads the checkpoint in its constructor, batches concurrent requests into
one forward pass (``serve.batch``), and polls the store's pointer in a background task
to switch to a newly promoted checkpoint; ``reconfigure(user_config)`` pins one.
"""

# No ``from __future__ import annotations`` here: Serve rewrites the route signatures
# (class-based views) and FastAPI then cannot resolve string annotations like "Request".
import asyncio
import contextlib
import logging
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve import Application

from serving import inference
from serving.admission import AdmissionController
from serving.inference import Answer, Query, rows
from serving.metrics import RequestMetricsMiddleware, get_metrics
from serving.schema import ActRequestSchema, ApiError
from serving.settings import PolicySettings, ServeArgs, UserConfig, check_rows
from serving.source import LoadedPolicy, PolicySource, load_policy, parse_source
from serving.web import check_bearer, install_error_handlers, read_json_body, read_token

logger = logging.getLogger(__name__)

app = FastAPI(title="turnwise policy server", docs_url=None, redoc_url=None, openapi_url=None)
install_error_handlers(app)
app.add_middleware(RequestMetricsMiddleware)


# Above the deployment class: ``serve.ingress`` pickles the app's routes, with the
# module globals they use, when it decorates the class.
def reply(answer: Answer, policy: LoadedPolicy, batched: bool) -> dict[str, Any]:
    """The body of a ``/v1/act`` answer: the action(s), and the weights that chose them."""
    content: dict[str, Any] = {
        "policy_version": policy.policy_version,
        "env_version": policy.env_version,
        "checkpoint": policy.name,
    }
    if batched:
        content["actions"] = answer.actions.tolist()
    else:
        content["action"] = answer.actions[0].tolist()
    if answer.probs is not None:
        content["probs"] = answer.probs.tolist() if batched else answer.probs[0].tolist()
    return content


class SpaceMismatch(ValueError):
    """A new checkpoint whose spaces differ from the served one's: never switched to."""


@serve.deployment
@serve.ingress(app)
class PolicyServer:
    """Serves one policy at a time; see docs/serving.md for the API."""

    async def __init__(self, args: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.args = ServeArgs.model_validate(args)
        self.metrics = get_metrics()
        self._token = read_token(self.args.token_env)
        self._initial = parse_source(self.args.checkpoint, self.args.pointer)
        self._source: PolicySource = self._initial
        self._settings = UserConfig(**self._defaults())
        self._policy: LoadedPolicy | None = None
        self._schema: ActRequestSchema | None = None
        self._reload_error: str | None = None
        self._lock = asyncio.Lock()
        self._admission = AdmissionController(self.args.max_queue_wait_s)
        self._apply_batch_settings()
        await self._refresh(required=self._source.checkpoint is not None)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    # -- policy lifecycle -------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply ``user_config`` (see ``serving.settings.UserConfig``) without a restart."""
        settings = UserConfig.model_validate({**self._defaults(), **(user_config or {})})
        check_rows(self.args.max_request_rows, settings.max_batch_size)
        self._settings = settings
        self._apply_batch_settings()
        target = settings.checkpoint or self._initial.checkpoint
        source = self._initial.with_target(target, settings.pointer)
        if source != self._source:
            await self._refresh(source, required=source.checkpoint is not None)

    def _defaults(self) -> dict[str, Any]:
        """The builder arguments' policy settings: what ``user_config`` starts from."""
        return self.args.model_dump(include=set(PolicySettings.model_fields))

    def _apply_batch_settings(self) -> None:
        self._batched.set_max_batch_size(self._settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self._settings.batch_wait_timeout_s)

    async def _watch(self) -> None:
        while True:
            interval = self._settings.watch_interval_s
            await asyncio.sleep(interval or 1.0)
            if interval and self._source.checkpoint is None:
                await self._refresh()

    async def _refresh(self, source: PolicySource | None = None, required: bool = False) -> None:
        """Serve ``source``'s (default: the current source's) checkpoint if it is another
        one than the served; ``source`` becomes the current source once that worked.

        Failures are logged and leave the current policy and source in place; with
        ``required`` (a pinned checkpoint) they raise instead.
        """
        async with self._lock:
            source = source or self._source
            try:
                name = await asyncio.to_thread(source.current_name)
                if name is None and required:
                    raise FileNotFoundError(f"no checkpoint in {source.store_uri}")
                if name is not None and (self._policy is None or name != self._policy.name):
                    self._install(await asyncio.to_thread(load_policy, source, name))
                self._source = source
            except Exception as error:
                self._note_failure(source, error)
                if required:
                    raise

    def _install(self, policy: LoadedPolicy) -> None:
        if self._policy is not None and not policy.same_spaces(self._policy):
            raise SpaceMismatch(f"{policy.uri} has other observation/action spaces than the served")
        if self._schema is None:
            space = policy.observation_space
            head = policy.model.head
            self._schema = ActRequestSchema(
                space,
                self.args.max_request_rows,
                self.args.check_bounds,
                mask_width=head.size if head.maskable else None,
            )
        previous, self._policy = self._policy, policy  # in-flight batches keep their snapshot
        self._reload_error = None
        self.metrics.count_reload("loaded")
        self.metrics.set_policy_version(policy.policy_version)
        logger.info(
            "serving %s (policy version %d), was %s",
            policy.name,
            policy.policy_version,
            previous.name if previous else None,
        )

    def _note_failure(self, source: PolicySource, error: Exception) -> None:
        self.metrics.count_reload("refused" if isinstance(error, SpaceMismatch) else "failed")
        message = f"{type(error).__name__}: {error}"
        if message != self._reload_error:  # log once per distinct failure, not every poll
            logger.warning("policy not (re)loaded from %s: %s", source.store_uri, message)
        self._reload_error = message

    async def check_health(self) -> None:
        """Liveness for Serve: the watcher must be running. Readiness is ``/healthz``."""
        if self._watcher.done():
            raise RuntimeError("the policy watcher stopped")

    async def __del__(self) -> None:
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher

    def _require_policy(self) -> LoadedPolicy:
        if self._policy is None:
            raise ApiError(503, "no_policy", "no policy loaded yet", headers={"Retry-After": "5"})
        return self._policy

    # -- batching -----------------------------------------------------------------------
    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.0, batch_size_fn=rows)
    async def _batched(self, queries: list[Query]) -> list[tuple[Answer, LoadedPolicy]]:
        policy = self._require_policy()  # one snapshot per batch: reloads swap between batches
        answers, seconds = inference.act(policy.model, queries)
        self.metrics.observe_inference(seconds, rows(queries))
        return [(answer, policy) for answer in answers]

    # -- routes -------------------------------------------------------------------------
    @app.post("/v1/act")
    async def act(self, request: Request) -> JSONResponse:
        check_bearer(request, self._token)
        self._require_policy()
        with self._admission.admit(request.receive) as receive:  # before the body: cheap
            watched = Request(request.scope, receive)
            body = await read_json_body(watched, self.args.max_body_bytes, self.args.body_timeout_s)
            assert self._schema is not None
            obs, mask, batched, deterministic, return_probs = self._schema.parse(body)
            answer, policy = await self._batched(Query(obs, deterministic, return_probs, mask))
        return JSONResponse(reply(answer, policy, batched))

    @app.get("/v1/policy")
    async def policy(self, request: Request) -> JSONResponse:
        check_bearer(request, self._token)
        policy = self._require_policy()
        limits = {
            "max_request_rows": self.args.max_request_rows,
            "max_body_bytes": self.args.max_body_bytes,
            "body_timeout_s": self.args.body_timeout_s,
            "max_queue_wait_s": self.args.max_queue_wait_s,
            "check_bounds": self.args.check_bounds,
        }
        settings = self._settings.model_dump()
        return JSONResponse(
            {
                **policy.describe(),
                "source": self._source.describe(),
                "settings": settings,
                "limits": limits,
                "reload_error": self._reload_error,
            }
        )

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        policy = self._require_policy()
        return JSONResponse({"status": "ok", "policy_version": policy.policy_version})

    @app.get("/metrics")
    async def metrics_route(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def build_app(args: dict[str, Any] | ServeArgs) -> Application:
    """The application for ``serve run``/``serve deploy``: ``args`` as in ``ServeArgs``."""
    parsed = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    return PolicyServer.options(**parsed.deployment_options()).bind(parsed.model_dump())
