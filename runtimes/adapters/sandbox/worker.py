"""A sandboxed worker (its own process, inside the sandbox): loads one version's
downloaded model and serves its calls on the socket the node handed it.

Run as ``python -m yunnao.runtimes.adapters.sandbox.worker --fd N --model DIR
[--threads K]``: ``N`` is the worker's end of the node's socket pair (inherited), ``DIR``
the model files the node downloaded (read-only in the sandbox). It loads the model with
:func:`~yunnao.runtimes.adapters.loading.load_runnable`, says it is ready (or sends the
traceback of the failure and exits 1), then serves calls on ``K`` threads, answering in
any order (see ``protocol.py``). It exits when the node closes the connection. Nothing
here trusts the node to stop it gently: the node kills the whole sandbox when a call
overruns its timeout.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import threading
import traceback
from typing import Any

from .protocol import BadMessage, frame, read_message

# Cuts of what goes back to the node's log.
_DETAIL_CHARS = 4000
_TRACEBACK_CHARS = 20000
_MAX_FIELD_ERRORS = 100


class Connection:
    """The worker's end of the socket; answers from several threads, one at a time."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        # Not into processes the capability starts (a fork still shares it; the sandbox
        # dies as a whole).
        os.set_inheritable(fd, False)
        self.stream = self.sock.makefile("rb")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = frame(message)
        with self._lock:
            self.sock.sendall(data)


def answer(runnable: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (never raises for the capability's failures)."""
    from yunnao.plugins.errors import ValidationFailed, YunnaoError

    rid = request.get("id")
    try:
        return {"id": rid, "ok": runnable(request.get("input"))}
    except ValidationFailed as exc:
        errors = [e.as_dict() for e in exc.errors[:_MAX_FIELD_ERRORS]]
        return {"id": rid, "error": "validation", "detail": exc.detail, "errors": errors}
    except YunnaoError as exc:  # e.g. OutputInvalid: the capability's bug
        fields = "; ".join(f"{e.field}: {e.message}" for e in exc.errors[:10])
        detail = f"{type(exc).__name__}: {exc.detail}" + (f" ({fields})" if fields else "")
        return {"id": rid, "error": "capability", "detail": detail[:_DETAIL_CHARS]}
    except BaseException as exc:  # SystemExit from a capability too
        detail = f"{type(exc).__name__}: {exc}"
        return {"id": rid, "error": "capability", "detail": detail[:_DETAIL_CHARS]}


class Server:
    """``threads`` threads that take turns reading the connection (leader and
    followers): the one that reads a request runs it and sends its answer while the
    next free one reads, so a call never waits for a hand-over between threads (each
    wakes another process or thread: the largest part of a short call's cost). While
    every thread is running a call, further requests wait in the socket."""

    def __init__(self, conn: Connection, runnable: Any, threads: int) -> None:
        self.conn, self.runnable = conn, runnable
        self._reading = threading.Lock()
        self.threads = [
            threading.Thread(target=self._serve, name=f"yunnao-sandbox_{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        """Start every thread: capability code may later use up the processes this
        sandbox's user may have (threads count, in every worker of the version), and the
        worker must not need a new thread then. Done before the handshake, so no call
        of any worker of the version runs before it. The threads wait for their turn to
        read until :meth:`serve` lets them."""
        self._reading.acquire()
        for thread in self.threads:
            thread.start()

    def serve(self) -> None:
        """Let the threads read requests, until the node closes the connection (then
        the process leaves without waiting for calls still running)."""
        self._reading.release()
        for thread in self.threads:
            thread.join()

    def _next(self) -> dict[str, Any]:
        with self._reading:
            try:
                request = read_message(self.conn.stream)
            except (OSError, BadMessage):
                request = None
        if request is None:
            os._exit(0)  # the node hung up (or broke the protocol)
        return request

    def _serve(self) -> None:
        try:
            while True:
                reply = answer(self.runnable, self._next())
                try:
                    self.conn.send(reply)
                except OSError:
                    os._exit(0)  # the node is gone
                except Exception as exc:  # could not encode: tell the node
                    detail = f"the answer could not be sent: {type(exc).__name__}: {exc}"
                    self.conn.send({"id": reply.get("id"), "error": "capability", "detail": detail})
        except BaseException:
            # Reading or answering failed (out of memory, say): die rather than linger,
            # deaf to the node; the node replaces the worker.
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(70)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yunnao.runtimes.adapters.sandbox.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    conn = Connection(args.fd)
    try:
        from ..loading import load_runnable

        runnable = load_runnable(args.model, allow_uploaded=True)  # in the sandbox
        server = Server(conn, runnable, max(1, args.threads))
        server.start()
        # What loading made (MLflow, pydantic, the model: hundreds of thousands of
        # objects) lives as long as the worker: kept out of the cyclic collector's full
        # passes, each of which would stall every call in flight (0.2-0.3 s in the node,
        # over its startup's objects, before the node froze them too).
        gc.collect()
        gc.freeze()
    except BaseException:
        conn.send({"ready": False, "error": traceback.format_exc()[-_TRACEBACK_CHARS:]})
        return 1
    conn.send({"ready": True, "pid": os.getpid()})
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
