"""``yunnao serve --workers N``: N processes of one node on one port and one store.

The supervisor (the process ``yunnao serve`` started) binds the listening socket, then:

1. prepares the node once, in a child process of its own so that nothing it opens
   (engines, MLflow's cached stores) is inherited: the embedded store is created or
   upgraded, the node key made, the node's row written, the embedded MLflow database
   created and, with ``--publish-plugins``, the plugins published (N workers starting at
   once would race at each of these);
2. forks the N workers, each of which builds its own app (:func:`yunnao.app.create_app`)
   and serves the inherited socket (the kernel spreads connections over them); each
   freezes what it loaded at start-up out of the cyclic collector's sight, as a single
   process does;
3. waits: a worker that dies is started again (after a second, so a crash loop does not
   spin), and SIGTERM or SIGINT is passed on to every worker, which stops gracefully;
   the supervisor returns once all have stopped. Should the supervisor itself be
   killed, the kernel sends its workers SIGTERM (Linux).

The supervisor itself holds no engine, thread or lock, so forking from it is safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("yunnao.node")

RESTART_DELAY = 1.0  # seconds before a worker that died is started again


def prepare(settings: Any) -> None:
    """What must happen once before the workers start (see the module's docstring)."""
    from yunnao.app import load_plugins, model_store, prepare_store, publish_new
    from yunnao.registry.identity import tokens
    from yunnao.registry.publishing import Publisher
    from yunnao.registry.store import RegistryStore

    engine = prepare_store(settings)
    try:
        key = tokens.load_or_create_key(settings.key_path)
        store = RegistryStore(engine, settings.node_id)
        store.ensure_node(title=settings.node_title, public_key=tokens.public_key_text(key))
        models = model_store(settings)
        if not settings.mlflow_tracking_uri:
            models.experiment_id()  # creates the embedded MLflow database
        if settings.publish_plugins:
            publish_new(Publisher(store, models), load_plugins(settings))
    finally:
        engine.dispose()


def in_child(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child and wait for it; its exit code (0: it returned; 2:
    it raised a ``ClickException``, whose message it printed; 1: anything else)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException as exc:
            if hasattr(exc, "format_message"):
                print(f"Error: {exc.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
                code = 2
            else:
                traceback.print_exc()
                code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class Supervisor:
    """Keep ``workers`` forked processes running ``serve(sock)`` until told to stop."""

    def __init__(
        self, sock: socket.socket, workers: int, serve: Callable[[socket.socket], None]
    ) -> None:
        self.sock = sock
        self.workers = workers
        self.serve = serve
        self.children: dict[int, int] = {}  # pid -> worker number
        self.stopping: int | None = None  # the signal that asked to stop

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for number in range(self.workers):
            self._spawn(number)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            number = self.children.pop(pid, None)
            if number is None:
                continue
            if self.stopping is None:
                log.warning(
                    "worker %d (pid %d) exited (%s); starting it again",
                    number,
                    pid,
                    os.waitstatus_to_exitcode(status),
                )
                time.sleep(RESTART_DELAY)
                if self.stopping is None:
                    self._spawn(number)
        self.sock.close()

    def _spawn(self, number: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)  # the server installs its own
                _stop_with(parent)
                self.serve(self.sock)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = number

    def _stop(self, sig: int, _frame: Any) -> None:
        first = self.stopping is None
        self.stopping = sig
        if first:
            log.info("stopping %d workers", len(self.children))
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if sig == signal.SIGTERM or first else sig)


def _stop_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the supervisor dies, even by
    SIGKILL (Linux; elsewhere a worker outlives a killed supervisor)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took hold
        os._exit(0)
