"""A feed page's bytes: written without a model (what the receiver parses is what was
signed), and read by orjson where it can, by the bounded ``parse_json`` otherwise."""

from __future__ import annotations

import json
import math

import pytest

from yunnao.cascade.feed import FEED_DEPTH, FeedPage
from yunnao.cascade.wire import page_body, push_body, read_page
from yunnao.plugins.errors import BadRequest


def test_a_page_reads_back_as_it_was_written() -> None:
    items = [
        {"entry": {"x": float("nan"), "big": 2**70, "t": "青岛\u2028"}, "key": "a/b"},
        {"entry": {"lone": "\udc80", "f": 1e-7}, "key": "a/c"},
        {"entry": {"plain": [1, 2.5, None, True]}, "key": "a/d"},
    ]
    raw = page_body("sd.qd", FeedPage(items=items, next=7, head=9))
    page = read_page(raw, "page")
    assert page["node"] == "sd.qd" and page["next"] == 7 and page["head"] == 9
    assert math.isnan(page["items"][0]["entry"]["x"])
    assert page["items"][0]["entry"]["big"] == 2**70
    assert page["items"][1:] == items[1:]
    assert json.loads(raw)["items"][2] == items[2]


def test_a_pushed_batch_has_its_members_and_items() -> None:
    body = json.loads(push_body({"since": 1, "next": 3, "head": 4}, [{"a": 1}]))
    assert body == {"since": 1, "next": 3, "head": 4, "items": [{"a": 1}]}
    assert json.loads(push_body({}, [])) == {"items": []}


def test_a_page_nested_too_deep_or_not_json_is_refused() -> None:
    deep = b'{"items":[' + b"[" * FEED_DEPTH + b"]" * FEED_DEPTH + b"]}"
    with pytest.raises(BadRequest, match="deep"):
        read_page(deep, "page")
    with pytest.raises(BadRequest, match="not valid JSON"):
        read_page(b'{"items": [', "page")
