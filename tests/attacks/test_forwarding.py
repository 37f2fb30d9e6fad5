"""A linked node vouches only for its own subtree; a forwarded call's assertion serves
one request on one route; a forwarded call never visits a node twice and no hop works
past its caller's deadline (issue 15, items 2 and 4).

Each attack is an assertion a compromised district signs with its own key (it can sign
anything), sent to the city as a forwarded call would be. The shared federation gains
one more node for this module, a district's child running the test capabilities
(``sleepy`` among them), so that calls cross three nodes::

    sd.qd ── sd.qd.shinan (example plugins)
          └─ sd.qd.laoshan ── sd.qd.laoshan.rt (tests/data/rtplugin)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.attacks.conftest import CITY, LAOSHAN, SHINAN, Federation
from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR

pytestmark = pytest.mark.slow

RT = f"{LAOSHAN}.rt"
RT_NS = f"{RT}.yunnao-rt"  # <node>.<plugin>
FLOW = f"{SHINAN}.traffic/flow-forecast@1.0.0"
FLOW_INPUT = {"counts": list(range(1, 25)), "hour": 5}
GRANTED_NS = f"{CITY}.h2fwd"


@pytest.fixture(scope="module")
def rt(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A child of laoshan running the test capabilities; its ``pid`` may be invoked by
    its own department only."""
    proc = YunnaoProcess(
        tmp_path_factory.mktemp("h2rt"),
        "--node-id",
        RT,
        "--plugin",
        str(RT_PLUGIN_DIR / "yunnao_rt"),
        "--publish-plugins",
        env={"YUNNAO_PLUGINS": "false"},
    )
    site = Site(RT, proc)
    try:
        proc.start(timeout=120)
        access = {"access": {"invoke": {"departments": [RT_NS]}}}
        resp = httpx.patch(
            f"{site.url}/v1/capabilities/{RT_NS}/pid", json=access, headers=site.auth()
        )
        assert resp.status_code == 200, resp.text
        federation.laoshan.cascade("add-child", RT, "--child-url", site.url)
        site.cascade("add-parent", LAOSHAN, "--parent-url", federation.laoshan.url)
        city = federation.city
        for name in ("sleepy", "pid"):
            ref = f"{RT_NS}/{name}"
            until(lambda r=ref: city.get(r, headers=city.auth()).status_code == 200, 90, ref)
        yield site
    finally:
        proc.stop()


def forge(
    signer: Site,
    *,
    route: str | None,
    purpose: str = "invoke",
    sub: str | None = None,
    node: str | None = None,
    dept: str | None = None,
    origin_iss: str | None = None,
    visited: list[str] | None = None,
    deadline: float | None = None,
) -> str:
    """An assertion ``signer`` signs with its own node key for the city, as any linked
    node can: whatever claims it likes."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": signer.node_id,
        "aud": CITY,
        "purpose": purpose,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    if purpose == "invoke":
        claims["route"] = route
        claims["visited"] = visited if visited is not None else [signer.node_id]
    if deadline is not None:
        claims["deadline"] = deadline
    if sub is not None:
        claims.update(sub=sub, role="consumer", origin_iss=origin_iss or node or signer.node_id)
        claims["node"] = node or signer.node_id
        if dept is not None:
            claims["dept"] = dept
    return jwt.encode(claims, signer.key, algorithm="EdDSA")


def call(
    site: Site, ref: str, inputs: dict[str, Any], bearer: str, rid: str, timeout: float = 30
) -> httpx.Response:
    return httpx.post(
        f"{site.url}/v1/invoke/{ref}",
        json={"input": inputs, "timeout": timeout},
        headers={"Authorization": f"Bearer {bearer}", "X-Request-Id": rid},
        timeout=90,
    )


def route(ref: str) -> str:
    return f"/v1/invoke/{ref}"


def problem(resp: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    for word in words:
        assert word in body["detail"], body
    return body


# ---------------------------------------------------------------- the subtree


def test_a_district_cannot_call_a_siblings_department_only_capability_through_the_city(
    federation: Federation, rt: Site
) -> None:
    city, shinan = federation.city, federation.shinan
    ref = f"{RT_NS}/pid@1.0.0"
    # The capability runs for its own department, at its node.
    member = rt.auth("consumer", subject="rt-staff", department=RT_NS)
    direct = httpx.post(f"{rt.url}/v1/invoke/{ref}", json={"input": {}}, headers=member)
    assert direct.status_code == 200, direct.text
    # Shinan, compromised, claims one of that department's people, through the city.
    rid = f"sibling-{uuid.uuid4().hex[:10]}"
    forged = forge(shinan, route=route(ref), sub="rt-staff", node=RT, dept=RT_NS)
    resp = call(city, ref, {}, forged, rid)
    problem(resp, 403, SHINAN, "vouch")
    # Also with a node of its own but the sibling's department.
    forged = forge(shinan, route=route(ref), sub="rt-staff", node=SHINAN, dept=RT_NS)
    problem(call(city, ref, {}, forged, rid + "-b"), 403, "vouch")
    # The capability never ran: nothing reached laoshan's subtree.
    for site in (rt, federation.laoshan, city):
        assert site.usage_records(rid) == [] and site.usage_records(rid + "-b") == []


def test_a_district_cannot_claim_a_subject_named_in_the_citys_grants(
    federation: Federation,
) -> None:
    city, shinan = federation.city, federation.shinan
    name = f"granted-{uuid.uuid4().hex[:6]}"
    spec = {
        "version": "1.0.0",
        "title": "restricted, for one application",
        "classification": "restricted",
        "access": {"grants": ["app:planner"]},
    }
    resp = httpx.post(
        f"{city.url}/v1/capabilities/{GRANTED_NS}/{name}/versions", json=spec, headers=city.auth()
    )
    assert resp.status_code == 201, resp.text
    ref = f"{GRANTED_NS}/{name}@1.0.0"
    rid = f"grant-{uuid.uuid4().hex[:10]}"
    # As the city's own subject: shinan does not speak for callers of the city.
    as_city = forge(shinan, route=route(ref), sub="app:planner", node=CITY, origin_iss=CITY)
    problem(call(city, ref, {}, as_city, rid + "-a"), 403, "vouch")
    # As a subject of shinan's that happens to have the same name: not the one granted.
    as_own = forge(shinan, route=route(ref), sub="app:planner", origin_iss=CITY)
    problem(call(city, ref, {}, as_own, rid + "-b"), 404)
    # Neither call reached the capability (its runtime would have recorded the call).
    assert city.usage_records(rid + "-a") == [] and city.usage_records(rid + "-b") == []


# ---------------------------------------------------------------- purpose, route, once


def test_a_replayed_assertion_is_refused(federation: Federation) -> None:
    city, laoshan, shinan = federation.city, federation.laoshan, federation.shinan
    bearer = forge(laoshan, route=route(FLOW), sub="li.ming")
    rid = f"replay-{uuid.uuid4().hex[:10]}"
    first = call(city, FLOW, FLOW_INPUT, bearer, rid)
    assert first.status_code == 200, first.text
    until(lambda: shinan.usage_records(rid), 15, "the first call at the origin")
    again = call(city, FLOW, FLOW_INPUT, bearer, rid + "-again")
    problem(again, 401, "used before")
    assert shinan.usage_records(rid + "-again") == [] and city.usage_records(rid + "-again") == []


def test_an_assertion_for_one_route_is_refused_on_another(federation: Federation) -> None:
    city, laoshan, shinan = federation.city, federation.laoshan, federation.shinan
    greet = f"{RT_NS}/greet@1.0.0"
    bearer = forge(laoshan, route=route(greet), sub="li.ming")
    rid = f"route-{uuid.uuid4().hex[:10]}"
    problem(call(city, FLOW, FLOW_INPUT, bearer, rid), 401, "made for", greet)
    # Nor for anything but a call: reading the catalog with it.
    listed = httpx.get(
        f"{city.url}/v1/capabilities/{SHINAN}.traffic/flow-forecast",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    problem(listed, 401, "made for")
    assert shinan.usage_records(rid) == [] and city.usage_records(rid) == []


def test_a_cascade_assertion_does_not_invoke(federation: Federation) -> None:
    city, laoshan, shinan = federation.city, federation.laoshan, federation.shinan
    bearer = forge(laoshan, route=None, purpose="cascade")
    rid = f"purpose-{uuid.uuid4().hex[:10]}"
    problem(call(city, FLOW, FLOW_INPUT, bearer, rid), 401, "cascade routes only")
    # It still reads the feed, which is what it is for.
    feed = httpx.get(
        f"{city.url}/v1/cascade/changes", headers={"Authorization": f"Bearer {bearer}"}
    )
    assert feed.status_code == 200, feed.text
    assert shinan.usage_records(rid) == [] and city.usage_records(rid) == []


# ---------------------------------------------------------------- loops and deadlines


def test_a_forwarded_call_that_has_been_here_already_is_a_loop(federation: Federation) -> None:
    city, laoshan, shinan = federation.city, federation.laoshan, federation.shinan
    bearer = forge(laoshan, route=route(FLOW), visited=[CITY, LAOSHAN])
    rid = f"visited-{uuid.uuid4().hex[:10]}"
    body = problem(call(city, FLOW, FLOW_INPUT, bearer, rid), 508, CITY)
    assert body["type"].endswith("/loop-detected")
    assert shinan.usage_records(rid) == []


def test_no_hop_works_past_the_callers_deadline(federation: Federation, rt: Site) -> None:
    city, shinan, laoshan = federation.city, federation.shinan, federation.laoshan
    chain = (city, laoshan, rt)
    ref = f"{RT_NS}/sleepy@1.0.0"
    # The chain works: city -> laoshan -> rt.
    rid = f"deadline-ok-{uuid.uuid4().hex[:8]}"
    ok = call(city, ref, {"seconds": 0}, forge(shinan, route=route(ref), sub="zhao"), rid)
    assert ok.status_code == 200, ok.text
    # A deadline already past: refused at the first node, nothing forwarded.
    past_rid = f"deadline-past-{uuid.uuid4().hex[:8]}"
    past = forge(shinan, route=route(ref), sub="zhao", deadline=time.time() - 1)
    problem(call(city, ref, {"seconds": 0}, past, past_rid), 504, "deadline")
    # A deadline two seconds away, a body asking for thirty and a call taking six: every
    # hop gives up at the deadline, none answers the call as done.
    rid = f"deadline-soon-{uuid.uuid4().hex[:8]}"
    soon = forge(shinan, route=route(ref), sub="zhao", deadline=time.time() + 2)
    problem(call(city, ref, {"seconds": 6}, soon, rid, timeout=30), 504)
    until(lambda: city.usage_records(rid), 15, "the call's record at the city")
    recorded = [row for site in chain for row in site.usage_records(rid)]
    assert recorded and all(row == (RT_NS, "sleepy", 504) for row in recorded), recorded
    assert all(site.usage_records(past_rid) == [] for site in (laoshan, rt))
