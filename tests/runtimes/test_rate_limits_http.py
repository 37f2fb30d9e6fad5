"""Rate limits as callers meet them: 429 problems with Retry-After, per signed-in
caller, per anonymous address, per API key and per capability; and one bucket shared by
two ``yunnao serve`` processes on one PostgreSQL store."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import assert_problem, bearer
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.settings import Settings

NODE = "sd.qd"


class Limited:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def auth(self, subject: str, role: str = "consumer") -> dict[str, str]:
        return bearer(self.settings.key_path, NODE, role, NODE, subject=subject)

    def call(self, name: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
        return self.client.post(
            f"/v1/invoke/{NAMESPACE}/{name}",
            json={"input": {"name": "a"}},
            headers={**(headers or {}), **extra},
        )


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    """A node where each signed-in caller may call 3 times an hour and each anonymous
    address twice; capabilities `open-N` are public copies of one model's code."""
    tmp: Path = tmp_path_factory.mktemp("limited")
    config = Settings(
        node_id=NODE,
        data_dir=tmp,
        plugins=False,
        rate_limit="3/hour",
        rate_limit_anonymous="2/hour",
        job_workers=1,
    )
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        publisher = app.state.catalog.publisher
        greet = rt_capabilities()["greet"]
        version = publisher.publish(greet, namespace=NAMESPACE).version
        node = Limited(client, config)
        for i in range(4):
            # A version may name only its own model: log the same code under each name.
            copy = dataclasses.replace(greet, name=f"open-{i}")
            model_uri = publisher.models.log(copy, namespace=NAMESPACE, node=NODE).model_uri
            body = {
                "version": "1.0.0",
                "title": f"open {i}",
                "classification": "public",
                "input_schema": version.input_schema,
                "runtime": version.runtime.model_dump(),
                "model_uri": model_uri,
            }
            resp = client.post(
                f"/v1/capabilities/{NAMESPACE}/open-{i}/versions",
                json=body,
                headers=node.auth("admin", "admin"),
            )
            assert resp.status_code == 201, resp.text
        yield node


def _refused(resp: Any, *, within: tuple[int, int]) -> str:
    problem = assert_problem(resp, 429)
    wait = int(resp.headers["retry-after"])
    assert within[0] <= wait <= within[1], wait
    return problem["detail"]


def test_each_signed_in_caller_has_a_bucket_of_their_own(limited: Limited) -> None:
    alice = limited.auth("alice")
    assert limited.call("open-0", alice).status_code == 200
    # An asynchronous call counts like any other.
    queued = limited.call("open-0", alice, Prefer="respond-async")
    assert queued.status_code == 202, queued.text
    assert limited.call("open-1", alice).status_code == 200
    refused = limited.call("open-0", alice)
    # 3 an hour: the next token comes 1200 s after the first was spent.
    detail = _refused(refused, within=(1100, 1200))
    assert "your rate limit (3/hour)" in detail
    assert limited.call("open-0", limited.auth("bob")).status_code == 200


def test_anonymous_callers_are_limited_by_address(limited: Limited) -> None:
    assert limited.call("open-0").status_code == 200
    assert limited.call("open-1").status_code == 200
    _refused(limited.call("open-0"), within=(1700, 1800))


def test_an_api_keys_own_limit_overrides_the_default(limited: Limited) -> None:
    made = limited.client.post(
        "/v1/keys",
        json={"name": "batch", "rate_limit": "1/day"},
        headers=limited.auth("root", "admin"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["rate_limit"] == "1/day"
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert limited.call("open-0", key).status_code == 200
    _refused(limited.call("open-0", key), within=(86000, 86400))
    bad = limited.client.post(
        "/v1/keys", json={"name": "x", "rate_limit": "lots"}, headers=limited.auth("root", "admin")
    )
    assert_problem(bad, 422, field="rate_limit")


def test_a_capability_limit_counts_every_caller_together(limited: Limited) -> None:
    path = f"/v1/capabilities/{NAMESPACE}/open-2"
    resp = limited.client.patch(
        path, json={"access": {"rate_limit": "2/hour"}}, headers=limited.auth("root", "admin")
    )
    assert resp.status_code == 200, resp.text
    carol, dave = limited.auth("carol"), limited.auth("dave")
    assert limited.call("open-2", carol).status_code == 200
    assert limited.call("open-2", dave).status_code == 200
    detail = _refused(limited.call("open-2", carol), within=(1700, 1800))
    assert f"rate limit of {NAMESPACE}/open-2 (2/hour)" in detail
    # All or nothing: the refused call did not spend carol's own tokens (2 of 3 left).
    assert limited.call("open-3", carol).status_code == 200
    assert limited.call("open-3", carol).status_code == 200
    assert "your rate limit" in _refused(limited.call("open-3", carol), within=(1, 1200))


# ---------------------------------------------------------------- two processes


@pytest.mark.slow
@pytest.mark.postgres
def test_two_serve_processes_on_one_postgres_store_share_a_bucket(
    postgres: Any, tmp_path: Path
) -> None:
    from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
    from tests.runtime_support import RT_PLUGIN_DIR

    url = postgres.create_database("shared_limits")
    upgrade = [YUNNAO, "db", "upgrade", "--database-url", url]
    subprocess.run(upgrade, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    env = {"YUNNAO_NODE_ID": NODE, "YUNNAO_PLUGINS": "false", "YUNNAO_DATABASE_URL": url}
    plugin = str(RT_PLUGIN_DIR / "yunnao_rt")
    namespace = "sd.qd.yunnao-rt"
    first = YunnaoProcess(tmp_path, "--plugin", plugin, "--publish-plugins", env=env)
    second = YunnaoProcess(tmp_path, "--plugin", plugin, env=env)
    first.start(timeout=120)
    try:
        second.start(timeout=120)
        admin = bearer(tmp_path / "var" / "node_key.pem", NODE, "admin", NODE, subject="root")
        resp = httpx.patch(
            f"{first.url}/v1/capabilities/{namespace}/greet",
            json={"access": {"rate_limit": "4/hour"}},
            headers=admin,
        )
        assert resp.status_code == 200, resp.text
        statuses = []
        for i in range(8):
            node = (first, second)[i % 2]
            call = httpx.post(
                f"{node.url}/v1/invoke/{namespace}/greet",
                json={"input": {"name": str(i)}},
                headers=admin,
                timeout=60,
            )
            statuses.append(call.status_code)
            if call.status_code == 429:
                assert int(call.headers["retry-after"]) >= 1
        # Four calls an hour across both processes, not four each.
        assert statuses == [200] * 4 + [429] * 4, statuses
    finally:
        second.stop()
        first.stop()
        postgres.drop_database("shared_limits")
