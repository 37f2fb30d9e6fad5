"""Bindings that reach outside the node are an operator's decision, and a binding loop
between two nodes ends at once (issue 15, item 2).

An author used to be able to bind a version to the ``remote`` runtime pointing at the
node's own parent: one anonymous call then bounced between the two nodes until the
sockets ran out. Now an author gets 403 naming the binding's fields for anything that
names another host, URL, directory, cluster or node, and a loop an operator makes is
refused with 508 after one hop.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.attacks.conftest import CITY, SHINAN, Federation
from tests.cascade_support import Site, until

pytestmark = pytest.mark.slow

DEPT = "h2bind"  # this module's department at shinan
NS = f"{SHINAN}.{DEPT}"

# Bindings an author used to store: each names somewhere outside the node.
OUTSIDE = [
    pytest.param({"type": "remote", "config": {"node": CITY}}, ["type"], id="remote-to-parent"),
    pytest.param({"type": "remote", "config": {}}, ["type"], id="remote-empty"),
    pytest.param(
        {"type": "bentoml", "config": {"url": "http://10.0.0.7:3000"}},
        ["config.url"],
        id="bentoml-adopt-url",
    ),
    pytest.param(
        {"type": "bentoml", "config": {"service": "svc:Evil", "working_dir": "/"}},
        ["config.service", "config.working_dir"],
        id="bentoml-start",
    ),
    pytest.param(
        {"type": "rayserve", "config": {"address": "ray://10.0.0.8:10001"}},
        ["config.address"],
        id="ray-address",
    ),
    pytest.param(
        {"type": "triton", "config": {"url": "http://10.0.0.9:8000"}},
        ["config.url"],
        id="triton-url",
    ),
    pytest.param(
        {"type": "triton", "config": {"model": "other_department_model"}},
        ["config.model"],
        id="triton-passthrough-model",
    ),
]


def _author(site: Site, ns: str = NS) -> dict[str, str]:
    return site.auth("author", subject="dept-author", scopes=[ns], department=ns)


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status
    return body


def _version(site: Site, ref: str) -> httpx.Response:
    return httpx.get(f"{site.url}/v1/capabilities/{ref}/versions/1.0.0", headers=site.auth())


@pytest.mark.parametrize(("binding", "fields"), OUTSIDE)
def test_an_author_may_not_publish_a_binding_that_reaches_outside(
    federation: Federation, binding: dict[str, Any], fields: list[str]
) -> None:
    shinan = federation.shinan
    name = f"p-{uuid.uuid4().hex[:8]}"
    spec = {"version": "1.0.0", "title": "outside", "runtime": binding}
    resp = httpx.post(
        f"{shinan.url}/v1/capabilities/{NS}/{name}/versions", json=spec, headers=_author(shinan)
    )
    body = _problem(resp, 403)
    assert {e["field"] for e in body["errors"]} == {f"runtime.{f}" for f in fields}
    assert "operator" in body["detail"]
    # Nothing was stored.
    assert shinan.get(f"{NS}/{name}", headers=shinan.auth()).status_code == 404
    assert f"{NS}/{name}" not in shinan.contents(SHINAN)


@pytest.mark.parametrize(("binding", "fields"), OUTSIDE)
def test_an_author_may_not_rebind_a_version_outside_the_node(
    federation: Federation, binding: dict[str, Any], fields: list[str]
) -> None:
    shinan = federation.shinan
    name = f"r-{uuid.uuid4().hex[:8]}"
    shinan.publish(DEPT, name, classification="public")
    ref = f"{NS}/{name}"
    before = _version(shinan, ref).json()
    url = f"{shinan.url}/v1/capabilities/{ref}/versions/1.0.0/runtime"
    refused = [
        httpx.put(url, json=binding, headers=_author(shinan)),
        # An admin of the department is not an operator of the node either.
        httpx.put(url, json=binding, headers=shinan.auth("admin", scopes=[NS])),
    ]
    for resp in refused:
        body = _problem(resp, 403)
        assert {e["field"] for e in body["errors"]} == set(fields)
    after = _version(shinan, ref).json()
    assert after["runtime"] == before["runtime"] == {"type": "inprocess", "config": {}}
    assert after["content_hash"] == before["content_hash"]
    # Settings that only tune a runtime of the node stay the author's.
    tuned = {"type": "inprocess", "config": {"max_concurrency": 2}}
    assert httpx.put(url, json=tuned, headers=_author(shinan)).status_code == 200


def _invoke(site: Site, ref: str, request_id: str, **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{site.url}/v1/invoke/{ref}",
        json={"input": {}, "timeout": 5},
        headers={"X-Request-Id": request_id, **kw.pop("headers", {})},
        timeout=60,
        **kw,
    )


def test_a_loop_an_operator_binds_between_two_nodes_ends_with_508_after_one_hop(
    federation: Federation,
) -> None:
    city, shinan = federation.city, federation.shinan
    name = f"loop-{uuid.uuid4().hex[:8]}"
    shinan.publish(DEPT, name, classification="public")
    ref = f"{NS}/{name}"
    # The district's operator points the version at the city, which holds the replica
    # and forwards calls of it back to the district: a loop.
    operator = shinan.auth("operator", subject="ops")
    bound = httpx.put(
        f"{shinan.url}/v1/capabilities/{ref}/versions/1.0.0/runtime",
        json={"type": "remote", "config": {"node": CITY}},
        headers=operator,
    )
    assert bound.status_code == 200, bound.text
    until(lambda: city.get(ref).status_code == 200, 60, f"{ref} at the city")

    for site in (shinan, city):  # an anonymous caller, entering at either end
        rid = f"loop-{site.node_id}-{uuid.uuid4().hex[:8]}"
        resp = _invoke(site, ref, rid)
        body = _problem(resp, 508)
        assert body["type"].endswith("/loop-detected")
        assert SHINAN in body["detail"] and CITY in body["detail"]
        # One hop each way at most: every call this request caused is recorded, at
        # each node once, all refused with 508 (none still bouncing).
        until(lambda r=rid: shinan.usage_records(r) and city.usage_records(r), 10, "usage records")
        for node in (shinan, city):
            assert node.usage_records(rid) == [(NS, name, 508)]
