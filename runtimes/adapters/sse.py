"""Server-sent events (the ``text/event-stream`` format), as a streamed call's answer
is written by the gateway and read by the node that forwarded the call:

    event: item          one item the capability yielded (``data``: its JSON)
    event: error         the stream failed (``data``: a problem document)
    event: end           the stream is complete (``data``: items, duration, request id)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

MEDIA_TYPE = "text/event-stream"


def event(kind: str, data: Any, *, id: int | None = None) -> bytes:
    """One event: ``data`` as one line of JSON (JSON has no raw newlines)."""
    head = f"id: {id}\n" if id is not None else ""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {kind}\ndata: {text}\n\n".encode()


async def events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, Any]]:
    """(kind, data) of each event read from ``lines`` (``data`` parsed as JSON)."""
    kind, data = "message", []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            continue  # a comment (keep-alive)
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield kind, json.loads("\n".join(data))
