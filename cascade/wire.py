"""A feed page as the bytes of its HTTP body, written without a model in between.

Items are passed on exactly as the origin signed them; the receiver recomputes the
canonical JSON of what it parses, so the page's text need only parse back to the same
values (``registry.hashing.json_bytes``: orjson where that holds, else ``json``).
"""

from __future__ import annotations

from typing import Any

import orjson

from yunnao.registry.hashing import json_bytes
from yunnao.registry.http import json_depth, parse_json

from .feed import FEED_DEPTH, FeedPage


def items_bytes(items: list[dict[str, Any]]) -> bytes:
    """``items`` as one JSON array."""
    return b"[" + b",".join(json_bytes(item) for item in items) + b"]"


def page_body(node: str, page: FeedPage) -> bytes:
    """The body of ``GET /v1/cascade/changes``: ``node``, ``items``, ``next``, ``head``."""
    head = json_bytes({"node": node, "next": page.next, "head": page.head})
    return head[:-1] + b',"items":' + items_bytes(page.items) + b"}"


def push_body(body: dict[str, Any], items: list[dict[str, Any]]) -> bytes:
    """The body of ``POST /v1/cascade/ingest``: ``body``'s members and ``items``."""
    head = json_bytes(body)
    return head[:-1] + (b"," if len(head) > 2 else b"") + b'"items":' + items_bytes(items) + b"}"


def read_page(raw: bytes, what: str) -> Any:
    """A peer's feed page parsed as a caller's body is (``parse_json``: nesting at most
    :data:`FEED_DEPTH`, else 400), by orjson where it reads the text (it reads the same
    values as ``json``); text it refuses (``NaN``, lone surrogates, integers past 64
    bits, not JSON) takes ``parse_json``, which reads it or says why not."""
    if json_depth(raw) <= FEED_DEPTH:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return parse_json(raw, what=what, max_depth=FEED_DEPTH)
