"""The invocation gateway over HTTP: POST /v1/invoke, its errors, async jobs, usage
records, metrics and runtime bindings, with capabilities published through a real
(embedded) MLflow and run by the in-process runtime."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, assert_problem
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.registry import db
from yunnao.registry.identity import tokens
from yunnao.settings import Settings

INVOKE = f"/v1/invoke/{NAMESPACE}"


class GatewayNode:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def auth(self, role: str = "consumer", *scopes: str, subject: str = "app-1") -> dict[str, str]:
        key = tokens.load_or_create_key(self.settings.key_path)
        token = tokens.issue(
            key,
            node_id=self.settings.node_id,
            subject=subject,
            role=role,
            scopes=list(scopes or (NODE_ID,)),
            ttl=timedelta(hours=1),
        )
        return {"Authorization": f"Bearer {token}"}

    def invoke(self, name: str, input: dict[str, Any], **body: Any) -> Any:
        headers = body.pop("headers", {})
        return self.client.post(f"{INVOKE}/{name}", json={"input": input, **body}, headers=headers)

    def usage(self) -> list[Any]:
        self.client.app.state.invoker.gateway.usage.flush()  # type: ignore[attr-defined]
        engine = db.create_engine(self.settings.db_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text("SELECT * FROM usage_record ORDER BY id")))
        finally:
            engine.dispose()


def _start(tmp: Path, **settings: Any) -> Iterator[GatewayNode]:
    config = Settings(node_id=NODE_ID, data_dir=tmp, plugins=False, **settings)
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        publisher = app.state.catalog.publisher
        for cap in rt_capabilities().values():
            publisher.publish(cap, namespace=NAMESPACE)
        yield GatewayNode(client, config)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayNode]:
    """A node with the test capabilities published (MLflow models, in-process runtime)."""
    # Callbacks go to a receiver on loopback: allowed here by the operator's allow-list.
    yield from _start(tmp_path_factory.mktemp("gw"), job_workers=2, callback_allow=["127.0.0.1"])


def test_invoke_returns_the_output_with_the_version_and_request_id(gw: GatewayNode) -> None:
    resp = gw.invoke("greet", {"name": "李雷"}, headers={"X-Request-Id": "trace-42"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["output"] == "你好, 李雷."
    assert body["capability"] == f"{NAMESPACE}/greet@1.0.0"
    assert body["request_id"] == "trace-42" == resp.headers["x-request-id"]
    assert body["latency_ms"] >= 0
    # Versions, latest and the MLflow alias set on publish all reach the same version.
    for ref in ("greet@1.0.0", "greet@latest", "greet@production"):
        again = gw.invoke(ref, {"name": "a", "excited": True})
        assert again.json()["output"] == "你好, a!", (ref, again.text)


def test_tensors_go_in_and_out_as_nested_lists(gw: GatewayNode) -> None:
    resp = gw.invoke("double", {"x": [1, 2.5]})
    assert resp.json()["output"] == {"y": [2.0, 5.0]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {}}, "input.name"),
        ({"input": {"name": ""}}, "input.name"),
        ({"input": {"name": "a", "nme": "b"}}, "input.nme"),
        ({"input": {"name": "a", "excited": "very"}}, "input.excited"),
        ({"input": [1, 2]}, "input"),
        ({"inputs": {"name": "a"}}, "inputs"),
        ({"input": {"name": "a"}, "timeout": -1}, "timeout"),
        ({"input": {"name": "a"}, "timeout": 10_000}, "timeout"),
    ],
)
def test_bad_input_is_422_naming_the_field(gw: GatewayNode, body: dict, field: str) -> None:
    resp = gw.client.post(f"{INVOKE}/greet", json=body)
    assert_problem(resp, 422, field=field)


def test_unknown_or_hidden_capabilities_are_404(gw: GatewayNode) -> None:
    assert_problem(gw.invoke("nothing", {}), 404)
    assert_problem(gw.invoke("greet@9.9.9", {"name": "a"}), 404)
    assert_problem(gw.invoke("greet@no-such-alias", {"name": "a"}), 404)
    headers = {"Content-Type": "application/json"}
    assert_problem(gw.client.post(f"{INVOKE}/greet", content=b"{", headers=headers), 400)


def test_a_failing_capability_is_500_with_an_error_id_and_no_detail(
    gw: GatewayNode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="yunnao.gateway"):
        resp = gw.invoke("boom", {"message": "db password is hunter2"})
    body = assert_problem(resp, 500, slug="capability-failed")
    assert "hunter2" not in resp.text and "secret" not in resp.text
    error_id = body["error_id"]
    assert error_id in body["detail"]
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert logged and "hunter2" in logged[0]  # the operator can find what happened
    assert gw.invoke("greet", {"name": "b"}).status_code == 200  # others keep working


def test_a_slow_call_times_out_with_504_and_does_not_wedge_the_node(gw: GatewayNode) -> None:
    started = time.monotonic()
    resp = gw.invoke("sleepy", {"seconds": 3}, timeout=0.5)
    assert_problem(resp, 504, slug="timeout")
    assert time.monotonic() - started < 2.5
    assert gw.invoke("greet", {"name": "c"}).status_code == 200
    assert gw.invoke("sleepy", {"seconds": 0}).json()["output"] == 0


def test_lifecycle_decides_what_may_be_called(gw: GatewayNode) -> None:
    admin = gw.auth("admin")
    spec = {"version": "1.0.0", "title": "Old", "classification": "public"}
    assert (
        gw.client.post(
            f"/v1/capabilities/{NAMESPACE}/old/versions", json=spec, headers=admin
        ).status_code
        == 201
    )
    # Registered without a model or a plugin behind it: it cannot run here.
    assert_problem(gw.invoke("old", {}), 409, slug="not-deployable")
    lifecycle = f"/v1/capabilities/{NAMESPACE}/old/versions/1.0.0/lifecycle"
    for status in ("deprecated", "retired"):
        r = gw.client.post(lifecycle, json={"status": status}, headers=admin)
        assert r.status_code == 200, r.text
    assert_problem(gw.invoke("old@1.0.0", {}), 410, slug="gone")


def test_a_deprecated_version_still_answers_and_says_so(gw: GatewayNode) -> None:
    admin = gw.auth("admin")
    url = f"/v1/capabilities/{NAMESPACE}/pid/versions/1.0.0/lifecycle"
    assert gw.client.post(url, json={"status": "deprecated"}, headers=admin).status_code == 200
    try:
        resp = gw.invoke("pid", {})
        assert resp.status_code == 200 and resp.headers["deprecation"] == "true"
    finally:
        gw.client.post(url, json={"status": "published"}, headers=admin)


def test_an_operator_rebinds_a_version_without_republishing(gw: GatewayNode) -> None:
    url = f"/v1/capabilities/{NAMESPACE}/greet/versions/1.0.0/runtime"
    binding = {"type": "inprocess", "config": {"max_concurrency": 1}}
    assert_problem(gw.client.put(url, json=binding), 401)
    assert_problem(gw.client.put(url, json=binding, headers=gw.auth("consumer")), 403)
    assert_problem(
        gw.client.put(url, json={"type": "warp-drive"}, headers=gw.auth("operator")),
        422,
        field="type",
    )
    resp = gw.client.put(url, json=binding, headers=gw.auth("operator"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["runtime"] == binding
    shown = gw.client.get(f"/v1/capabilities/{NAMESPACE}/greet/versions/1.0.0").json()
    assert shown["runtime"] == binding
    assert gw.invoke("greet", {"name": "d"}).status_code == 200
    deployed = gw.client.app.state.invoker.gateway.runtimes.describe()  # type: ignore[attr-defined]
    assert deployed["started"]["inprocess"]["deployed"]


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        size = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(size)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on loopback collecting callback POSTs."""
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/done", _Receiver.received
    finally:
        server.shutdown()


def _wait_job(gw: GatewayNode, location: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = gw.client.get(location, headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {job}")


def test_async_calls_queue_a_job_and_call_back(
    gw: GatewayNode, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    who = gw.auth("consumer", subject="app-async")
    resp = gw.client.post(
        f"{INVOKE}/greet",
        json={"input": {"name": "e"}, "callback_url": url},
        headers={**who, "Prefer": "respond-async"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.headers["preference-applied"] == "respond-async"
    location = resp.headers["location"]
    assert resp.json()["status"] in ("queued", "running", "succeeded")
    job = _wait_job(gw, location, who)
    assert job["status"] == "succeeded" and job["output"] == "你好, e."
    # Someone else's job is nobody's business.
    assert_problem(gw.client.get(location, headers=gw.auth(subject="intruder")), 404)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received and received[0]["id"] == job["id"] and received[0]["output"] == "你好, e."

    failed = gw.client.post(
        f"{INVOKE}/boom", json={"input": {"message": "x"}}, headers={"Prefer": "respond-async"}
    )
    job = _wait_job(gw, failed.headers["location"], {})
    assert job["status"] == "failed"
    assert job["error"]["status"] == 500 and job["error"]["error_id"]


def test_async_input_is_checked_before_queueing(gw: GatewayNode) -> None:
    resp = gw.client.post(
        f"{INVOKE}/greet", json={"input": {"nom": "x"}}, headers={"Prefer": "respond-async"}
    )
    assert_problem(resp, 422, field="input.name")
    resp = gw.client.post(
        f"{INVOKE}/greet", json={"input": {"name": "x"}, "callback_url": "http://127.0.0.1:9/"}
    )
    assert_problem(resp, 422, field="callback_url")


def test_every_call_leaves_a_usage_record_and_metrics(gw: GatewayNode) -> None:
    who = gw.auth("consumer", subject="usage-app")
    gw.invoke("greet", {"name": "f"}, headers=who)
    gw.invoke("greet", {}, headers=who)
    gw.invoke("boom", {"message": "m"}, headers=who)
    mine = [r for r in gw.usage() if r.caller == "usage-app"]
    assert [(r.name, r.status) for r in mine] == [("greet", 200), ("greet", 422), ("boom", 500)]
    assert all(r.version == "1.0.0" and r.runtime == "inprocess" for r in mine)
    assert mine[2].error_id and mine[0].latency_ms > 0
    assert gw.client.get("/metrics", headers=gw.auth("consumer")).status_code == 403
    text = gw.client.get("/metrics", headers=gw.auth("operator")).text
    assert (
        'yunnao_invocations_total{capability="sd.qd.rt/boom",mode="sync",runtime="inprocess",'
        'status="500",version="1.0.0"}' in text
    )
    assert "yunnao_invocation_seconds_bucket" in text
    assert 'yunnao_runtime_up{runtime="inprocess"} 1.0' in text


def test_the_process_executor_runs_calls_in_other_processes(tmp_path: Path) -> None:
    runtimes = {"inprocess": {"executor": "process", "processes": 1}}
    for node in _start(tmp_path, runtimes=runtimes, job_workers=0):
        pid = node.invoke("pid", {}, timeout=60)
        assert pid.status_code == 200, pid.text
        assert pid.json()["output"] != os.getpid()
        assert_problem(node.invoke("boom", {"message": "m"}, timeout=60), 500)
        assert_problem(node.invoke("greet", {}, timeout=60), 422, field="input.name")
        assert_problem(node.invoke("sleepy", {"seconds": 30}, timeout=1), 504)
        # The stuck worker was replaced: the next call is served by a fresh one.
        again = node.invoke("pid", {}, timeout=60)
        assert again.status_code == 200 and again.json()["output"] != pid.json()["output"]


def test_a_stuck_thread_does_not_exhaust_the_thread_pool(tmp_path: Path) -> None:
    """With one worker thread, a call stuck past its timeout would block every later
    call if the node kept waiting for that thread; it starts a fresh pool instead."""
    for node in _start(tmp_path, runtimes={"inprocess": {"threads": 1}}, job_workers=0):
        assert_problem(node.invoke("sleepy", {"seconds": 20}, timeout=0.5), 504)
        started = time.monotonic()
        assert node.invoke("greet", {"name": "g"}, timeout=5).status_code == 200
        assert time.monotonic() - started < 5


def test_an_api_key_invokes_only_its_capabilities(gw: GatewayNode) -> None:
    made = gw.client.post(
        "/v1/keys",
        json={"name": "dashboard", "capabilities": [f"{NAMESPACE}/greet"]},
        headers=gw.auth("admin"),
    )
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    ok = gw.invoke("greet", {"name": "韩梅梅"}, headers=key)
    assert ok.status_code == 200, ok.text
    body = assert_problem(gw.invoke("double", {"x": [1, 2]}, headers=key), 403)
    assert f"{NAMESPACE}/greet" in body["detail"]
    # Asynchronous calls keep the limit too.
    job = gw.client.post(
        f"{INVOKE}/double",
        json={"input": {"x": [1, 2]}},
        headers={**key, "Prefer": "respond-async"},
    )
    assert_problem(job, 403)
    # The key's subject is the caller of record.
    assert any(r.caller == "app:dashboard" and r.status == 200 for r in gw.usage())


def test_usage_statistics_per_day_by_capability_department_and_node(gw: GatewayNode) -> None:
    for caller in ("stats-a", "stats-b", "stats-b"):
        assert gw.invoke("greet", {"name": "x"}, headers=gw.auth(subject=caller)).status_code == 200
    assert gw.invoke("greet", {"nom": "x"}, headers=gw.auth(subject="stats-a")).status_code == 422
    gw.usage()  # flushes the buffered records
    auditor = gw.auth("auditor", NODE_ID)
    report = gw.client.get("/v1/usage", params={"by": "capability"}, headers=auditor).json()
    greet = next(r for r in report["items"] if r["key"] == f"{NAMESPACE}/greet")
    assert greet["calls"] >= 4 and greet["refused"] >= 1 and greet["ok"] >= 3
    assert greet["callers"] >= 2 and 0 < greet["p50_ms"] <= greet["p99_ms"]
    by_dept = gw.client.get("/v1/usage", params={"by": "department"}, headers=auditor).json()
    assert NAMESPACE in {r["key"] for r in by_dept["items"]}
    by_node = gw.client.get("/v1/usage", params={"by": "node"}, headers=auditor).json()
    assert {r["key"] for r in by_node["items"]} == {NODE_ID}
    # A token sees the namespaces it covers, no others; anonymous callers see nothing.
    other = gw.auth("auditor", f"{NODE_ID}.water")
    assert gw.client.get("/v1/usage", headers=other).json()["items"] == []
    assert_problem(gw.client.get("/v1/usage"), 401)
    assert_problem(
        gw.client.get(
            "/v1/usage", params={"since": "2026-12-01", "until": "2026-11-01"}, headers=auditor
        ),
        400,
    )
