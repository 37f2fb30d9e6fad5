"""A generator consumed from the event loop (runtimes/adapters/streaming.py): items come
as they are made, at most AHEAD in advance; a consumer that stops closes the generator
in its thread (its ``finally`` runs) and no more items are made; a failure and an
overrun reach the consumer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from yunnao.plugins.errors import InvocationTimeout
from yunnao.runtimes.adapters.streaming import AHEAD, thread_stream


class Counting:
    def __init__(self, limit: int = 1000, pause: float = 0.0, fail_at: int | None = None):
        self.made = 0
        self.closed = threading.Event()
        self.limit, self.pause, self.fail_at = limit, pause, fail_at

    def __call__(self):
        try:
            for i in range(self.limit):
                if i == self.fail_at:
                    raise RuntimeError("the camera went dark")
                time.sleep(self.pause)
                self.made += 1
                yield i
        finally:
            self.closed.set()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_items_arrive_in_order_and_the_end_is_seen(pool) -> None:
    source = Counting(limit=5)

    async def take() -> list[int]:
        return [i async for i in thread_stream(pool, source, timeout=10, label="t")]

    assert asyncio.run(take()) == [0, 1, 2, 3, 4]
    assert source.closed.wait(2)


def test_a_consumer_that_stops_stops_the_generator(pool) -> None:
    source = Counting(pause=0.01)

    async def take_two() -> list[int]:
        got = []
        items = thread_stream(pool, source, timeout=10, label="t")
        async for i in items:
            got.append(i)
            if len(got) == 2:
                break
        await items.aclose()
        return got

    assert asyncio.run(take_two()) == [0, 1]
    assert source.closed.wait(5), "the generator was not closed"
    made = source.made
    time.sleep(0.3)
    assert source.made == made <= 2 + AHEAD + 2  # nothing more after it was closed


def test_a_failure_and_an_overrun_reach_the_consumer(pool) -> None:
    async def drain(source: Counting, timeout: float) -> list[int]:
        return [i async for i in thread_stream(pool, source, timeout=timeout, label="cam")]

    with pytest.raises(RuntimeError, match="went dark"):
        asyncio.run(drain(Counting(fail_at=3), 10))
    slow = Counting(pause=0.2)
    with pytest.raises(InvocationTimeout, match=r"cam streamed for longer than 0\.5 s"):
        asyncio.run(drain(slow, 0.5))
    assert slow.closed.wait(5)
