"""The Ray Serve application: one deployment serving a checkpointed policy over HTTP.

    serve run serving.app:build_app checkpoint=/tmp/run        # or serve_config.yaml

Each replica loads the checkpoint in its constructor, batches concurrent requests into
one forward pass (``serve.batch``), and polls the store's pointer in a background task
to switch to a newly promoted checkpoint; ``reconfigure(user_config)`` pins one.
Sessions (``/v1/sessions``) keep a recurrent policy's state between a client's turns in
the app's one ``SessionStore`` deployment (serving/sessions.py), so any replica answers
any turn.
"""

# No ``from __future__ import annotations`` here: Serve rewrites the route signatures
# (class-based views) and FastAPI then cannot resolve string annotations like "Request".
import asyncio
import contextlib
import logging
import re
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from serving import inference
from serving.admission import AdmissionController
from serving.inference import Answer, Query, Turn, TurnAnswer, rows
from serving.metrics import RequestMetricsMiddleware, get_metrics
from serving.schema import ActRequestSchema, ApiError
from serving.sessions import STORE_DEPLOYMENT, SessionStoreServer
from serving.settings import PolicySettings, ServeArgs, SessionSettings, UserConfig, check_rows
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


def turn_reply(answer: TurnAnswer, policy: LoadedPolicy, turn: int) -> dict[str, Any]:
    """The body of a session turn's answer: the action, the turn it answers, the weights."""
    return {
        "policy_version": policy.policy_version,
        "env_version": policy.env_version,
        "checkpoint": policy.name,
        "turn": turn,
        "action": answer.action[0].tolist(),
    }


STORE_TIMEOUT_S = 5.0  # a session store call not answered by then: 503

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what start() makes: 24 URL-safe characters
NEW_SESSION = "a new session for a new episode: POST /v1/sessions"


def valid_session_id(session_id: str) -> bool:
    return SESSION_ID.fullmatch(session_id) is not None


def gone_error(reason: str, limits: SessionSettings) -> ApiError:
    """The 4xx for a session that is ``unknown`` (404), ended or expired (410), under the
    store's bounds ``limits``. The id is not echoed."""
    if reason == "ended":
        return ApiError(410, "session_ended", "this session was ended", NEW_SESSION)
    if reason == "expired_idle":
        detail = f"this session expired: no turn for {limits.idle_ttl_s:g} s (idle_ttl_s)"
        return ApiError(410, "session_expired", detail, NEW_SESSION)
    if reason == "expired_age":
        detail = f"this session expired: it started over {limits.max_age_s:g} s ago (max_age_s)"
        return ApiError(410, "session_expired", detail, NEW_SESSION)
    detail = "no such session: never started here, or ended or expired long ago"
    return ApiError(404, "unknown_session", detail, NEW_SESSION)


def turn_conflict(asked: int, turn: int) -> ApiError:
    """409: a request for a turn the session is not at (a retry, or two at once)."""
    return ApiError(
        409,
        "turn_conflict",
        f"this request is for turn {asked}, but the session has answered {turn} turns "
        "(a repeated or concurrent request): its action was not recorded",
        expected=f'the next turn, "turn": {turn}',
    )


class SpaceMismatch(ValueError):
    """A new checkpoint whose spaces differ from the served one's: never switched to."""


@serve.deployment
@serve.ingress(app)
class PolicyServer:
    """Serves one policy at a time; see docs/serving.md for the API."""

    async def __init__(
        self, args: dict[str, Any], sessions: DeploymentHandle | None = None
    ) -> None:
        torch.set_num_threads(1)
        self.args = ServeArgs.model_validate(args)
        self._sessions = sessions  # the app's SessionStore
        self.metrics = get_metrics()
        self._token = read_token(self.args.token_env)
        self._initial = parse_source(self.args.checkpoint, self.args.pointer)
        self._source: PolicySource = self._initial
        self._settings = UserConfig(**self._defaults())
        self._policy: LoadedPolicy | None = None
        self._schema: ActRequestSchema | None = None
        self._turn_schema: ActRequestSchema | None = None
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
        for batched in (self._batched, self._batched_turns):
            batched.set_max_batch_size(self._settings.max_batch_size)
            batched.set_batch_wait_timeout_s(self._settings.batch_wait_timeout_s)

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
            mask_width = head.size if head.maskable else None
            self._schema = ActRequestSchema(
                space, self.args.max_request_rows, self.args.check_bounds, mask_width
            )
            self._turn_schema = ActRequestSchema(
                space, 1, self.args.check_bounds, mask_width, session=True
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

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.0, batch_size_fn=rows)
    async def _batched_turns(
        self, turns: list[Turn]
    ) -> list[tuple[TurnAnswer | None, LoadedPolicy]]:
        """Session turns; None for a turn whose state does not fit this batch's policy
        (a reload to a policy with another state width)."""
        policy = self._require_policy()
        width = policy.model.state_size
        fits = [t.state is None or t.state.shape == (1, width) for t in turns]
        ready = [
            Turn(t.obs, policy.model.initial_state(1) if t.state is None else t.state,
                 t.deterministic, t.mask)
            for t, ok in zip(turns, fits, strict=True) if ok
        ]  # fmt: skip
        answers: list[TurnAnswer] = []
        if ready:
            answers, seconds = inference.act_turns(policy.model, ready)
            self.metrics.observe_inference(seconds, rows(ready))
        computed = iter(answers)
        return [(next(computed) if ok else None, policy) for ok in fits]

    async def _store(self, method: str, *args: Any) -> dict[str, Any]:
        """One call to the session store; 503 when it cannot be reached."""
        unavailable = ApiError(
            503,
            "sessions_unavailable",
            "the session store did not answer",
            headers={"Retry-After": "1"},
        )
        if self._sessions is None:
            raise unavailable
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                return await getattr(self._sessions, method).remote(*args)
        except Exception as error:
            logger.warning("session store %s failed: %s", method, type(error).__name__)
            raise unavailable from None

    async def _session(self, method: str, session_id: str, *args: Any) -> dict[str, Any]:
        """A store call about one session; 404/410 when it is unknown, ended or expired."""
        if not valid_session_id(session_id):
            raise gone_error("unknown", self.args.sessions)
        result = await self._store(method, session_id, *args)
        if "error" in result and result["error"] != "conflict":
            raise gone_error(result["error"], self.args.sessions)
        return result

    # -- routes -------------------------------------------------------------------------
    @app.post("/v1/act")
    async def act(self, request: Request) -> JSONResponse:
        check_bearer(request, self._token)
        if self._require_policy().model.state_size:
            raise ApiError(
                409,
                "needs_session",
                "the served policy is recurrent: its action depends on the episode so far",
                expected="POST /v1/sessions, then one POST /v1/sessions/{id}/act per turn",
            )
        with self._admission.admit(request.receive) as receive:  # before the body: cheap
            watched = Request(request.scope, receive)
            body = await read_json_body(watched, self.args.max_body_bytes, self.args.body_timeout_s)
            assert self._schema is not None
            obs, mask, batched, deterministic, return_probs = self._schema.parse(body)
            answer, policy = await self._batched(Query(obs, deterministic, return_probs, mask))
        return JSONResponse(reply(answer, policy, batched))

    @app.post("/v1/sessions")
    async def start_session(self, request: Request) -> JSONResponse:
        """A new episode: a session at turn 0 (the zero state). The body is not read."""
        check_bearer(request, self._token)
        policy = self._require_policy()
        result = await self._store("start", policy.name, policy.model.state_size)
        limits = self.args.sessions
        if result.get("error") == "full":
            raise ApiError(
                503,
                "sessions_full",
                f"{limits.max_sessions} sessions are open, the most this server keeps",
                expected="end finished sessions with DELETE /v1/sessions/{id}, or retry "
                "after Retry-After seconds, when the first open session expires",
                headers={"Retry-After": str(result["retry_after_s"])},
            )
        content = {
            "session_id": result["session_id"],
            "turn": 0,
            "state_size": policy.model.state_size,
            "policy_version": policy.policy_version,
            "env_version": policy.env_version,
            "checkpoint": policy.name,
            "idle_ttl_s": limits.idle_ttl_s,
            "max_age_s": limits.max_age_s,
        }
        return JSONResponse(content, status_code=201)

    @app.post("/v1/sessions/{session_id}/act")
    async def session_act(self, session_id: str, request: Request) -> JSONResponse:
        """One turn: the action for this observation from the session's state."""
        check_bearer(request, self._token)
        self._require_policy()
        with self._admission.admit(request.receive) as receive:
            watched = Request(request.scope, receive)
            body = await read_json_body(watched, self.args.max_body_bytes, self.args.body_timeout_s)
            assert self._turn_schema is not None
            obs, mask, deterministic, asked = self._turn_schema.parse_turn(body)
            session = await self._session("get", session_id)
            turn = session["turn"]
            if asked is not None and asked != turn:
                raise turn_conflict(asked, turn)
            state = session["state"]
            state = None if state is None else state.reshape(1, -1)
            answer, policy = await self._batched_turns(Turn(obs, state, deterministic, mask))
            if answer is None:
                raise ApiError(
                    409,
                    "policy_changed",
                    "the served policy changed to one with another state width: this "
                    "session cannot go on",
                    expected=NEW_SESSION,
                )
            done = await self._session("commit", session_id, turn, answer.state, policy.name)
            if done.get("error") == "conflict":
                raise turn_conflict(turn, done["turn"])
        return JSONResponse(turn_reply(answer, policy, turn))

    @app.delete("/v1/sessions/{session_id}")
    async def end_session(self, session_id: str, request: Request) -> JSONResponse:
        check_bearer(request, self._token)
        result = await self._session("end", session_id)
        return JSONResponse({"ended": True, "turns": result["turns"]})

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
        sessions: dict[str, Any] = self.args.sessions.model_dump()
        with contextlib.suppress(ApiError):  # the policy is described without the store too
            sessions = await self._store("stats")
        return JSONResponse(
            {
                **policy.describe(),
                "state_size": policy.model.state_size,
                "source": self._source.describe(),
                "settings": settings,
                "limits": limits,
                "sessions": sessions,
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
    store = SessionStoreServer.options(**STORE_DEPLOYMENT).bind(parsed.sessions.model_dump())
    return PolicyServer.options(**parsed.deployment_options()).bind(parsed.model_dump(), store)
