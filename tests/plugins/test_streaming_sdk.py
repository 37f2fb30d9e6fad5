"""A capability that yields: its output schema is the list of its items, marked
``x-stream``; ``run`` collects every item; ``stream`` gives them one by one and closes
the generator when the caller stops; items are checked against the item type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from yunnao.plugins import capability
from yunnao.plugins.errors import OutputInvalid, SpecError


class Tick(BaseModel):
    n: int


closed: list[bool] = []


@capability(name="ticks", title="计数")
def ticks(count: int) -> Iterator[Tick]:
    try:
        for n in range(count):
            yield Tick(n=n)
    finally:
        closed.append(True)


def test_the_schema_and_running_it_whole() -> None:
    assert ticks.streaming
    schema = ticks.output_schema
    assert schema["type"] == "array" and schema["x-stream"] is True
    assert schema["items"] == {"$ref": "#/$defs/Tick"}
    assert ticks.run({"count": 3}) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_streaming_stops_and_closes_the_generator() -> None:
    closed.clear()
    items = ticks.stream(ticks.target, ticks.validate_input({"count": 100}))
    assert [next(items), next(items)] == [{"n": 0}, {"n": 1}]
    items.close()
    assert closed == [True]


def test_a_wrong_item_and_a_wrong_annotation() -> None:
    @capability(name="bad-items", title="x")
    def bad(count: int) -> Iterator[int]:
        yield "not a number"  # type: ignore[misc]

    with pytest.raises(OutputInvalid) as caught:
        bad.run({"count": 1})
    assert caught.value.errors[0].field.startswith("output[]")

    with pytest.raises(SpecError, match="Iterator"):

        @capability(name="no-iterator", title="x")
        def plain(count: int) -> int:  # a generator annotated as one value
            yield count
