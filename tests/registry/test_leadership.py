"""The leader lock of the processes sharing one store: one holder at a time, readable by
every process, released when its holder dies, taken over by a survivor; and the change
watch that lets one process's caches follow another's writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from tests.conftest import NODE_ID
from yunnao.registry import db, schemas
from yunnao.registry.leadership import AdvisoryLock, FileLock, Leadership, leader_lock
from yunnao.registry.store import RegistryStore
from yunnao.registry.store_watch import ChangeWatch


def test_one_file_lock_holder_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "registry.db.leader"
    first, second = FileLock(path, "host:1"), FileLock(path, "host:2")
    assert second.holder() is None  # nobody yet
    assert first.try_acquire() and first.still_held()
    assert not second.try_acquire()
    assert (second.holder() or "").startswith("host:1 since ")
    first.release()
    assert second.holder() is None  # the file still names host:1, but nobody holds it
    assert second.try_acquire()
    assert (first.holder() or "").startswith("host:2 since ")
    second.release()


def test_a_dead_holders_file_lock_is_free(tmp_path: Path) -> None:
    path = tmp_path / "registry.db.leader"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from yunnao.registry.leadership import FileLock\n"
        f"assert FileLock(Path({str(path)!r}), 'other:1').try_acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = FileLock(path, "me:2")
        assert not mine.try_acquire()
        os.kill(holder.pid, signal.SIGKILL)  # no chance to let go
        holder.wait()
        assert mine.try_acquire()
        mine.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_the_sqlite_lock_lies_beside_the_database(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    lock = leader_lock(engine, "host:9")
    assert isinstance(lock, FileLock) and lock.path == tmp_path / "registry.db.leader"
    engine.dispose()


@pytest.fixture
def pg_engine(postgres) -> Iterator[sa.Engine]:
    from tests.conftest import _fresh_pg_database

    name, url = _fresh_pg_database(postgres)
    engine = db.create_engine(url)
    yield engine
    engine.dispose()
    postgres.drop_database(name)


@pytest.mark.postgres
@pytest.mark.slow
def test_one_advisory_lock_holder_at_a_time(pg_engine: sa.Engine) -> None:
    first = leader_lock(pg_engine, "host-a:1")
    second = leader_lock(pg_engine, "host-b:2")
    assert isinstance(first, AdvisoryLock)
    assert second.holder() is None
    assert first.try_acquire() and first.still_held()
    assert not second.try_acquire()
    assert (second.holder() or "").startswith("host-a:1 since ")
    # The holder's session ends (its process died): the lock is free.
    assert first._conn is not None
    first._conn.invalidate()
    first._conn = None
    assert second.try_acquire()
    assert (first.holder() or "").startswith("host-b:2 since ")
    second.release()
    assert first.holder() is None


def test_a_survivor_takes_over_the_duties(tmp_path: Path) -> None:
    path = tmp_path / "registry.db.leader"
    started: list[str] = []

    def duty(name: str):
        async def run() -> None:
            started.append(name)
            await anyio.sleep_forever()

        return run

    a = Leadership(FileLock(path, "a:1"), {"replication": duty("a")}, retry=0.05, check=0.05)
    b = Leadership(FileLock(path, "b:2"), {"replication": duty("b")}, retry=0.05, check=0.05)

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            a_scope = anyio.CancelScope()

            async def run_a() -> None:
                with a_scope:
                    await a.run()

            tg.start_soon(run_a)
            while started != ["a"]:
                await anyio.sleep(0.01)
            tg.start_soon(b.run)
            await anyio.sleep(0.3)  # b keeps trying meanwhile, and must not start
            assert started == ["a"] and a.held and not b.held
            assert b.describe()["holder"].startswith("a:1 since ")
            assert b.describe()["duties"] == ["replication"]
            a_scope.cancel()  # the leader stops: its lock is released
            while started != ["a", "b"]:
                await anyio.sleep(0.01)
            assert b.held and not a.held
            tg.cancel_scope.cancel()

    anyio.run(scenario)


def test_the_change_watch_sees_another_processes_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    from yunnao.registry import migrate

    mine, theirs = db.create_engine(url), db.create_engine(url)
    migrate.upgrade(mine)
    here, there = RegistryStore(mine, NODE_ID), RegistryStore(theirs, NODE_ID)
    watch = ChangeWatch(here, mine)
    assert watch.poll() is False  # the first read only learns the head
    before = here.generation
    spec = schemas.PublishRequest(version="1.0.0", title="交通流量")
    there.publish(f"{NODE_ID}.traffic", "flow", spec)  # another process writes
    assert watch.poll() is True and here.generation == before + 1
    assert watch.poll() is False
    mine.dispose()
    theirs.dispose()
