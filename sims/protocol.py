"""The simulator wire protocol: length-prefixed msgpack messages over TCP.

Each message is a 4-byte big-endian length and a msgpack map. NumPy arrays travel
as ``{"__nd__": [dtype, shape, bytes]}``. A session opens with a handshake::

    client: {"op": "hello", "protocol": 1}
    server: {"ok": true, "protocol": 1, "spec": {"env_id": ..., "env_version": ..., ...}}

then ``reset`` (seed, options), ``step`` (action), ``oracle_action``, ``close``. A
protocol-2 hello with ``num_envs`` opens a batched session instead: ``reset_batch`` and
``step_batch`` carry all of its envs at once. Every reply has ``ok``; a failed request
answers ``{"ok": false, "error": "..."}`` and the session stays usable, except for
framing errors, which close it. The whole protocol, for a server in another language:
docs/simulator-protocol.md.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1  # what a one-env client says: every server speaks it
BATCHED_PROTOCOL = 2  # protocol 1 plus batched sessions (a hello with num_envs)
PROTOCOLS = (PROTOCOL_VERSION, BATCHED_PROTOCOL)  # what sims.server speaks
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A malformed frame or message: the connection cannot go on."""


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:  # a vector env's info of non-numbers: the items, in order
            return {"__ndobj__": [list(value.shape), value.ravel().tolist()]}
        return {"__nd__": [value.dtype.str, list(value.shape), value.tobytes()]}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__}")


def _hook(value: dict) -> Any:
    if "__nd__" in value and len(value) == 1:
        try:
            dtype, shape, data = value["__nd__"]
            return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
        except (TypeError, ValueError) as error:
            raise ProtocolError(f"malformed array {value['__nd__']!r:.80}: {error}") from error
    if "__ndobj__" in value and len(value) == 1:
        return _object_array(value["__ndobj__"])
    return value


def _object_array(value: Any) -> np.ndarray:
    try:
        shape, items = value
        array = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):  # item by item: a list item stays one object
            array[i] = item
        return array.reshape(shape)
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"malformed object array {value!r:.80}: {error}") from error


def pack(message: dict[str, Any]) -> bytes:
    payload = msgpack.packb(message, default=_default, use_bin_type=True)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def unpack(payload: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(payload, object_hook=_hook, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ProtocolError(f"undecodable message: {error}") from error
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    return message


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(pack(message))


def receive(sock: socket.socket) -> dict[str, Any]:
    """One message; ConnectionError when the peer is gone, ProtocolError when garbled."""
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    return unpack(_read_exactly(sock, size))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("the simulator connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
