"""Two ``yunnao serve`` processes with the same node id and key on one PostgreSQL store
(and one MLflow and artifact location: the same data directory, as on a shared volume)
behave as one node, whichever of them a load balancer sends a request to.

The in-process ``pid`` capability answers with the pid of the gateway that ran it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NODE = "sd.qd"
NS = f"{NODE}.yunnao-rt"
GREET = {"input": {"name": "韩梅梅"}}


@dataclass
class Pair:
    a: Site
    b: Site

    def author(self) -> dict[str, str]:
        return self.a.auth("author", scopes=[NS])


def leadership(site: Site) -> dict[str, Any]:
    resp = httpx.get(f"{site.url}/readyz", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["details"]["leadership"]


@pytest.fixture(scope="module")
def pair(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    import subprocess

    cwd = tmp_path_factory.mktemp("two-gateways")  # one ./var: node key, MLflow, artifacts
    url = postgres.create_database(f"two_gateways_{os.getpid()}")
    subprocess.run([YUNNAO, "db", "upgrade", "--database-url", url], cwd=cwd, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    args = ["--node-id", NODE, "--database-url", url, "--plugin", str(RT_PLUGIN_DIR / "yunnao_rt")]
    env = {"YUNNAO_PLUGINS": "false"}
    a = Site(NODE, YunnaoProcess(cwd, *args, env=env))
    b = Site(NODE, YunnaoProcess(cwd, *args, env=env))
    try:
        a.proc.start(timeout=120)  # the first one creates the key and the embedded MLflow
        b.proc.start(timeout=120)
        pair = Pair(a, b)
        resp = httpx.post(f"{a.url}/v1/publish", json={"capability": "greet"},
                          headers=pair.author(), timeout=120)  # fmt: skip
        assert resp.status_code == 201, resp.text
        yield pair
    finally:
        for site in (a, b):
            site.proc.stop()


def test_a_publish_at_one_gateway_is_found_and_invoked_at_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    resp = httpx.post(f"{a.url}/v1/publish", json={"capability": "pid"}, headers=pair.author(),
                      timeout=120)  # fmt: skip
    assert resp.status_code == 201, resp.text
    found = httpx.get(f"{b.url}/v1/capabilities", params={"q": "process"}, timeout=30)
    assert f"{NS}/pid" in [i["id"] for i in found.json()["items"]]
    ran = httpx.post(f"{b.url}/v1/invoke/{NS}/pid", json={"input": {}}, timeout=60)
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"] == b.proc.proc.pid  # type: ignore[union-attr]

    # A withdrawal at one refuses calls at the other.
    for status in ("deprecated", "retired"):
        moved = httpx.post(f"{a.url}/v1/capabilities/{NS}/pid/versions/1.0.0/lifecycle",
                           json={"status": status}, headers=pair.author())  # fmt: skip
        assert moved.status_code == 200, moved.text
    until(
        lambda: httpx.post(f"{b.url}/v1/invoke/{NS}/pid", json={"input": {}}).status_code >= 400,
        30,
        "the retired version refused at the other gateway",
    )
    refused = httpx.post(f"{b.url}/v1/invoke/{NS}/pid", json={"input": {}})
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_a_job_submitted_at_one_is_read_at_the_other_and_runs_once(pair: Pair) -> None:
    a, b = pair.a, pair.b
    caller = a.auth("consumer", "job-owner")
    ids = []
    for site in (a, b, a, b, a, b):
        resp = httpx.post(f"{site.url}/v1/invoke/{NS}/greet", json=GREET,
                          headers={**caller, "Prefer": "respond-async"})  # fmt: skip
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])

    def done(job_id: str) -> dict[str, Any] | None:
        job = httpx.get(f"{b.url}/v1/jobs/{job_id}", headers=caller).json()
        return job if job["status"] in ("succeeded", "failed") else None

    for job_id in ids:
        job = until(lambda job_id=job_id: done(job_id), 60, f"job {job_id} finished")
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert httpx.get(f"{a.url}/v1/jobs/{job_id}", headers=caller).json() == job


def test_api_keys_and_rate_limits_hold_across_both(pair: Pair) -> None:
    a, b = pair.a, pair.b
    made = httpx.post(
        f"{a.url}/v1/keys",
        json={"name": "limited", "role": "consumer", "rate_limit": "3/min"},
        headers=a.auth("admin"),
    )
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    codes = [
        httpx.post(f"{site.url}/v1/invoke/{NS}/greet", json=GREET, headers=key).status_code
        for site in (b, a, b, a, b, a)
    ]
    assert sorted(codes) == [200, 200, 200, 429, 429, 429], codes  # 3 in all, not 3 each
    assert codes[0] == 200  # a key made at one gateway is good at the other

    revoked = httpx.delete(f"{a.url}/v1/keys/{made.json()['id']}", headers=a.auth("admin"))
    assert revoked.status_code == 200, revoked.text
    until(
        lambda: httpx.get(f"{b.url}/v1/jobs/nope", headers=key).status_code == 401,
        30,
        "the key revoked at one gateway refused at the other",
    )


def test_the_audit_chain_written_by_both_verifies(pair: Pair) -> None:
    for site in (pair.a, pair.b):
        resp = httpx.get(f"{site.url}/v1/audit/verify", headers=site.auth("auditor"), timeout=60)
        assert resp.status_code == 200, resp.text
        verdict = resp.json()
        assert verdict["ok"] is True and verdict["events"] > 10, verdict


def test_one_of_them_leads_and_the_other_takes_over_when_it_dies(pair: Pair) -> None:
    a, b = pair.a, pair.b
    views = {site.proc.proc.pid: leadership(site) for site in (a, b)}  # type: ignore[union-attr]
    assert [v["leader"] for v in views.values()].count(True) == 1
    leader_pid = next(pid for pid, v in views.items() if v["leader"])
    assert {v["holder"].split()[0] for v in views.values()} == {
        next(v["this_process"] for v in views.values() if v["leader"])
    }
    assert "replication" in next(iter(views.values()))["duties"]
    leader, survivor = (a, b) if a.proc.proc.pid == leader_pid else (b, a)  # type: ignore[union-attr]
    os.kill(leader_pid, signal.SIGKILL)
    leader.proc.proc.wait()  # type: ignore[union-attr]
    until(lambda: leadership(survivor)["leader"], 60, "the survivor took the leader lock")
    assert leadership(survivor)["holder"].startswith(leadership(survivor)["this_process"] + " ")
