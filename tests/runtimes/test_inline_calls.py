"""The in-process runtime's fast path: a version whose calls are short runs on the
event loop, without the hop to a worker thread; one that overruns the budget goes back
to the threads, and returns only after ever more quick calls in a row. Either way every
call is still audited and usage-recorded, and a capability's failures are still
problems."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, assert_problem
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.runtimes.adapters.base import Target
from yunnao.runtimes.adapters.inprocess import (
    INLINE_AFTER,
    INLINE_BACKOFF,
    INLINE_STALL,
    InProcessRuntime,
)
from yunnao.settings import Settings

INVOKE = f"/v1/invoke/{NAMESPACE}"


def _slug(name: str) -> str:
    return Target(NAMESPACE, name, "1.0.0", "inprocess").slug


class Node:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def runtime(self) -> InProcessRuntime:
        return self.client.app.state.invoker.gateway.runtimes.get("inprocess")  # type: ignore[attr-defined]

    def call(self, capability: str, /, **input: Any) -> Any:
        return self.client.post(f"{INVOKE}/{capability}", json={"input": input})

    def inline(self) -> list[str]:
        return self.runtime.describe()["inline"]

    def count(self, table: str, where: str) -> int:
        state = self.client.app.state  # type: ignore[attr-defined]
        state.invoker.gateway.usage.flush()
        state.audit.flush()
        with state.invoker.gateway.store.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar()


def _node(tmp: Path, **runtime: Any) -> Iterator[Node]:
    settings = Settings(
        node_id=NODE_ID, data_dir=tmp, plugins=False, runtimes={"inprocess": runtime}
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        for cap in rt_capabilities().values():
            app.state.catalog.publisher.publish(cap, namespace=NAMESPACE)
        yield Node(client)


# A budget generous enough that a quick call on a loaded machine still fits it, and an
# overrun (INLINE_STALL times it) that no quick call comes near.
BUDGET_MS = 50


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from _node(tmp_path, inline_budget_ms=BUDGET_MS)


def test_short_calls_run_on_the_event_loop_and_are_still_audited_and_recorded(
    node: Node,
) -> None:
    names = [f"n{i}" for i in range(INLINE_AFTER + 10)]
    for name in names:
        resp = node.call("greet", name=name)
        assert resp.status_code == 200, resp.text
        assert resp.json()["output"] == f"你好, {name}."
    assert _slug("greet") in node.inline()
    # Every call, in a thread or on the loop, left its usage record and audit event.
    assert node.count("usage_record", "name = 'greet' AND status = 200") == len(names)
    assert node.count("audit_event", "action = 'invoke' AND status = 200") == len(names)


def test_failures_on_the_event_loop_are_still_problems(node: Node) -> None:
    for _ in range(INLINE_AFTER):
        assert node.call("greet", name="x").status_code == 200
    assert _slug("greet") in node.inline()
    # The capability's own validation: 422 naming the field.
    assert_problem(node.call("greet", name=""), 422, field="input.name")
    for _ in range(INLINE_AFTER):
        assert_problem(node.call("boom", message="hush"), 500)
    assert _slug("boom") in node.inline()
    # On the event loop too, what it raised becomes a 500 with an error id, and its
    # message never reaches the caller.
    body = assert_problem(node.call("boom", message="hush"), 500)
    assert "secret" not in body["detail"] and body["error_id"]
    assert node.count("usage_record", "name = 'boom' AND status = 500") == INLINE_AFTER + 1


def test_a_call_over_the_budget_sends_its_version_back_to_threads(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(INLINE_AFTER):
        assert node.call("sleepy", seconds=0).status_code == 200
    assert _slug("sleepy") in node.inline()
    with caplog.at_level(logging.WARNING, logger="yunnao.runtimes.inprocess"):
        # Over INLINE_STALL times the budget, on the event loop once.
        resp = node.call("sleepy", seconds=INLINE_STALL * BUDGET_MS / 1000 + 0.2)
    assert resp.status_code == 200, resp.text
    assert _slug("sleepy") not in node.inline()
    assert any("worker threads from now on" in r.getMessage() for r in caplog.records)
    # From now on a slow call of it runs in a worker thread: the node answers other
    # calls while it runs.
    for _ in range(INLINE_AFTER):
        assert node.call("greet", name="x").status_code == 200
    slow_done = threading.Event()

    def slow() -> None:
        node.call("sleepy", seconds=3)
        slow_done.set()

    runner = threading.Thread(target=slow)
    runner.start()
    try:
        for _ in range(5):
            assert node.call("greet", name="y").status_code == 200
        assert not slow_done.is_set()
        # As many quick calls as it took the first time: still kept in threads.
        for _ in range(INLINE_AFTER):
            assert node.call("sleepy", seconds=0).status_code == 200
        assert _slug("sleepy") not in node.inline()
    finally:
        runner.join()
    assert node.count("usage_record", "name = 'sleepy'") == 2 * INLINE_AFTER + 2


def test_a_budget_of_zero_keeps_every_call_in_threads(tmp_path: Path) -> None:
    for node in _node(tmp_path, inline_budget_ms=0):
        for _ in range(INLINE_AFTER + 5):
            assert node.call("greet", name="x").status_code == 200
        assert node.inline() == []


def test_a_version_sent_back_returns_after_ever_more_quick_calls(node: Node) -> None:
    """A loaded machine can push a quick capability over the budget once: it does not
    pay for that for good, while one that runs long again is given fewer chances."""
    slow = INLINE_STALL * BUDGET_MS / 1000 + 0.05
    for _ in range(INLINE_AFTER):
        assert node.call("sleepy", seconds=0).status_code == 200
    assert node.call("sleepy", seconds=slow).status_code == 200  # on the loop: sent back
    assert _slug("sleepy") not in node.inline()
    assert node.runtime.describe()["sent_back"] == {_slug("sleepy"): 1}
    for _ in range(INLINE_AFTER * INLINE_BACKOFF - 1):
        assert node.call("sleepy", seconds=0).status_code == 200
    assert _slug("sleepy") not in node.inline()
    assert node.call("sleepy", seconds=0).status_code == 200
    assert _slug("sleepy") in node.inline()  # back on the loop
    assert node.call("sleepy", seconds=slow).status_code == 200  # and sent back again
    assert _slug("sleepy") not in node.inline()
    for _ in range(INLINE_AFTER * INLINE_BACKOFF):
        assert node.call("sleepy", seconds=0).status_code == 200
    assert _slug("sleepy") not in node.inline()  # now it takes 8 times as many
    assert node.runtime._needed(_slug("sleepy")) == INLINE_AFTER * INLINE_BACKOFF**2
