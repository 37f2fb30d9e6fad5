"""Restricted means the owning department and named grants (issue 15, item 9; grants by
subject and node, item 4).

A scope says where a role applies, not whose staff the caller is: a consumer scoped to
the whole city node is not a member of the police department. Real requests against the
city node of the shared federation (a real ``yunnao serve``).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.attacks.conftest import CITY, Federation
from tests.cascade_support import Site, until
from yunnao.registry.identity import assertions

pytestmark = pytest.mark.slow


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _publish(site: Site, namespace: str, name: str, **fields: Any) -> None:
    body = {"version": "1.0.0", "title": fields.pop("title", name), **fields}
    resp = httpx.post(
        f"{site.url}/v1/capabilities/{namespace}/{name}/versions", json=body, headers=site.auth()
    )
    assert resp.status_code == 201, resp.text


def _ids(site: Site, headers: dict[str, str], q: str) -> set[str]:
    resp = httpx.get(f"{site.url}/v1/capabilities", params={"q": q}, headers=headers)
    assert resp.status_code == 200, resp.text
    return {item["id"] for item in resp.json()["items"]}


def test_a_node_wide_consumer_of_another_department_neither_sees_nor_calls_restricted(
    federation: Federation,
) -> None:
    city = federation.city
    police = f"{CITY}.police"
    name = _unique("plates")
    _publish(city, police, name, classification="restricted", tags=[name])
    ref = f"{police}/{name}"
    # A consumer of the environment bureau, with a token scoped to the whole city node.
    env = city.auth("consumer", "env-analyst", scopes=[CITY], department=f"{CITY}.env")
    assert city.get(ref, headers=env).status_code == 404
    assert httpx.get(f"{city.url}/v1/capabilities/{ref}/versions", headers=env).status_code == 404
    called = httpx.post(f"{city.url}/v1/invoke/{ref}", json={"input": {}}, headers=env)
    assert called.status_code == 404, called.text
    assert ref not in _ids(city, env, name)
    # The same for a node-wide author and operator: scope is where a role applies.
    for role in ("author", "operator"):
        other = city.auth(role, f"{role}-x", scopes=[CITY], department=f"{CITY}.env")
        assert city.get(ref, headers=other).status_code == 404, role
        assert ref not in _ids(city, other, name), role

    # Members of the police department see it: by department claim, or by a scope at
    # or below its namespace.
    by_claim = city.auth("consumer", "officer", scopes=[CITY], department=police)
    by_scope = city.auth("consumer", "officer2", scopes=[police])
    for member in (by_claim, by_scope):
        assert city.get(ref, headers=member).status_code == 200
        assert ref in _ids(city, member, name)
    # A department claim of another node's department makes nobody a member here.
    foreign = city.auth("consumer", "x", scopes=[CITY], department=f"{CITY}.shinan.police")
    assert city.get(ref, headers=foreign).status_code == 404


def test_access_rules_narrow_node_wide_staff(federation: Federation) -> None:
    city = federation.city
    name = _unique("signals")
    rule = {"discover": {"departments": [f"{CITY}.traffic"]}}
    _publish(city, f"{CITY}.traffic", name, classification="internal", access=rule, tags=[name])
    ref = f"{CITY}.traffic/{name}"
    env = city.auth("consumer", "env-analyst", scopes=[CITY], department=f"{CITY}.env")
    assert city.get(ref, headers=env).status_code == 404
    assert ref not in _ids(city, env, name)
    traffic = city.auth("consumer", "planner", scopes=[CITY], department=f"{CITY}.traffic")
    assert city.get(ref, headers=traffic).status_code == 200


def test_administrative_sight_is_audited(federation: Federation) -> None:
    city = federation.city
    police = f"{CITY}.police"
    name = _unique("warrants")
    _publish(city, police, name, classification="restricted", tags=[name])
    ref = f"{police}/{name}"
    admin = city.auth("admin", "node-admin", scopes=[CITY])
    assert city.get(ref, headers=admin).status_code == 200
    assert ref in _ids(city, admin, name)
    auditor = city.auth("auditor", "inspector", scopes=[CITY])

    def sight_events() -> list[dict[str, Any]]:
        resp = httpx.get(f"{city.url}/v1/audit", params={"limit": 1000}, headers=auditor)
        assert resp.status_code == 200, resp.text
        return [
            e
            for e in resp.json()["items"]
            if e["actor"] == "node-admin" and e["action"].startswith("sight:")
        ]

    events = until(lambda: len(sight_events()) >= 2 and sight_events(), 10, "sight events")
    actions = {e["action"] for e in events}
    assert {"sight:getCapability", "sight:searchCapabilities"} <= actions, actions
    assert any(e["path"] == f"/v1/capabilities/{ref}" for e in events)


def test_a_grant_names_a_subject_of_one_node(federation: Federation) -> None:
    city, shinan = federation.city, federation.shinan
    police = f"{CITY}.police"
    name = _unique("plates")
    _publish(city, police, name, classification="restricted", access={"grants": ["app:planner"]})
    ref = f"{police}/{name}"
    # The city's own app:planner is granted.
    planner = city.auth("consumer", "app:planner", scopes=[])
    assert city.get(ref, headers=planner).status_code == 200
    # A district claiming a caller named app:planner (a compromised district signs an
    # assertion with its own key) is not the city's app:planner.
    forged = assertions.issue(
        shinan.key,
        node_id=shinan.node_id,
        audience=CITY,
        purpose="invoke",
        caller=_caller("app:planner", shinan.node_id),
    )
    resp = httpx.post(
        f"{city.url}/v1/invoke/{ref}",
        json={"input": {}},
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert resp.status_code in (401, 403, 404), resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    # A grant may name a subject of another node explicitly.
    other = _unique("counts")
    grant = {"subject": "app:planner", "node": shinan.node_id}
    _publish(city, police, other, classification="restricted", access={"grants": [grant]})
    assert city.get(f"{police}/{other}", headers=planner).status_code == 404


def _caller(subject: str, node: str) -> Any:
    from yunnao.registry.access import Identity

    return Identity(subject=subject, role="consumer", issuer=node, node=node)
