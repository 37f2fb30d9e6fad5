"""The wire between the node and its Ray driver process: length-prefixed JSON messages
over a socket pair, and the TCP probe of the cluster's GCS port. Imported by both
ends: the node process (``connection.py``, ``runtime.py``) and the driver process
(``driver.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Mapping
from typing import Any

# How long a health request waits for Serve's controller (node and driver alike).
HEALTH_WAIT = 10.0
HEADER = struct.Struct(">I")


def frame(message: Mapping[str, Any]) -> bytes:
    """One message as sent: its JSON body's length, then the body."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(body)) + body


async def receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next message from ``reader``."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


async def reachable(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (the GCS port): a
    probe that answers at once when a cluster is gone, where Ray's own calls retry."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
