"""Content hashes: SHA-256 of canonical JSON, identical on every node and store.

The canonical form is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, default=str)`` encoded as UTF-8: what nodes sign and hash, so its
bytes must never change. orjson writes the same bytes several times faster for plain
JSON values, but not for everything: it writes ``NaN`` and infinities as ``null`` (two
values, one signature), small and huge floats in another notation (``0.00001``, not
``1e-05``), and datetimes, enums and dataclasses its own way. So orjson is used only
for a value made of exactly ``dict``, ``list``, ``str``, ``int``, ``bool``, ``None``
and floats in the range where both write the same digits (checked before encoding);
any other value, or one orjson refuses (integers past 64 bits, non-string keys, deep
nesting), takes the ``json`` path. ``tests/registry/test_hashing.py`` compares both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_PLAIN = (str, int, bool, type(None))


def _plain(value: Any) -> bool:
    """Whether orjson writes ``value`` exactly as ``json`` does (see the module doc)."""
    kind = type(value)
    if kind is dict:
        return all(_plain(v) for v in value.values())
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is float:
        # Finite, and where repr() uses positional notation (orjson's and json's agree).
        return value == 0.0 or 1e-4 <= abs(value) < 1e16
    return kind in _PLAIN


def _json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def canonical_json(value: Any) -> bytes:
    try:
        if _plain(value):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, RecursionError, orjson.JSONEncodeError):
        pass  # what orjson will not write, json writes (or refuses) as it always did
    return _json(value)


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON text (UTF-8) that ``json.loads`` reads back as the same value
    (not canonical: for passing on or storing values parsed from JSON), by orjson where
    it writes what ``json`` reads the same (see the module doc), else by ``json`` (which
    writes ``NaN`` as ``NaN`` and escapes lone surrogates)."""
    try:
        if _plain(value):
            return orjson.dumps(value)
    except (TypeError, RecursionError, orjson.JSONEncodeError):
        pass
    return json.dumps(value).encode()


def json_text(value: Any) -> str:
    """:func:`json_bytes` as a string."""
    return json_bytes(value).decode()


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
