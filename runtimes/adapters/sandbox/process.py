"""The node's end of one sandboxed worker (in the node process): it starts the worker
on a socket pair, waits for its handshake, sends calls and matches their answers by
id, keeps the tail of what the worker prints, and turns the worker's end into errors
for the calls in flight: :class:`~yunnao.plugins.errors.CapabilityError` when it died
by itself (crashed, killed by a limit), :class:`~yunnao.plugins.errors.RuntimeDown` when
the node killed it (another call overran its timeout, the version was undeployed)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from yunnao.plugins.errors import (
    CapabilityError,
    FieldError,
    RuntimeDown,
    ValidationFailed,
    YunnaoError,
)

from .protocol import BadMessage, frame, receive

log = logging.getLogger("yunnao.runtimes.sandbox")

_TAIL_LINES = 40
_LINE_CHARS = 500
_REAP_WAIT_S = 5.0
_DRAIN_ABOVE = 1024 * 1024  # bytes waiting to be written before a call waits for them
_DETAIL_CHARS = 4000


class WorkerFailed(Exception):
    """A worker that did not come up: ``detail`` says why, ``traceback`` is the load
    failure's traceback text when the model did not load."""

    def __init__(self, detail: str, traceback: str = "") -> None:
        super().__init__(detail)
        self.detail, self.traceback = detail, traceback


def exit_text(code: int | None) -> str:
    """An exit status in words (bwrap exits 128+N for a worker killed by signal N)."""
    if code is None:
        return "still running"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name} (status {code})"
    return f"exited with status {code}"


class WorkerProcess:
    """One worker: its process (the sandbox's group leader) and its connection."""

    def __init__(
        self,
        label: str,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int,
    ) -> None:
        self.label, self.proc, self.reader, self.writer = label, proc, reader, writer
        self.limit = limit
        self.pid: int | None = None  # inside the sandbox, from the handshake
        self.alive = False
        self.killed = ""  # why the node killed it, if it did
        self.ended = ""  # how it ended, once it has
        self.on_exit: Callable[[WorkerProcess], None] | None = None
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._watching = asyncio.get_running_loop().create_task(self._watch())
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        label: str,
        argv: Callable[[int], list[str]],
        env: Mapping[str, str],
        *,
        start_timeout: float,
        limit: int,
    ) -> WorkerProcess:
        """Start a worker with ``argv(fd)`` (``fd``: its end of the socket pair) and wait
        for its handshake; :class:`WorkerFailed` when it does not come up."""
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd="/",
                # Its own process group: killing it ends the sandbox and all inside.
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise WorkerFailed(f"{label}: its worker could not be started: {exc}") from exc
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=2**16)
        worker = cls(label, proc, reader, writer, limit)
        try:
            hello = await asyncio.wait_for(receive(reader, limit), start_timeout)
        except TimeoutError:
            await worker.stop(f"not ready within {start_timeout:g} s")
            raise WorkerFailed(
                f"{label}: its worker did not load the model within {start_timeout:g} s"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, BadMessage) as exc:
            await worker.stop("broke the handshake")
            why = str(exc) if isinstance(exc, BadMessage) else exit_text(worker.proc.returncode)
            raise WorkerFailed(
                f"{label}: its worker ended before it was ready ({why}); "
                f"output: {worker.output()!r}"
            ) from None
        except BaseException:  # cancelled (a deploy given up, the node closing)
            worker.kill("start cancelled")
            worker.writer.transport.abort()
            raise
        if hello.get("ready") is not True:
            await worker.stop("failed to load")
            trace = str(hello.get("error", ""))
            last = trace.strip().splitlines()[-1] if trace.strip() else "no reason given"
            raise WorkerFailed(f"{label}: its model did not load: {last[:_LINE_CHARS]}", trace)
        pid = hello.get("pid")
        worker.pid = pid if isinstance(pid, int) else None
        worker.alive = True
        worker._reading = asyncio.get_running_loop().create_task(worker._read())
        return worker

    # ------------------------------------------------------------ calls

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def call(self, inputs: Any) -> Any:
        """Run one call on the worker and return its output; ValidationFailed (422)
        with the worker's field errors, CapabilityError or RuntimeDown."""
        if not self.alive:
            raise self._gone()
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self.writer.write(frame({"id": rid, "input": inputs}))
            if self.writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                await self.writer.drain()
            answer = await future
        except ConnectionError:
            raise self._gone() from None
        finally:
            self._pending.pop(rid, None)
        if "ok" in answer:
            return answer["ok"]
        detail = str(answer.get("detail", ""))[:_DETAIL_CHARS]
        if answer.get("error") == "validation":
            raise ValidationFailed(detail or "input does not match", errors=_field_errors(answer))
        raise CapabilityError(f"{self.label}: {detail or 'failed without a reason'}")

    def _gone(self) -> YunnaoError:
        if self.killed:
            return RuntimeDown(
                f"{self.label}: its sandboxed worker was stopped ({self.killed}) and is "
                "being replaced",
                retry_after=1,
            )
        return CapabilityError(
            f"{self.label}: its sandboxed worker died ({self.ended or 'connection lost'}); "
            f"its last output: {self.output()!r}"
        )

    def output(self) -> str:
        """The last lines the worker printed."""
        return "\n".join(self.tail)

    # ------------------------------------------------------------ its end

    def kill(self, why: str, *, ours: bool = True) -> None:
        """End the worker and everything in its sandbox at once; ``ours``: the node's
        decision (calls in flight get RuntimeDown), not the worker's failure."""
        if ours and not self.killed:
            self.killed = why
        self.alive = False  # no new calls; those in flight fail once its end is read
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, why: str) -> None:
        """Kill the worker and wait until it and its connection are gone."""
        self.kill(why)
        self.writer.transport.abort()
        with contextlib.suppress(Exception):
            await self._watching
        if self._reading is not None:
            with contextlib.suppress(Exception):
                await self._reading

    async def _watch(self) -> None:
        """Keep the tail of the worker's output (reading it, so it never blocks on a
        full pipe); once the process has exited, end the connection too."""
        stream = self.proc.stdout
        assert stream is not None
        partial = b""
        with contextlib.suppress(Exception):
            while chunk := await stream.read(65536):
                *lines, partial = (partial + chunk).split(b"\n")
                partial = partial[-_LINE_CHARS:]  # a line without end is cut, not kept whole
                for line in lines[-_TAIL_LINES:]:
                    self.tail.append(line.decode(errors="replace").rstrip()[:_LINE_CHARS])
        if partial:
            self.tail.append(partial.decode(errors="replace").rstrip())
        # Its output may end before it does (a capability closed it): wait for the end.
        with contextlib.suppress(Exception):
            await self.proc.wait()
        self.writer.transport.abort()

    async def _read(self) -> None:
        broke = ""
        try:
            while True:
                message = await receive(self.reader, self.limit)
                rid = message.get("id")
                if type(rid) is not int:
                    raise BadMessage(f"an answer without a call id: {str(message)[:200]!r}")
                future = self._pending.get(rid)
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except BadMessage as exc:
            broke = f"it broke the protocol: {exc}"
            self.kill(broke, ours=False)
        finally:
            self.alive = False
            self.writer.transport.abort()
            code = await self._reap()
            self.ended = broke or exit_text(code)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._gone())
            if not self.killed:
                log.warning("%s: sandboxed worker ended: %s", self.label, self.ended)
            if self.on_exit is not None:
                self.on_exit(self)

    async def _reap(self) -> int | None:
        try:
            return await asyncio.wait_for(self.proc.wait(), _REAP_WAIT_S)
        except TimeoutError:  # its connection closed, yet it lingers: end it
            self.kill("lingered after closing its connection", ours=False)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.proc.wait(), _REAP_WAIT_S)
        return self.proc.returncode


def _field_errors(answer: Mapping[str, Any]) -> list[FieldError]:
    errors = answer.get("errors")
    out = []
    for item in errors if isinstance(errors, list) else []:
        if isinstance(item, dict):
            field = str(item.get("field", "(body)"))[:_LINE_CHARS]
            out.append(FieldError(field, str(item.get("message", ""))[:_LINE_CHARS]))
    return out[:100]
