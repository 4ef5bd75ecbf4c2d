"""Typed request schema for ``POST /v1/act``, built from a checkpoint's observation space.

``{"observation": [...]}`` (one) or ``{"observations": [[...], ...]}`` (a batch), each
observation a nested list of the space's shape of finite JSON numbers (no strings, bools,
NaN or infinities), within the space's bounds when bounds are checked.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from gymnasium import spaces
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    conlist,
    create_model,
    model_validator,
)

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MAX_LISTED_ERRORS = 5


class ApiError(Exception):
    """An HTTP error answered as JSON: ``{"error", "detail", "expected"?, "errors"?}``."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        expected: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.expected, self.errors, self.headers = expected, errors, headers

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.expected:
            body["expected"] = self.expected
        if self.errors:
            body["errors"] = self.errors
        return body


class _ActRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> _ActRequestBase:
        if (self.observation is None) == (self.observations is None):  # type: ignore[attr-defined]
            raise ValueError("give exactly one of 'observation' or 'observations'")
        return self


class ActRequestSchema:
    """Parses request bodies into float32 arrays of shape (rows, *space.shape)."""

    def __init__(self, space: spaces.Box, max_rows: int, check_bounds: bool = True) -> None:
        self.space, self.max_rows, self.check_bounds = space, max_rows, check_bounds
        self.shape = tuple(space.shape)
        self.low = space.low.astype(np.float32)
        self.high = space.high.astype(np.float32)
        self.bounded = check_bounds and bool(
            np.isfinite(self.low).any() or np.isfinite(self.high).any()
        )
        one: Any = Number
        for size in reversed(self.shape):
            one = conlist(one, min_length=size, max_length=size)
        self.model = create_model(
            "ActRequest",
            __base__=_ActRequestBase,
            observation=(one | None, None),
            observations=(conlist(one, min_length=1, max_length=max_rows) | None, None),
            deterministic=(StrictBool, True),
            return_probs=(StrictBool, False),
        )
        self.expected = self._describe()

    def _describe(self) -> str:
        dims = "x".join(map(str, self.shape))
        what = f"a list of {dims} finite numbers" if len(self.shape) == 1 else f"{dims} arrays"
        if self.bounded:
            low, high = float(self.low.min()), float(self.high.max())
            what += f" within the observation space bounds (here [{low:g}, {high:g}])"
        return (
            'a JSON object {"observation": OBS} or {"observations": [OBS, ...]} '
            f"(1 to {self.max_rows} rows), where OBS is {what}; optional "
            '"deterministic": true|false (default true), "return_probs": true|false'
        )

    def parse(self, body: bytes) -> tuple[np.ndarray, bool, bool, bool]:
        """``(observations (rows, *shape) float32, batched, deterministic, return_probs)``."""
        try:
            request = self.model.model_validate_json(body)
        except ValidationError as error:
            raise self._invalid(error) from None
        batched = request.observations is not None
        rows = request.observations if batched else [request.observation]
        obs = np.asarray(rows, dtype=np.float32)
        self._check_values(obs)
        return obs, batched, request.deterministic, request.return_probs

    def _invalid(self, error: ValidationError) -> ApiError:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        if any(p["type"] == "json_invalid" for p in problems):
            detail = f"body is not valid JSON: {problems[0]['msg']}"
            return ApiError(400, "invalid_json", detail, self.expected)
        listed = [
            {"loc": list(p["loc"]), "msg": p["msg"], "type": p["type"]}
            for p in problems[:MAX_LISTED_ERRORS]
        ]
        first = listed[0]
        where = ".".join(map(str, first["loc"])) or "body"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        detail = f"{where}: {first['msg']}{more}"
        return ApiError(422, "invalid_request", detail, self.expected, listed)

    def _check_values(self, obs: np.ndarray) -> None:
        if not np.isfinite(obs).all():  # finite as JSON numbers, but not as float32
            detail = "observation values overflow float32"
            raise ApiError(422, "invalid_request", detail, self.expected)
        if not self.bounded:
            return
        outside = (obs < self.low) | (obs > self.high)
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            index = where[1:] if len(where) > 2 else where[1]
            raise ApiError(
                422,
                "out_of_bounds",
                f"row {where[0]}, index {index}: {float(obs[where]):g} is outside "
                f"[{float(self.low[where[1:]]):g}, {float(self.high[where[1:]]):g}]",
                self.expected,
            )
