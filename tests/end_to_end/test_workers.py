"""``yunnao serve --workers 2`` on SQLite: two processes of one node on one port and one
store behave as one node.

A request lands on whichever process accepts its connection; a test reaches a chosen
process by keeping a connection open to it (:func:`pinned`: a one-connection client
whose ``/readyz`` names the process). The in-process ``pid`` capability answers with the
pid of the process that ran it.

    sd.qd (2 workers) ── pulls ── sd.qd.shinan (one process)
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
from tests.realservers.yunnao_node import YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
NS = f"{CITY}.yunnao-rt"
GREET = {"input": {"name": "李雷"}}


@dataclass
class Worker:
    """A client whose one kept-alive connection is served by the process ``name``."""

    name: str  # host:pid
    client: httpx.Client

    @property
    def pid(self) -> int:
        return int(self.name.rsplit(":", 1)[1])

    def still_here(self) -> None:
        assert leadership(self.client)["this_process"] == self.name


def leadership(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    return resp.json()["details"]["leadership"]


def pinned(url: str, avoid: str | None = None, tries: int = 300) -> Worker:
    """A client connected to some worker (other than ``avoid``)."""
    for _ in range(tries):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.Client(base_url=url, timeout=120, limits=limits)
        name = leadership(client)["this_process"]
        if name != avoid:
            return Worker(name, client)
        client.close()
    raise AssertionError(f"no connection reached a worker other than {avoid}")


def two_workers(url: str) -> tuple[Worker, Worker]:
    a = pinned(url)
    return a, pinned(url, avoid=a.name)


@dataclass
class Setup:
    city: Site
    shinan: Site

    def author(self) -> dict[str, str]:
        return self.city.auth("author", scopes=[NS])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("workers")
    city = Site(
        CITY,
        YunnaoProcess(
            root / CITY,
            "--node-id", CITY, "--workers", "2", "--plugin", str(RT_PLUGIN_DIR / "yunnao_rt"),
            # Retention on: one more duty of the leader's (pruning nothing here).
            env={"YUNNAO_PLUGINS": "false", "YUNNAO_USAGE_KEEP_DAYS": "30",
                 "YUNNAO_AUDIT_KEEP_DAYS": "365",
                 # A pinned connection must outlast the test's slowest pause (uvicorn's
                 # default closes an idle one after 5 s, and the next request then
                 # reaches whichever worker accepts the new connection).
                 "YUNNAO_KEEP_ALIVE": "600"},
        ),
    )  # fmt: skip
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN))
    seen: set[str] = set()
    try:
        city.proc.start(timeout=120)
        shinan.proc.start(timeout=120)
        a, b = two_workers(city.url)  # both workers are up
        for worker in (a, b):
            seen.add(worker.name)
            worker.client.close()
        setup = Setup(city, shinan)
        resp = httpx.post(f"{city.url}/v1/publish", json={"capability": "greet"},
                          headers=setup.author(), timeout=120)  # fmt: skip
        assert resp.status_code == 201, resp.text
        yield setup
    finally:
        shinan.proc.stop()
        stopped = city.proc.stop()
        assert stopped, city.proc.output()[-3000:]
        for name in seen:  # every worker stopped with the node
            with pytest.raises(ProcessLookupError):
                os.kill(int(name.rsplit(":", 1)[1]), 0)


def test_both_processes_answer_and_exactly_one_leads(setup: Setup) -> None:
    a, b = two_workers(setup.city.url)
    views = [leadership(w.client) for w in (a, b)]
    assert [v["leader"] for v in views].count(True) == 1
    leader = next(w for w, v in zip((a, b), views, strict=True) if v["leader"])
    for view in views:  # both name the same holder: the leading process
        assert view["holder"].startswith(f"{leader.name} since ")
        assert {"replication", "publish jobs", "usage rollup", "retention"} <= set(view["duties"])
    for worker in (a, b):
        resp = worker.client.post(f"/v1/invoke/{NS}/greet", json=GREET)
        assert resp.status_code == 200, resp.text
        assert "李雷" in str(resp.json()["output"])
        worker.still_here()


def test_a_publish_at_one_is_found_and_invoked_at_the_other(setup: Setup) -> None:
    a, b = two_workers(setup.city.url)
    resp = a.client.post("/v1/publish", json={"capability": "pid"}, headers=setup.author())
    assert resp.status_code == 201, resp.text
    found = b.client.get("/v1/capabilities", params={"q": "process"})
    assert f"{NS}/pid" in [i["id"] for i in found.json()["items"]]
    ran = b.client.post(f"/v1/invoke/{NS}/pid", json={"input": {}})
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"] == b.pid  # run by the other process, from the fresh entry
    a.still_here()
    b.still_here()

    # A withdrawal at one refuses calls at the other (its cache follows the change log).
    for status in ("deprecated", "retired"):
        moved = a.client.post(f"/v1/capabilities/{NS}/pid/versions/1.0.0/lifecycle",
                              json={"status": status}, headers=setup.author())  # fmt: skip
        assert moved.status_code == 200, moved.text
    until(
        lambda: b.client.post(f"/v1/invoke/{NS}/pid", json={"input": {}}).status_code >= 400,
        30,
        "the retired version refused at the other worker",
    )
    b.still_here()


def test_each_job_runs_exactly_once(setup: Setup) -> None:
    a, b = two_workers(setup.city.url)
    caller = setup.city.auth("consumer", "job-owner")
    async_call = {**caller, "Prefer": "respond-async"}
    ids = []
    for i in range(8):
        worker = (a, b)[i % 2]
        resp = worker.client.post(f"/v1/invoke/{NS}/greet", json=GREET, headers=async_call)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])

    def done(job_id: str) -> dict[str, Any] | None:
        job = b.client.get(f"/v1/jobs/{job_id}", headers=caller).json()
        return job if job["status"] in ("succeeded", "failed") else None

    for job_id in ids:
        job = until(lambda job_id=job_id: done(job_id), 60, f"job {job_id} finished")
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1  # claimed by one worker of the two, once
    a.still_here()


def test_a_rate_limit_holds_across_workers(setup: Setup) -> None:
    made = httpx.post(
        f"{setup.city.url}/v1/keys",
        json={"name": "limited", "role": "consumer", "rate_limit": "3/min"},
        headers=setup.city.auth("admin"),
    )
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    a, b = two_workers(setup.city.url)
    codes = [
        (a, b)[i % 2].client.post(f"/v1/invoke/{NS}/greet", json=GREET, headers=key).status_code
        for i in range(6)
    ]
    assert sorted(codes) == [200, 200, 200, 429, 429, 429], codes  # 3 in all, not 3 each
    a.still_here()
    b.still_here()


def peer(site: Site, peer_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{site.url}/v1/cascade/peers", headers=site.auth(), timeout=30)
    assert resp.status_code == 200, resp.text
    return next(p for p in resp.json()["items"] if p["id"] == peer_id)


def test_one_replication_loop_applies_a_childs_entries_once(setup: Setup) -> None:
    city, shinan = setup.city, setup.shinan
    for name in ("flow", "parking", "signals"):
        shinan.publish("traffic", name, classification="public")
    city.cascade("add-child", SHINAN, "--child-url", shinan.url)
    shinan.cascade("add-parent", CITY, "--parent-url", city.url)
    until(lambda: peer(city, SHINAN)["checkpoint"] >= peer(city, SHINAN)["head"] > 0, 60,
          "the city caught up with the district")  # fmt: skip
    a, b = two_workers(city.url)
    for worker in (a, b):
        found = worker.client.get("/v1/capabilities", params={"node": SHINAN}).json()
        assert sorted(i["id"] for i in found["items"]) == [
            f"{SHINAN}.traffic/{n}" for n in ("flow", "parking", "signals")
        ]
    status = peer(city, SHINAN)
    # Two loops pulling the same feed would collide on the checkpoint (and say so here).
    assert status["failures"] == 0 and status["last_error"] is None, status
    assert status["rejected"] == 0
    feed = httpx.get(f"{city.url}/v1/cascade/changes", params={"since": 0, "limit": 1000},
                     headers=city.auth(), timeout=30)  # fmt: skip
    assert feed.status_code == 200, feed.text
    keys = [item.get("key") for item in feed.json()["items"]]
    for n in ("flow", "parking", "signals"):  # re-exposed once each
        assert sum(1 for k in keys if k and k.endswith(f"traffic/{n}")) == 1, keys


def test_killing_the_leader_hands_leadership_to_a_survivor(setup: Setup) -> None:
    city, shinan = setup.city, setup.shinan
    a = pinned(city.url)
    holder = leadership(a.client)["holder"]
    dead = int(holder.split()[0].rsplit(":", 1)[1])
    a.client.close()
    os.kill(dead, signal.SIGKILL)

    def new_leader() -> str | None:
        with httpx.Client(base_url=city.url, timeout=30) as client:
            name = leadership(client)["holder"] or ""
        return name if name and not name.startswith(f"{holder.split()[0]} ") else None

    taken = until(new_leader, 60, "another process took the leader lock")
    alive = int(taken.split()[0].rsplit(":", 1)[1])
    os.kill(alive, 0)  # a live process holds it
    # The replication loop runs again, in the new leader.
    shinan.publish("traffic", "after-handover", classification="public")
    until(
        lambda: city.get(f"{SHINAN}.traffic/after-handover").status_code == 200,
        60,
        "a district's entry replicated after the handover",
    )
