"""The wire between the node and a sandboxed worker, imported by both ends: one
persistent connection over a Unix socket pair, carrying length-prefixed JSON messages.

From the node: ``{"id": N, "input": {...}}``, one per call; ``id`` tells answers apart,
so several calls are in flight at once. From the worker, first the handshake
``{"ready": true, "pid": P}`` (or ``{"ready": false, "error": "<traceback>"}`` when the
model did not load, after which it exits), then one answer per call:

- ``{"id": N, "ok": <output>}``
- ``{"id": N, "error": "validation", "detail": "...", "errors": [{"field", "message"}]}``
- ``{"id": N, "error": "capability", "detail": "<type>: <message>"}``

The worker is untrusted: the node refuses a message over its size limit and treats one
it cannot read as the worker's failure (:class:`BadMessage`).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
# What the worker accepts from the node (requests come through the gateway's own limits).
MAX_REQUEST = 256 * 1024 * 1024


class BadMessage(Exception):
    """A message that breaks the protocol (too large, not JSON, not an object)."""


def frame(message: Mapping[str, Any]) -> bytes:
    """One message as sent: its JSON body's length, then the body."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(body)) + body


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadMessage(f"a JSON {type(message).__name__}, not an object")
    return message


async def receive(reader: asyncio.StreamReader, limit: int) -> dict[str, Any]:
    """The next message from ``reader`` (the node's end); ``IncompleteReadError`` at the
    end of the stream, :class:`BadMessage` for one over ``limit`` bytes or unreadable."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > limit:
        raise BadMessage(f"a message of {size} bytes, over the limit of {limit}")
    return _decode(await reader.readexactly(size))


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message from a blocking ``stream`` (the worker's end); None at its end."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_REQUEST:
        raise BadMessage(f"a message of {size} bytes, over the limit of {MAX_REQUEST}")
    body = stream.read(size)
    if len(body) < size:
        return None
    return _decode(body)
