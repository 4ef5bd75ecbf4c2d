"""Typed request schema for ``POST /v1/act``, built from a checkpoint's spaces.

``{"observation": OBS}`` (one) or ``{"observations": [OBS, ...]}`` (a batch), each OBS
in its space's natural JSON form: a ``Box`` a nested list of its shape of finite JSON
numbers (no strings, bools, NaN or infinities), within its bounds when bounds are
checked; a ``Discrete`` an integer in range; ``MultiDiscrete`` and ``MultiBinary``
lists of integers in range; a ``Dict`` an object of its named parts (all of them, no
others); a ``Tuple`` a list of its parts. Where the policy's actions can be masked,
``"action_mask"`` (one list of booleans, or one per row of a batch) restricts them.
Every malformed part is a 4xx that names where it is and what was expected.

A session's turn (``POST /v1/sessions/{id}/act``, ``session=True``) takes one
``"observation"`` in the same form, the same ``"action_mask"`` and ``"deterministic"``,
and an optional ``"turn"``: the number of turns the client has had answered, checked
against the session's.
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
    StrictInt,
    ValidationError,
    conlist,
    create_model,
    model_validator,
)

from turnwise.policy.observations import encode, stack

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


class _TurnRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _nested(leaf: Any, shape: tuple[int, ...]) -> Any:
    for size in reversed(shape):
        leaf = conlist(leaf, min_length=size, max_length=size)
    return leaf


def json_type(space: spaces.Space, name: str = "Observation") -> Any:
    """The pydantic type of one observation of ``space`` in its natural JSON form."""
    if isinstance(space, spaces.Box):
        return _nested(Number, tuple(space.shape))
    if isinstance(space, spaces.Discrete):
        return StrictInt
    if isinstance(space, spaces.MultiDiscrete | spaces.MultiBinary):
        return _nested(StrictInt, tuple(space.shape))
    if isinstance(space, spaces.Dict):
        fields = {
            f"part_{i}": (json_type(sub, f"{name}_{i}"), Field(alias=key))
            for i, (key, sub) in enumerate(space.spaces.items())
        }
        config = ConfigDict(extra="forbid", strict=True)
        return create_model(name, __config__=config, **fields)
    if isinstance(space, spaces.Tuple):
        parts = [json_type(sub, f"{name}_{i}") for i, sub in enumerate(space.spaces)]
        return tuple.__class_getitem__(tuple(parts))
    raise TypeError(f"cannot serve observations of {space}")


def describe(space: spaces.Space, check_bounds: bool = True) -> str:
    """What one observation of ``space`` looks like in JSON (for error messages)."""
    if isinstance(space, spaces.Box):
        dims = "x".join(map(str, space.shape))
        what = f"a list of {dims} finite numbers" if len(space.shape) == 1 else f"{dims} arrays"
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        if check_bounds and (np.isfinite(low).any() or np.isfinite(high).any()):
            what += (
                f" within the space's bounds (here [{float(low.min()):g}, {float(high.max()):g}])"
            )
        return what
    if isinstance(space, spaces.Discrete):
        return f"an integer in [{space.start}, {space.start + space.n - 1}]"
    if isinstance(space, spaces.MultiDiscrete):
        sizes = space.nvec.tolist()
        return f"a list of {len(sizes)} integers, each in [start, start + n) for n in {sizes}"
    if isinstance(space, spaces.MultiBinary):
        return f"a list of {'x'.join(map(str, space.shape))} 0/1 integers"
    if isinstance(space, spaces.Dict):
        parts = ", ".join(
            f'"{k}": {describe(sub, check_bounds)}' for k, sub in space.spaces.items()
        )
        return "an object {" + parts + "}"
    if isinstance(space, spaces.Tuple):
        return "a list [" + ", ".join(describe(sub, check_bounds) for sub in space.spaces) + "]"
    return str(space)


class ActRequestSchema:
    """Parses request bodies into the policy's flat float32 input (rows, D) and masks."""

    def __init__(
        self,
        space: spaces.Space,
        max_rows: int,
        check_bounds: bool = True,
        mask_width: int | None = None,
        session: bool = False,
    ) -> None:
        self.space, self.max_rows, self.check_bounds = space, max_rows, check_bounds
        self.mask_width, self.session = mask_width, session
        one = json_type(space)
        mask = conlist(StrictBool, min_length=mask_width or 0, max_length=mask_width or 0)
        if session:  # one observation per turn
            fields: dict[str, Any] = {
                "observation": (one, ...),
                "deterministic": (StrictBool, True),
                "turn": (Annotated[int, Field(strict=True, ge=0)] | None, None),
            }
            if mask_width:
                fields["action_mask"] = (mask | None, None)
            self.model = create_model("TurnRequest", __base__=_TurnRequestBase, **fields)
        else:
            fields = {
                "observation": (one | None, None),
                "observations": (conlist(one, min_length=1, max_length=max_rows) | None, None),
                "deterministic": (StrictBool, True),
                "return_probs": (StrictBool, False),
            }
            if mask_width:
                fields["action_mask"] = (mask | conlist(mask, min_length=1) | None, None)
            self.model = create_model("ActRequest", __base__=_ActRequestBase, **fields)
        self.expected = self._describe()

    def _describe(self) -> str:
        rows = "" if self.session else " (one list per row for a batch)"
        mask = (
            f', "action_mask": {self.mask_width} booleans{rows}, true where an action is allowed'
            if self.mask_width
            else ""
        )
        obs = describe(self.space, self.check_bounds)
        if self.session:
            return (
                f'a JSON object {{"observation": OBS}}, where OBS is {obs}; optional '
                '"deterministic": true|false (default true), "turn": the number of turns '
                "answered so far (checked against the session's)" + mask
            )
        return (
            'a JSON object {"observation": OBS} or {"observations": [OBS, ...]} '
            f"(1 to {self.max_rows} rows), where OBS is {obs}; "
            'optional "deterministic": true|false (default true), "return_probs": true|false' + mask
        )

    def parse(self, body: bytes) -> tuple[np.ndarray, np.ndarray | None, bool, bool, bool]:
        """``(flat observations (rows, D) float32, mask (rows, M) or None, batched,
        deterministic, return_probs)``."""
        request = self._validated(body)
        batched = request.observations is not None
        rows = request.observations if batched else [request.observation]
        native = [self._native(self.space, _plain(row), f"row {r}") for r, row in enumerate(rows)]
        obs = encode(self.space, stack(self.space, native))
        return (
            obs,
            self._mask(request, len(rows), batched),
            batched,
            request.deterministic,
            request.return_probs,
        )

    def parse_turn(self, body: bytes) -> tuple[np.ndarray, np.ndarray | None, bool, int | None]:
        """A session's turn (``session=True``): ``(flat observation (1, D) float32,
        mask (1, M) or None, deterministic, turn or None)``."""
        request = self._validated(body)
        native = self._native(self.space, _plain(request.observation), "observation")
        obs = encode(self.space, stack(self.space, [native]))
        return obs, self._mask(request, 1, False), request.deterministic, request.turn

    def _validated(self, body: bytes) -> Any:
        try:
            return self.model.model_validate_json(body)
        except ValidationError as error:
            raise self._invalid(error) from None

    def _mask(self, request: Any, rows: int, batched: bool) -> np.ndarray | None:
        given = getattr(request, "action_mask", None)
        if given is None:
            return None
        mask = np.asarray(given, dtype=bool)
        mask = mask[None] if mask.ndim == 1 and not batched else mask
        if mask.shape != (rows, self.mask_width):
            detail = f"action_mask: {rows} row(s) of {self.mask_width} booleans expected"
            raise ApiError(422, "invalid_request", detail, self.expected)
        if not mask.any(1).all():
            row = int(np.flatnonzero(~mask.any(1))[0])
            detail = f"action_mask: row {row} allows no action"
            raise ApiError(422, "invalid_request", detail, self.expected)
        return mask

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

    def _native(self, space: spaces.Space, value: Any, where: str) -> Any:
        """One part as the env would give it, with its values checked; ``where``
        names the part in errors."""
        if isinstance(space, spaces.Dict):
            return {
                k: self._native(sub, value[k], f"{where}, {k}") for k, sub in space.spaces.items()
            }
        if isinstance(space, spaces.Tuple):
            return tuple(
                self._native(sub, v, f"{where}, {i}")
                for i, (sub, v) in enumerate(zip(space.spaces, value, strict=True))
            )
        if isinstance(space, spaces.Box):
            return self._box(space, value, where)
        array = np.asarray(value, dtype=np.int64)
        if isinstance(space, spaces.Discrete):
            low, high = np.int64(space.start), np.int64(space.start + space.n - 1)
        elif isinstance(space, spaces.MultiDiscrete):
            low, high = space.start, space.start + space.nvec - 1
        else:
            low, high = np.zeros_like(array), np.ones_like(array)
        return self._within(array, low, high, where)

    def _box(self, space: spaces.Box, value: Any, where: str) -> np.ndarray:
        array = np.asarray(value, dtype=np.float32)
        if not np.isfinite(array).all():  # finite as JSON numbers, but not as float32
            raise ApiError(
                422, "invalid_request", f"{where}: values overflow float32", self.expected
            )
        if not self.check_bounds:
            return array
        return self._within(
            array, space.low.astype(np.float32), space.high.astype(np.float32), where
        )

    def _within(self, array: np.ndarray, low: Any, high: Any, where: str) -> np.ndarray:
        low, high = np.broadcast_to(low, array.shape), np.broadcast_to(high, array.shape)
        outside = (array < low) | (array > high)
        if outside.any():
            index = tuple(int(i) for i in np.argwhere(outside)[0])
            at = "" if not index else f", index {index[0] if len(index) == 1 else index}"
            raise ApiError(
                422,
                "out_of_bounds",
                f"{where}{at}: {array[index].item():g} is outside "
                f"[{low[index].item():g}, {high[index].item():g}]",
                self.expected,
            )
        return array


def _plain(value: Any) -> Any:
    """A parsed request part as plain Python (pydantic models as dicts by key)."""
    if isinstance(value, BaseModel):
        return {
            field.alias or name: _plain(getattr(value, name))
            for name, field in type(value).model_fields.items()
        }
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
