"""Canonical JSON: the orjson fast path writes exactly the bytes of the json form
every node signs and hashes, for every value (or the value takes the json path)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import random
import struct
import uuid
from typing import Any

import pytest

from yunnao.registry.hashing import canonical_json, content_hash


def reference(value: Any) -> bytes:
    """The canonical form as it was always defined."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Word(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


def _floats(rng: random.Random, count: int) -> list[float]:
    out = [0.0, -0.0, 1e-4, 9.99e-5, 1e-5, 2.5e-7, 1e15, 1e16, 1e17, 1e300, 5e-324, 1 / 3]
    out += [float("nan"), float("inf"), float("-inf"), 123.0, 1e22, -1.5e-10]
    for _ in range(count):
        pick = rng.random()
        if pick < 0.4:  # any bit pattern
            out.append(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
        elif pick < 0.8:
            out.append(rng.uniform(-1, 1) * 10 ** rng.randint(-8, 20))
        else:
            out.append(round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)))
    return out


TEXTS = [
    "",
    "plain",
    "青岛市 交通流量预测",
    "é",
    "e",
    "Z",
    "\uffff",
    "\U00010000",  # above the BMP: sorts after \uffff by code point, not in UTF-16
    "🎉 emoji",
    "\u2028\u2029",
    "\x00\x01\x1f\x7f",
    'quote " backslash \\ slash /',
    "\n\r\t\b\f",
    "1e5",
    "NaN",
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["text", "int", "float", "bool", "none", "big"]
    if depth < 4:
        kinds += ["dict", "dict", "list"]
    kind = rng.choice(kinds)
    if kind == "text":
        return rng.choice(TEXTS) + str(rng.randint(0, 9))
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, -(2**53), 2**63 - 1, -(2**63), rng.randint(-999, 999)])
    if kind == "big":
        return rng.choice([2**64, -(2**64) - 1, 10**30])
    if kind == "float":
        return rng.choice(_floats(rng, 3))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [rng.choice(TEXTS) + rng.choice(["", "a", "b", "中"]) for _ in range(rng.randint(0, 5))]
    return {k: _value(rng, depth + 1) for k in keys}


def test_both_encoders_agree_on_varied_items() -> None:
    rng = random.Random(19)
    for _ in range(3000):
        value = _value(rng)
        item = {
            "origin": "sd.qd.shinan",
            "origin_seq": rng.randint(1, 10**9),
            "entity": "version",
            "key": "sd.qd.shinan.traffic/流量@1.0.0",
            "op": "upsert",
            "content_hash": "0e" * 32,
            "entry": {"title": rng.choice(TEXTS), "input_schema": value, "examples": [value]},
            "at": "2026-11-30T02:00:00+00:00",
        }
        assert canonical_json(item) == reference(item)
        assert canonical_json(value) == reference(value)


def test_every_float_is_written_as_json_writes_it() -> None:
    for number in _floats(random.Random(7), 20_000):
        assert canonical_json({"x": number}) == reference({"x": number}), repr(number)


def test_null_and_nan_stay_two_values() -> None:
    # orjson alone writes NaN as null: one signature would cover both.
    assert canonical_json({"x": float("nan")}) != canonical_json({"x": None})
    assert canonical_json({"x": float("inf")}) == b'{"x":Infinity}'


@pytest.mark.parametrize(
    "value",
    [
        {"at": dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.UTC)},
        {"day": dt.date(2026, 11, 30)},
        {"colour": Colour.RED, "level": Level.HIGH},
        {"word": Word("词")},
        {"point": Point(1)},
        {"id": uuid.UUID(int=7)},
        {1: "int key"},
        {"tuple": (1, 2)},
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ],
)
def test_values_orjson_writes_its_own_way_take_the_json_path(value: Any) -> None:
    assert canonical_json(value) == reference(value)


def test_very_deep_nesting_is_written_as_before() -> None:
    value: Any = 1
    for _ in range(400):  # deeper than orjson writes
        value = {"a": [value]}
    assert canonical_json(value) == reference(value)


def test_what_json_refuses_is_still_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"lone surrogate": "\ud800"})


def test_content_hash_is_sha256_of_the_canonical_form() -> None:
    import hashlib

    value = {"b": [1, 2.5, None], "a": "青岛"}
    assert content_hash(value) == hashlib.sha256(reference(value)).hexdigest()


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and of the same types (1 is not 1.0 nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


def test_json_bytes_read_back_as_the_same_values() -> None:
    # What the feed passes on and the city keeps is written by json_bytes: whatever it
    # wrote, json reads back as the value it was given (NaN, big integers, lone
    # surrogates, floats of every size included), so signatures still check out.
    from yunnao.registry.hashing import json_bytes, json_text

    rng = random.Random(19)
    values = [_value(rng) for _ in range(3000)]
    values += [float("nan"), {"a": [float("inf"), -0.0, 1e-7]}, "\udc80 lone", 2**70]
    for value in values:
        assert _same(json.loads(json_bytes(value)), value)
        assert json_text(value) == json_bytes(value).decode()
