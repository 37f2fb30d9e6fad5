"""Item 6: job callbacks cannot be aimed inside the network or starve others, and a job
belongs to its caller (the subject with its issuer), not to a subject name.

Real ``yunnao serve`` processes with the test plugin (``sd.qd.yunnao-rt``), real HTTP
servers on loopback as callback targets, and a real OpenID Connect provider.
"""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cascade_support import until
from tests.realservers.oidc import OidcProvider
from tests.realservers.yunnao_node import YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR
from yunnao.registry.identity import tokens

pytestmark = pytest.mark.slow

NODE = "sd.qd"
NAMESPACE = "sd.qd.yunnao-rt"  # <node>.<plugin>
PLUGIN = str(RT_PLUGIN_DIR / "yunnao_rt")
ASYNC = {"Prefer": "respond-async"}


def _node(cwd: Path, *args: str, **env: str) -> YunnaoProcess:
    base = {"YUNNAO_NODE_ID": NODE, "YUNNAO_PLUGINS": "false"}
    return YunnaoProcess(cwd, "--plugin", PLUGIN, "--publish-plugins", *args, env={**base, **env})


class Target:
    """A callback target on loopback: records what arrives; a slow one holds each
    request open until released (or until its client hangs up)."""

    def __init__(self, *, slow: bool = False) -> None:
        self.slow = slow
        self.received: list[dict[str, Any]] = []
        self.held = 0  # requests being held open now, their client still waiting
        self.abandoned = 0  # requests whose client gave up waiting and hung up
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.on_receive: Any = None
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with target.lock:
                    target.received.append(body)
                if target.on_receive is not None:
                    target.on_receive(body)
                if target.slow:
                    target._hold(self.connection)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with self.lock:
            self.held += 1
        try:
            while not self.release.is_set():
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and not conn.recv(1, socket.MSG_PEEK):
                    with self.lock:
                        self.abandoned += 1  # the client gave up and hung up
                    return
        finally:
            with self.lock:
                self.held -= 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/done"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for t in made:
        t.close()


def _submit(url: str, callback: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/invoke/{NAMESPACE}/greet",
        json={"input": {"name": "cb"}, "callback_url": callback},
        headers={**ASYNC, **(headers or {})},
    )


def _jobs(node: YunnaoProcess) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{node.cwd / 'var' / 'registry.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT id, callback_url FROM job ORDER BY created_at").fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------- a node with an allow-list


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    idp = OidcProvider(tmp_path_factory.mktemp("cb-oidc")).start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, provider: OidcProvider) -> Iterator[Any]:
    """Callbacks to loopback allowed by the operator (the targets run there); single
    sign-on through the provider."""
    proc = _node(
        tmp_path_factory.mktemp("cb-node"),
        YUNNAO_CALLBACK_ALLOW="127.0.0.1",
        YUNNAO_OIDC_ISSUER=provider.issuer,
        YUNNAO_JOB_WORKERS="2",
    ).start(timeout=180)
    try:
        yield proc
    finally:
        proc.stop()


def test_slow_callback_targets_do_not_delay_other_callers(
    node: YunnaoProcess, targets: list[Target]
) -> None:
    slow, fast = Target(slow=True), Target()
    targets += [slow, fast]
    # What the slow target was doing at the moment the fast one got its callback.
    when_fast_arrived: list[tuple[int, int]] = []
    fast.on_receive = lambda body: when_fast_arrived.append((slow.held, slow.abandoned))
    for _ in range(6):
        assert _submit(node.url, slow.url).status_code == 202
    until(lambda: slow.held >= 1, 30, "the slow target to be holding a callback")
    job = _submit(node.url, fast.url)
    assert job.status_code == 202, job.text
    until(lambda: fast.received, 60, "the fast target's callback")
    assert fast.received[0]["id"] == job.json()["id"]
    # It arrived while the slow target was still holding callbacks open, before the
    # node had given up on any of them: a slow target delays only its own callbacks.
    held, abandoned = when_fast_arrived[0]
    assert held >= 1 and abandoned == 0, when_fast_arrived
    slow.release.set()


def test_a_job_belongs_to_its_subject_and_issuer(
    node: YunnaoProcess, provider: OidcProvider, targets: list[Target]
) -> None:
    """The node's token for ``alice`` and the identity provider's ``alice`` are two
    callers: neither sees the other's jobs."""
    key = tokens.load_or_create_key(node.cwd / "var" / "node_key.pem")
    local = tokens.issue(
        key, node_id=NODE, subject="alice", role="consumer", scopes=[NODE], ttl=timedelta(hours=1)
    )
    local_auth = {"Authorization": f"Bearer {local}"}
    sso_auth = {"Authorization": f"Bearer {provider.token('alice', role='consumer', node=NODE)}"}
    mine = {}
    for who, auth in (("local", local_auth), ("sso", sso_auth)):
        resp = httpx.post(
            f"{node.url}/v1/invoke/{NAMESPACE}/greet",
            json={"input": {"name": who}},
            headers={**ASYNC, **auth},
        )
        assert resp.status_code == 202, resp.text
        mine[who] = resp.headers["location"]
    for who, auth, other in (("local", local_auth, "sso"), ("sso", sso_auth, "local")):
        own = httpx.get(node.url + mine[who], headers=auth)
        assert own.status_code == 200, own.text
        theirs = httpx.get(node.url + mine[other], headers=auth)
        assert theirs.status_code == 404, theirs.text
        assert theirs.headers["content-type"].startswith("application/problem+json")
        assert "no job" in theirs.json()["detail"]
        assert "output" not in theirs.json()
    # Nothing changed: each job is still its owner's.
    assert httpx.get(node.url + mine["sso"], headers=sso_auth).status_code == 200


# ---------------------------------------------------------------- a node without one


def _problem(resp: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert field in [e["field"] for e in body.get("errors", [])], body
    return body


INSIDE = (
    "http://127.0.0.1:{port}/done",  # loopback
    "http://localhost:{port}/done",  # a name for it, known only once resolved
    "http://2130706433:{port}/done",  # 127.0.0.1 as one number
    "http://[::ffff:127.0.0.1]:{port}/done",  # in IPv6 clothing
    "http://[::1]:{port}/done",
    "http://0.0.0.0:{port}/done",
    "http://169.254.169.254/latest/meta-data/iam/",  # cloud metadata
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.20.30.40/hook",  # private networks
    "http://192.168.1.1/hook",
    "http://user:secret@93.184.215.14/hook",  # credentials in the URL
)


def test_callbacks_into_the_network_are_refused_when_queued_and_when_delivered(
    tmp_path: Path, targets: list[Target]
) -> None:
    receiver = Target()
    targets.append(receiver)
    port = receiver.server.server_port
    # Queued while the operator allowed loopback, with no worker to run it yet.
    allowed = _node(tmp_path, YUNNAO_CALLBACK_ALLOW="127.0.0.1", YUNNAO_JOB_WORKERS="0")
    allowed.start(timeout=180)
    try:
        queued = _submit(allowed.url, receiver.url)
        assert queued.status_code == 202, queued.text
    finally:
        allowed.stop()
    # The operator withdraws the exception; the node runs the job and would call back.
    node = _node(tmp_path, YUNNAO_JOB_WORKERS="1")
    node.start(timeout=180)
    try:
        location = node.url + queued.headers["location"]
        job = until(
            lambda: (j := httpx.get(location).json())["callback"]["status"] != "pending" and j,
            60,
            "the callback's delivery to be decided",
        )
        assert job["status"] == "succeeded"
        assert job["callback"]["status"] == "failed", job
        assert "loopback" in job["callback"]["error"], job
        assert receiver.received == []  # no request was sent

        # Anyone asking now is refused at once, and no job is queued.
        before = _jobs(node)
        for template in INSIDE:
            url = template.format(port=port)
            body = _problem(_submit(node.url, url), 422, "callback_url")
            assert "callback_url" in body["detail"], body
        assert _jobs(node) == before
        assert receiver.received == []
    finally:
        node.stop()
