"""Leadership: exactly one process per store runs the store-wide loops.

Several processes may serve one store: ``yunnao serve --workers N`` on one machine, or
gateways on several machines sharing one PostgreSQL. Most of a node's work is per
request and needs no coordination, but a few loops must run once per store (the
replication loops, the publish-job runner, the usage rollup, compaction, the probe
tallies). :class:`Leadership` runs them in whichever process holds the store's leader
lock, and keeps the others trying to take it:

- on PostgreSQL the lock is a session-level ``pg_try_advisory_lock`` held on a
  connection of its own (:class:`AdvisoryLock`); the server releases it when that
  connection ends, so when the process or its machine dies;
- on SQLite it is an ``fcntl.flock`` on a file beside the database
  (:class:`FileLock`); the kernel releases it when the process dies.

A process that is not the leader tries again every ``retry`` seconds, so a survivor
takes over within a few seconds of the leader's death. The leader checks its lock every
``check`` seconds (a PostgreSQL connection can break): when it is lost, the loops are
cancelled and the process goes back to trying. Who holds the lock is readable by every
process (:meth:`Leadership.describe`, shown in ``/readyz``'s details).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import sqlalchemy as sa

log = logging.getLogger("yunnao.leadership")

Task = Callable[[], Awaitable[Any]]

# Arbitrary constant naming the leader lock among PostgreSQL advisory locks (one per
# database: a store is one database).
_PG_LEADER_LOCK = 7_305_826_100


def this_process() -> str:
    """How a process names itself as a lock holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lock(Protocol):
    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process now holds it."""
        ...

    def still_held(self) -> bool:
        """Is the lock this process took still its own (False: lost, step down)."""
        ...

    def release(self) -> None:
        """Give the lock up (safe to call when not held)."""
        ...

    def holder(self) -> str | None:
        """Who holds the lock now (``host:pid since ...``), None when nobody does."""
        ...


class FileLock:
    """An exclusive ``flock`` on ``path`` (beside a SQLite database). The file holds the
    holder's name for the others to read; the lock, not the file, decides."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.name} since {_now()}".encode(), 0)
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None  # a flock lasts as long as its open file

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            # A second open file conflicts even with this process's own lock.
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 400, 0).decode(errors="replace") or "?"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it (the file names the last holder)
        finally:
            os.close(fd)


class AdvisoryLock:
    """A session-level PostgreSQL advisory lock, held on a connection outside the
    engine's pool (so it is never handed to a request), named by its
    ``application_name`` for the others to read."""

    def __init__(self, engine: sa.Engine, name: str, key: int = _PG_LEADER_LOCK) -> None:
        self.pooled = engine  # for reading who holds it
        self.engine = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
        self.name = name
        self.key = key
        self._conn: sa.Connection | None = None

    def _label(self) -> str:
        return f"yunnao leader {self.name} since {_now()}"[:63]

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return True
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
            if not got.scalar():
                conn.close()
                return False
            conn.execute(sa.text("SELECT set_config('application_name', :n, false)"),
                         {"n": self._label()})  # fmt: skip
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return True

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            self.release()
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()

    def holder(self) -> str | None:
        high, low = self.key >> 32, self.key & 0xFFFFFFFF
        with self.pooled.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT a.application_name FROM pg_locks l "
                    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high "
                    "AND l.objid = :low AND l.objsubid = 1 AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"high": high, "low": low},
            ).first()
        if row is None:
            return None
        return (row[0] or "?").removeprefix("yunnao leader ")


class AlwaysLeader:
    """An in-memory store has one process by definition."""

    def __init__(self, name: str) -> None:
        self.name = name

    def try_acquire(self) -> bool:
        return True

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> str | None:
        return self.name


def leader_lock(engine: sa.Engine, name: str | None = None) -> Lock:
    """The store's leader lock, as this process (``name``, default ``host:pid``)."""
    name = name or this_process()
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine, name)
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return AlwaysLeader(name)
    return FileLock(Path(database).resolve().with_name(Path(database).name + ".leader"), name)


class Leadership:
    """Run ``duties`` (name -> task) while this process holds ``lock``."""

    def __init__(
        self,
        lock: Lock,
        duties: Mapping[str, Task],
        *,
        retry: float = 2.0,
        check: float = 5.0,
    ) -> None:
        self.lock = lock
        self.duties = dict(duties)
        self.retry = retry
        self.check = check
        self.held = False
        self.since: str | None = None

    async def run(self) -> None:
        """Until cancelled: take the lock when free, run the duties while it is held."""
        try:
            while True:
                try:
                    got = await anyio.to_thread.run_sync(self.lock.try_acquire)
                except Exception as exc:  # the store is down, say: try again
                    log.warning("could not try the leader lock: %s", exc)
                    got = False
                if got:
                    await self._lead()
                await anyio.sleep(self.retry)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.lock.release)

    async def _lead(self) -> None:
        self.held, self.since = True, _now()
        log.info("this process leads the store: %s", ", ".join(self.duties) or "no duties")
        try:
            async with anyio.create_task_group() as tg:
                for task in self.duties.values():
                    tg.start_soon(task)
                while await anyio.to_thread.run_sync(self.lock.still_held):
                    await anyio.sleep(self.check)
                log.warning("this process lost the leader lock; its loops stop")
                tg.cancel_scope.cancel()
        finally:
            self.held, self.since = False, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.lock.release)

    def describe(self) -> dict[str, Any]:
        """Which process leads, for operators (``/readyz``'s details)."""
        try:
            holder = self.lock.holder()
        except Exception as exc:
            holder = f"unknown ({type(exc).__name__})"
        return {
            "duties": list(self.duties),
            "this_process": this_process(),
            "leader": self.held,
            "holder": holder,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
