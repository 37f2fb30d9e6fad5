"""``yunnao access`` against a real ``yunnao serve`` node, run as its own process with
nothing but the node's URL and a token: a consumer asks, the department's author lists
and approves (with an expiry), another request is refused with a reason, and each
requester reads the decision with ``mine``. The node's state is checked over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from yunnao.registry.identity import tokens

pytestmark = pytest.mark.slow

NODE = "sd.qd"
NS = f"{NODE}.env"
OTHER = f"{NODE}.office"
REF = f"{NS}/noise-check"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[YunnaoProcess, Path]]:
    root = tmp_path_factory.mktemp("access-cli")
    proc = YunnaoProcess(root / "node", "--node-id", NODE)
    proc.start(timeout=120)
    try:
        yield proc, root
    finally:
        proc.stop()


def _token(proc: YunnaoProcess, role: str, subject: str, scope: str) -> str:
    key = tokens.load_or_create_key(proc.cwd / "var" / "node_key.pem")
    return tokens.issue(
        key, node_id=NODE, subject=subject, role=role, scopes=[scope],
        ttl=timedelta(hours=1), department=scope if role == "consumer" else None,
    )  # fmt: skip


def _run(proc: YunnaoProcess, root: Path, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNNAO_")}
    env["YUNNAO_CONFIG_DIR"] = str(root / "config")
    env["COLUMNS"] = "200"  # a wide terminal: the tables unfolded
    return subprocess.run(
        [YUNNAO, "access", *args, "--url", proc.url, "--token", token],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_ask_list_approve_refuse_and_read_the_decision(
    served: tuple[YunnaoProcess, Path],
) -> None:
    proc, root = served
    admin = _token(proc, "admin", "root", NODE)
    body = {
        "version": "1.0.0",
        "title": "噪声检测",
        "classification": "internal",
        "access": {"invoke": {"departments": [NS]}},
    }
    resp = httpx.post(
        f"{proc.url}/v1/capabilities/{REF}/versions",
        json=body,
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert resp.status_code == 201, resp.text
    wang = _token(proc, "consumer", "wang", OTHER)
    zhao = _token(proc, "consumer", "zhao", OTHER)
    author = _token(proc, "author", "li", NS)

    asked = _run(proc, root, wang, "request", REF, "--reason", "季度报表需要", "--json")
    assert asked.returncode == 0, asked.stderr
    first = json.loads(asked.stdout)
    assert first["status"] == "pending" and first["requester"] == "wang"
    # A second pending request is refused, with the node's reason.
    again = _run(proc, root, wang, "request", REF, "--reason", "x")
    assert again.returncode != 0 and "409" in again.stderr and "pending" in again.stderr
    other = json.loads(_run(proc, root, zhao, "request", REF, "--reason", "试用", "--json").stdout)

    listed = _run(proc, root, author, "list")
    assert listed.returncode == 0, listed.stderr
    assert (
        first["id"] in listed.stdout and "待审批" in listed.stdout and "噪声检测" in listed.stdout
    )
    # A consumer may not list the department's requests.
    assert _run(proc, root, wang, "list").returncode != 0

    done = _run(proc, root, author, "approve", first["id"], "--expires", "30d")
    assert done.returncode == 0, done.stderr
    assert "已批准" in done.stdout and "until" in done.stdout
    refused = _run(proc, root, author, "refuse", other["id"], "--reason", "请先走数据共享流程")
    assert refused.returncode == 0, refused.stderr

    cap = httpx.get(
        f"{proc.url}/v1/capabilities/{REF}", headers={"Authorization": f"Bearer {admin}"}
    )
    grants = cap.json()["access"]["grants"]
    assert [(g["subject"], g["node"]) for g in grants] == [("wang", NODE)]
    assert grants[0]["expires_at"]

    mine = _run(proc, root, wang, "mine", REF, "--json")
    assert [m["status"] for m in json.loads(mine.stdout)["items"]] == ["approved"]
    theirs = _run(proc, root, zhao, "mine", REF)
    assert theirs.returncode == 0, theirs.stderr
    assert "未通过" in theirs.stdout and "请先走数据共享流程" in theirs.stdout
    assert "--reason" in _run(proc, root, author, "refuse", "--help").stdout
