"""A blocking iterator (a streaming capability's generator) consumed from the event
loop: it runs in a worker thread and hands its items over one by one, at most
:data:`AHEAD` ahead of the consumer. When the consumer stops (the caller went away, the
timeout passed), the thread stops after the item it is computing, and the generator is
closed there, so the capability's own ``finally`` runs and no more work is done."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from yunnao.plugins.errors import InvocationTimeout

AHEAD = 8  # items a generator may run ahead of its consumer
_POLL = 0.2  # seconds between looks at "stop" while the consumer is behind


async def thread_stream(
    executor: Executor, start: Callable[[], Iterator[Any]], *, timeout: float, label: str
) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        """Hand one thing over; False once the consumer is gone."""
        future = asyncio.run_coroutine_threadsafe(queue.put((kind, value)), loop)
        while True:
            try:
                future.result(timeout=_POLL)
                return True
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):
                return False  # the loop is closing

    def pump() -> None:
        iterator = None
        try:
            iterator = start()
            for item in iterator:
                if stop.is_set() or not put("item", item):
                    return
        except BaseException as exc:  # the capability's failure, for the consumer
            if not stop.is_set():
                put("error", exc)
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # the generator's finally runs in its own thread
        if not stop.is_set():
            put("end", None)

    done = loop.run_in_executor(executor, pump)
    deadline = loop.time() + timeout
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise InvocationTimeout(f"{label} streamed for longer than {timeout:g} s")
            try:
                kind, value = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                raise InvocationTimeout(f"{label} streamed for longer than {timeout:g} s") from None
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        done.add_done_callback(lambda f: f.exception())  # never an unretrieved error
