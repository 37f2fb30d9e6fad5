"""A sandboxed worker (its own process, inside the sandbox): loads one version's
downloaded model and serves its calls on the socket the node handed it.

Run as ``python -m yunnao.runtimes.adapters.sandbox.worker --fd N --model DIR
[--threads K]``: ``N`` is the worker's end of the node's socket pair (inherited), ``DIR``
the model files the node downloaded (read-only in the sandbox). It loads the model with
:func:`~yunnao.runtimes.adapters.loading.load_runnable`, says it is ready (or sends the
traceback of the failure and exits 1), then reads requests and runs each on a pool of
``K`` threads, answering in any order (see ``protocol.py``). It exits when the node
closes the connection. Nothing here trusts the node to stop it gently: the node kills
the whole sandbox when a call overruns its timeout.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
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


def start_pool(threads: int) -> ThreadPoolExecutor:
    """The pool calls run on, every thread started: capability code may later use up
    the processes this sandbox's user may have (threads count, in every worker of the
    version), and the pool must not need a new thread then. Done before the handshake,
    so no call of any worker of the version runs before it."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="yunnao-sandbox")
    started = threading.Barrier(threads + 1)
    for _ in range(threads):
        pool.submit(started.wait)
    started.wait()
    return pool


def serve(conn: Connection, runnable: Any, pool: ThreadPoolExecutor) -> None:
    """Read requests until the node closes the connection; run each on the pool."""

    def run(request: dict[str, Any]) -> None:
        reply = answer(runnable, request)
        try:
            conn.send(reply)
        except OSError:
            os._exit(0)  # the node is gone
        except Exception as exc:  # could not encode: tell the node
            detail = f"the answer could not be sent: {type(exc).__name__}: {exc}"
            conn.send({"id": reply.get("id"), "error": "capability", "detail": detail})

    while True:
        try:
            request = read_message(conn.stream)
        except (OSError, BadMessage):
            request = None
        if request is None:
            break
        pool.submit(run, request)
    # The node hung up: leave without waiting for calls still running.
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yunnao.runtimes.adapters.sandbox.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    conn = Connection(args.fd)
    try:
        from ..loading import load_runnable

        runnable = load_runnable(args.model)
        pool = start_pool(max(1, args.threads))
    except BaseException:
        conn.send({"ready": False, "error": traceback.format_exc()[-_TRACEBACK_CHARS:]})
        return 1
    conn.send({"ready": True, "pid": os.getpid()})
    try:
        serve(conn, runnable, pool)
    except BaseException:
        # The reading thread failed (out of memory, say): die rather than linger with
        # the pool's threads, deaf to the node; the node replaces the worker.
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(70)
    return 0


if __name__ == "__main__":
    sys.exit(main())
