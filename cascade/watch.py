"""One watcher of the change log's head per process, for every long poll waiting on it.

A follower long-polling this node's feed, and the push loop waiting for a local change,
wait here for the log to grow past a sequence number. The watcher learns of a new head
two ways:

- at once, when this process writes (the registry store calls :meth:`HeadWatcher.notify`
  after each write transaction, from whatever thread made it);
- by reading the head from the store every ``interval`` seconds, but only while someone
  waits: other processes sharing the store (``serve --workers N``, gateways on one
  PostgreSQL) write too. One query per interval serves all waiters; an idle node with no
  waiter reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

DEFAULT_INTERVAL = 0.15  # seconds between reads of the head while someone waits


@dataclass
class _LoopState:
    """What the watcher keeps per event loop (the server runs one; tests may run more)."""

    loop: asyncio.AbstractEventLoop
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when the head grows
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # a local write: read now
    waiters: int = 0
    poller: asyncio.Task[None] | None = None


class HeadWatcher:
    def __init__(self, head: Callable[[], int], *, interval: float = DEFAULT_INTERVAL) -> None:
        self._read_head = head
        self.interval = interval
        self.head = 0  # the newest head seen (only ever grows)
        self.reads = 0  # head queries made, all waiters together
        self._lock = threading.Lock()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    @property
    def polling(self) -> bool:
        """Whether the head is being read (someone waits, or did a moment ago)."""
        with self._lock:
            states = list(self._states.values())
        return any(state.poller is not None and not state.poller.done() for state in states)

    def notify(self) -> None:
        """A write of this process committed: waiters check the head now. Thread-safe,
        never raises, cheap when nobody waits."""
        with self._lock:
            states = list(self._states.values())
        for state in states:
            if state.waiters and not state.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    state.loop.call_soon_threadsafe(state.kick.set)

    async def wait_past(
        self, since: int, timeout: float, stopping: threading.Event | None = None
    ) -> int:
        """Return once the head is past ``since``, after ``timeout`` seconds, or soon
        after ``stopping`` is set; returns the newest head seen."""
        state = self._state()
        state.waiters += 1
        if state.poller is None or state.poller.done():
            state.poller = state.loop.create_task(self._poll(state))
        else:
            state.kick.set()  # read the head now: it may be older than ``since`` knows
        try:
            with anyio.move_on_after(timeout):
                while self.head <= since:
                    if stopping is not None and stopping.is_set():
                        break  # the node is shutting down: answer now
                    event = state.changed
                    # Wake at least every interval to look at ``stopping``.
                    with anyio.move_on_after(self.interval):
                        await event.wait()
        finally:
            state.waiters -= 1
        return self.head

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                for old in [lp for lp in self._states if lp.is_closed()]:
                    del self._states[old]
                state = self._states[loop] = _LoopState(loop)
            return state

    async def _poll(self, state: _LoopState) -> None:
        """Read the head while anyone waits: at once when kicked, else every interval."""
        while state.waiters > 0:
            state.kick.clear()
            head = await anyio.to_thread.run_sync(self._read_head)
            self.reads += 1
            if head > self.head:
                self.head = head
                changed, state.changed = state.changed, asyncio.Event()
                changed.set()
            if state.waiters <= 0:
                break
            with anyio.move_on_after(self.interval):
                await state.kick.wait()
