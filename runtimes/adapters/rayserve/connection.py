"""The node's end of one Ray driver process (in the node process): it starts the
process (``python -c DRIVER_MAIN FD``, same interpreter and environment) on a socket
pair, sends requests and matches their answers by id, and turns the process ending
into :class:`~yunnao.plugins.errors.RuntimeDown` for the calls in flight."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from yunnao.plugins.errors import RuntimeDown

from .protocol import frame, receive

# Run by the driver process: a string, so the module path must stay importable.
DRIVER_MAIN = "from yunnao.runtimes.adapters.rayserve.driver import driver_main; driver_main()"


class DriverConnection:
    """The node's end of one driver process: requests out, answers matched by id."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log_path: Path,
    ) -> None:
        self.proc, self.reader, self.writer, self.log_path = proc, reader, writer, log_path
        self.alive = True
        self.end_detail = ""  # why it ended, for RuntimeDown
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reading = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, log_path: Path, env: Mapping[str, str]) -> DriverConnection:
        ours, theirs = socket.socketpair()
        try:
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", DRIVER_MAIN, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    # The node handles Ctrl-C and SIGTERM and closes the driver itself.
                    start_new_session=True,
                )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        return cls(proc, reader, writer, log_path)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and await its answer (``result`` or ``error``). Cancelling
        the wait tells the driver process to cancel the request."""
        if not self.alive:
            raise RuntimeDown(self.end_detail or "the Ray driver process ended")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self.writer.write(frame({"id": rid, "op": op, **fields}))
            return await future
        except asyncio.CancelledError:
            if self.alive:
                self.writer.write(frame({"id": rid, "op": "cancel"}))
            raise
        finally:
            self._pending.pop(rid, None)

    async def _read(self) -> None:
        try:
            while True:
                message = await receive(self.reader)
                if "event" in message:  # the driver says why it is about to exit
                    self.end_detail = message.get("detail", "")
                    continue
                future = self._pending.get(message["id"])
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.alive = False
            self.writer.close()
            code = await anyio.to_thread.run_sync(self._reap)
            if not self.end_detail:
                self.end_detail = (
                    f"the Ray driver process exited (status {code}); see {self.log_path}"
                )
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RuntimeDown(self.end_detail))

    def _reap(self) -> int | None:
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its socket closed yet it lingers: end it
            self.proc.kill()
            return self.proc.wait()

    async def stop(self, timeout: float) -> None:
        """Wait for the process to exit after a ``close`` request; kill it if it lingers."""
        if self.proc.poll() is None:
            try:
                await anyio.to_thread.run_sync(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self._reading

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
