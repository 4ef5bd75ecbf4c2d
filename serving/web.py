"""HTTP plumbing of the server: JSON error handlers, body limits and the bearer token.

Every error is JSON ``{"error": code, "detail": message, "expected"?: ..., "errors"?: [...]}``;
no handler ever returns a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.schema import ApiError

logger = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    body = {"error": code, "detail": str(error.detail)}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()[:5]]
    body = {"error": "invalid_request", "detail": "invalid request", "errors": errors}
    return JSONResponse(body, 422)


async def _internal_error(_: Request, error: Exception) -> JSONResponse:
    logger.error("internal error: %s", type(error).__name__, exc_info=error)
    return JSONResponse({"error": "internal", "detail": "internal server error"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)


async def read_json_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body of a JSON request: 415 for another content type, 413 beyond ``limit``,
    408 if it is not all received within ``timeout_s`` (slow or short of its length)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != JSON_MEDIA_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {media or '(none)'!r} is not accepted",
            expected=f"Content-Type: {JSON_MEDIA_TYPE}",
        )
    too_large = ApiError(
        413, "body_too_large", f"request body over {limit} bytes", expected=f"<= {limit} bytes"
    )
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(length) > limit:
            raise too_large
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_stream(request, too_large, limit)
    except TimeoutError:
        assert timeout_s is not None  # only a deadline expires
        raise body_timeout(timeout_s) from None


async def _read_stream(request: Request, too_large: ApiError, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def body_timeout(timeout_s: float) -> ApiError:
    """408 for a body still incomplete at its deadline; the connection is closed, since
    the rest of that body would be read as the next request."""
    return ApiError(
        408,
        "body_timeout",
        f"request body not received within {timeout_s:g} s",
        expected=f"the whole body (Content-Length bytes) within {timeout_s:g} s",
        headers={"Connection": "close"},
    )


def read_token(env_var: str | None) -> str | None:
    """The bearer token from ``env_var`` (never logged); None when auth is off."""
    if not env_var:
        return None
    token = os.environ.get(env_var, "").strip()
    if not token:
        raise ValueError(f"token_env={env_var!r} is set but that environment variable is empty")
    return token


def check_bearer(request: Request, token: str | None) -> None:
    """Raise 401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            expected="an 'Authorization: Bearer <token>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
