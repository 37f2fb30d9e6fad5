"""Retries without duplicates, against a real ``yunnao serve`` node: 20 concurrent
submissions of one job with one ``Idempotency-Key`` make one job; 20 concurrent calls
with one key run once and the others get that answer; a key reused with another body
is 422; a failed call forgets its key; keys are per caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.cascade_support import Site
from tests.realservers.yunnao_node import YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR
from yunnao.registry import db

pytestmark = pytest.mark.slow

NODE = "sd.qd"
NS = f"{NODE}.yunnao-rt"
SLEEPY = f"/v1/invoke/{NS}/sleepy"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("idempotency")
    site = Site(NODE, YunnaoProcess(
        root, "--node-id", NODE, "--plugin", str(RT_PLUGIN_DIR / "yunnao_rt"),
        env={"YUNNAO_PLUGINS": "false"},
    ))  # fmt: skip
    site.proc.start(timeout=120)
    try:
        for cap in ("sleepy", "greet"):
            resp = httpx.post(f"{site.url}/v1/publish", json={"capability": cap},
                              headers=site.auth("author", scopes=[NS]), timeout=120)  # fmt: skip
            assert resp.status_code == 201, resp.text
        yield site
    finally:
        site.proc.stop()


async def _twenty(site: Site, key: str, body: dict, **headers: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as client:
        return await asyncio.gather(*(
            client.post(SLEEPY, json=body, headers={"Idempotency-Key": key, **headers})
            for _ in range(20)
        ))  # fmt: skip


def test_twenty_concurrent_job_submissions_with_one_key_make_one_job(site: Site) -> None:
    body = {"input": {"seconds": 0.2}}
    answers = asyncio.run(_twenty(site, "job-7f3a", body, Prefer="respond-async"))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 19
    engine = db.create_engine(f"sqlite:///{site.data_dir / 'registry.db'}")
    try:
        with engine.connect() as conn:
            jobs = conn.execute(sa.text("SELECT id FROM job")).scalars().all()
    finally:
        engine.dispose()
    assert jobs == list(ids)


def test_twenty_concurrent_calls_with_one_key_run_once(site: Site) -> None:
    answers = asyncio.run(_twenty(site, "call-0001", {"input": {"seconds": 0.3}}))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    # One run: every answer is that run's (its request id and latency), byte for byte.
    assert len({r.content for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 19
    first = answers[0].json()
    assert first["output"] == 0.3 and first["request_id"]

    # A retry later gets the same answer; the key with another body is refused.
    again = httpx.post(f"{site.url}{SLEEPY}", json={"input": {"seconds": 0.3}},
                       headers={"Idempotency-Key": "call-0001"})  # fmt: skip
    assert again.content == answers[0].content and again.headers["idempotent-replayed"] == "true"
    other = httpx.post(f"{site.url}{SLEEPY}", json={"input": {"seconds": 0.1}},
                       headers={"Idempotency-Key": "call-0001"})  # fmt: skip
    assert other.status_code == 422, other.text
    problem = other.json()
    assert problem["type"].endswith("/idempotency-key-reused")
    assert problem["errors"][0]["field"] == "Idempotency-Key"


def test_a_failed_call_forgets_its_key_and_keys_are_per_caller(site: Site) -> None:
    url = f"{site.url}/v1/invoke/{NS}/greet"
    bad = httpx.post(url, json={"input": {"name": ""}}, headers={"Idempotency-Key": "k-1"})
    assert bad.status_code == 422
    # Not remembered: the corrected retry with the same key runs.
    good = httpx.post(url, json={"input": {"name": "韩梅梅"}}, headers={"Idempotency-Key": "k-1"})
    assert good.status_code == 200 and "韩梅梅" in good.text
    assert "idempotent-replayed" not in good.headers
    # Another caller's k-1 is another key: it runs, with its own input.
    signed = {"Idempotency-Key": "k-1", **site.auth("consumer", "wang")}
    theirs = httpx.post(url, json={"input": {"name": "李雷"}}, headers=signed)
    assert theirs.status_code == 200 and "李雷" in theirs.text
    assert "idempotent-replayed" not in theirs.headers

    too_long = httpx.post(
        url, json={"input": {"name": "x"}}, headers={"Idempotency-Key": "k" * 256}
    )
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"
