"""Webhooks end to end: a real ``yunnao serve`` node and a receiver in its own process
that verifies every Standard Webhooks signature. While the receiver is down the node
keeps the deliveries (also across a restart of the node); once it is up it gets every
event once, in order, each with its own id; a test and a redelivery arrive; the
delivery log shows the failed attempts. Subscribing an internal address is refused,
and only a namespace's writers (or the node's operators) subscribe it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.realservers.webhook_receiver import Receiver
from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess

pytestmark = pytest.mark.slow

NODE = "sd.qd"
NS = f"{NODE}.traffic"
ENV = {
    "YUNNAO_PLUGINS": "false",
    "YUNNAO_CALLBACK_ALLOW": "127.0.0.1",  # the receiver is on this machine
    "YUNNAO_WEBHOOK_RETRY_BASE": "0.2",
    "YUNNAO_WEBHOOK_RETRY_MAX": "1",
}
OUT = {"type": "object", "properties": {"flow": {"type": "integer"}}, "required": ["flow"]}


def token(cwd: Path, role: str, *scopes: str) -> dict[str, str]:
    done = subprocess.run(
        [YUNNAO, "token", "create", "--node-id", NODE, "--role", role,
         *(a for s in scopes for a in ("--namespace", s))],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}


def wait_for(what: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_receiver_down_for_a_while_gets_every_event_in_order(tmp_path: Path) -> None:
    cwd = tmp_path / "node"
    node = YunnaoProcess(cwd, "--node-id", NODE, env=ENV).start(timeout=60)
    receiver: Receiver | None = None
    try:
        author = token(cwd, "author", NS)
        port = Receiver("whsec_x", tmp_path / "x").port  # its address, while it is down
        url = f"http://127.0.0.1:{port}/hooks/yunnao"

        # Who may subscribe what, and where to.
        events = ["version.published", "version.deprecated", "version.retired"]
        body = {"scope": NS, "url": url, "description": "交通应用", "events": events}
        refused = httpx.post(f"{node.url}/v1/webhooks", json=body,
                             headers=token(cwd, "author", f"{NODE}.water"))  # fmt: skip
        assert refused.status_code == 403, refused.text
        consumer = httpx.post(f"{node.url}/v1/webhooks", json=body,
                              headers=token(cwd, "consumer", NS))  # fmt: skip
        assert consumer.status_code == 403, consumer.text
        metadata = "http://169.254.169.254/latest/meta-data"  # the cloud's metadata service
        inside = httpx.post(f"{node.url}/v1/webhooks", headers=author,
                            json={**body, "url": metadata})  # fmt: skip
        assert inside.status_code == 422 and inside.json()["errors"][0]["field"] == "url"
        unknown = httpx.post(f"{node.url}/v1/webhooks", headers=author,
                             json={**body, "events": ["version.exploded"]})  # fmt: skip
        assert unknown.status_code == 422 and "version.exploded" in unknown.text

        made = httpx.post(f"{node.url}/v1/webhooks", json=body, headers=author)
        assert made.status_code == 201, made.text
        hook = made.json()
        assert hook["secret"].startswith("whsec_")
        shown = httpx.get(f"{node.url}/v1/webhooks/{hook['id']}", headers=author).json()
        assert shown["secret"] is None  # shown once

        def publish(version: str) -> None:
            resp = httpx.post(
                f"{node.url}/v1/capabilities/{NS}/flow/versions", headers=author,
                json={"version": version, "title": "路口车流量", "output_schema": OUT},
            )  # fmt: skip
            assert resp.status_code == 201, resp.text

        # The receiver is down: the node keeps trying (and logging) the first delivery.
        publish("1.0.0")
        publish("1.1.0")
        moved = httpx.post(f"{node.url}/v1/capabilities/{NS}/flow/versions/1.0.0/lifecycle",
                           json={"status": "deprecated"}, headers=author)  # fmt: skip
        assert moved.status_code == 200, moved.text
        log_url = f"{node.url}/v1/webhooks/{hook['id']}/deliveries"
        wait_for(lambda: httpx.get(log_url, headers=author).json()["items"][-1]["attempts"] >= 2)

        # ... across a restart of the node, too.
        assert node.stop(), node.output()[-3000:]
        node.start(timeout=60)
        publish("1.2.0")
        pending = httpx.get(log_url, params={"state": "pending"}, headers=author).json()
        assert len(pending["items"]) == 4

        receiver = Receiver(hook["secret"], tmp_path / "received.jsonl", port=port).start()
        wait_for(lambda: len(receiver.received()) >= 4)
        got = receiver.received()
        assert all(r["verified"] for r in got), got
        assert [(r["type"], r["data"]["version"]) for r in got] == [
            ("version.published", "1.0.0"),
            ("version.published", "1.1.0"),
            ("version.deprecated", "1.0.0"),
            ("version.published", "1.2.0"),
        ]
        assert len({r["id"] for r in got}) == 4  # one id per event, each delivered once
        assert got[0]["data"]["path"] == f"/v1/capabilities/{NS}/flow/versions/1.0.0"

        # The log: the first delivery failed before it went through, each attempt kept.
        first = got[0]["id"]
        entry = httpx.get(f"{log_url}/{first}", headers=author).json()
        assert entry["state"] == "delivered" and entry["attempts"] >= 3
        assert entry["log"][0]["status"] is None and "ConnectError" in entry["log"][0]["error"]
        assert entry["log"][-1]["status"] == 204

        # A test event arrives; then a redelivery, with the same id (on purpose).
        tested = httpx.post(f"{node.url}/v1/webhooks/{hook['id']}/test", headers=author)
        assert tested.status_code == 202, tested.text
        wait_for(lambda: len(receiver.received()) >= 5)
        again = httpx.post(f"{log_url}/{first}/redeliver", headers=author)
        assert again.status_code == 202, again.text
        wait_for(lambda: len(receiver.received()) >= 6)
        later = receiver.received()[4:]
        assert [r["type"] for r in later] == ["webhook.test", "version.published"]
        assert later[0]["id"] == tested.json()["id"]
        assert later[1]["id"] == first and all(r["verified"] for r in later)

        # Removed: nothing more is sent.
        assert (
            httpx.delete(f"{node.url}/v1/webhooks/{hook['id']}", headers=author).status_code == 204
        )
        publish("1.3.0")
        time.sleep(2)  # what would have been sent is not: give it the time it would take
        assert len(receiver.received()) == 6
    finally:
        if receiver is not None:
            receiver.stop()
        node.stop()


def test_the_cli_adds_lists_tests_and_removes(tmp_path: Path) -> None:
    cwd = tmp_path / "node"
    node = YunnaoProcess(cwd, "--node-id", NODE, env=ENV).start(timeout=60)
    receiver = Receiver("whsec_x", tmp_path / "x")
    try:
        operator = token(cwd, "operator", NODE)["Authorization"].split(" ", 1)[1]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            args = (YUNNAO, "webhook", *args, "--url", node.url, "--token", operator)
            env = {**os.environ, "COLUMNS": "200"}  # a wide terminal: ids on one line
            return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)

        added = cli("add", NODE, receiver.url, "--event", "peer.unreachable",
                    "--event", "cascade.entry_arrived", "--json")  # fmt: skip
        assert added.returncode == 0, added.stderr
        made = json.loads(added.stdout)
        receiver.secret = made["secret"]
        receiver.start()
        listed = cli("list")
        assert listed.returncode == 0 and made["id"] in listed.stdout
        assert "peer.reachable" in listed.stdout  # every event type is named
        assert cli("test", made["id"]).returncode == 0
        wait_for(lambda: len(receiver.received()) == 1)
        assert receiver.received()[0]["type"] == "webhook.test"
        assert receiver.received()[0]["verified"]
        shown = cli("deliveries", made["id"])
        assert (
            shown.returncode == 0 and "webhook.test" in shown.stdout and "delivered" in shown.stdout
        )
        assert cli("remove", made["id"]).returncode == 0
        assert made["id"] not in cli("list").stdout
    finally:
        receiver.stop()
        node.stop()
