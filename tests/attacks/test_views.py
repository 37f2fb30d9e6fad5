"""Item 7: every view of statistics asks the policy module. Usage reports, ``/metrics``
and the audit listing name capabilities; each must leave out those the reader may not
discover, whichever rule hides them: (a) a restricted classification, (b) an access
rule on discovery, (c) draft status.

At the district ``sd.qd.shinan`` an admin publishes four entries in a department of
its own and calls each once (so each has usage records, metrics and audit events):

- ``open``: public, the control every view shows;
- ``secret``: restricted (its department's members and grants only);
- ``ruled``: public, but its discover rule names admins only;
- ``draft``: a draft (seen by those who may write its namespace).

A consumer of the node (of another department), an operator of the node and an
auditor of the node then read the views. Nothing is changed by reading: the figures are
still there for an admin, who may see them all.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.attacks.conftest import SHINAN, Federation
from tests.cascade_support import Site, until

pytestmark = pytest.mark.slow

DEPT = "views"
NS = f"{SHINAN}.{DEPT}"
HIDDEN = {
    "secret": {"classification": "restricted"},
    "ruled": {"access": {"discover": {"roles": ["admin"]}}},
    "draft": {"status": "draft"},
}
ALL = ("open", *HIDDEN)
SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def _call(site: Site, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
    # Any call that resolved leaves a usage record, metrics and (a POST) an audit event,
    # whatever its answer (these entries have no model to run).
    return httpx.post(
        f"{site.url}/v1/invoke/{NS}/{name}", json={"input": {"y": 1}}, headers=headers or {}
    )


@pytest.fixture(scope="module")
def shinan(federation: Federation) -> Site:
    site = federation.shinan
    for name in ALL:
        site.publish(DEPT, name, input_schema=SCHEMA, **HIDDEN.get(name, {}))
    admin = site.auth("admin", "views-admin")
    for name in ALL:
        resp = _call(site, name, admin)
        # Resolved (the admin sees every one); the answer itself does not matter.
        assert resp.status_code not in (401, 403, 404), resp.text
    return site


def _usage(site: Site, headers: dict[str, str], by: str = "capability") -> dict[str, Any]:
    resp = httpx.get(f"{site.url}/v1/usage", params={"by": by}, headers=headers)
    assert resp.status_code == 200, resp.text
    return {i["key"]: i for i in resp.json()["items"] if i["key"].startswith(NS)}


def test_usage_leaves_out_what_the_reader_may_not_discover(shinan: Site) -> None:
    admin = shinan.auth("admin", "views-admin")
    # The records are there (written in batches): the node's admin sees all four.
    seen = until(
        lambda: (u := _usage(shinan, admin)) and len(u) == len(ALL) and u,
        30,
        "usage records of all four entries",
    )
    assert set(seen) == {f"{NS}/{n}" for n in ALL}

    consumer = shinan.auth("consumer", "views-reader", department=f"{SHINAN}.other")
    assert set(_usage(shinan, consumer)) == {f"{NS}/open"}
    # Grouped by department, the hidden entries' calls count for nothing either.
    by_dept = _usage(shinan, consumer, by="department")
    assert by_dept[NS]["calls"] == 1
    assert _usage(shinan, admin, by="department")[NS]["calls"] == len(ALL)


def _metrics(site: Site, headers: dict[str, str]) -> str:
    resp = httpx.get(f"{site.url}/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.text


def test_metrics_leave_out_what_the_reader_may_not_discover(shinan: Site) -> None:
    admin = _metrics(shinan, shinan.auth("admin", "views-admin"))
    for name in ALL:
        assert f'capability="{NS}/{name}"' in admin
    operator = _metrics(shinan, shinan.auth("operator", "views-operator"))
    assert f'capability="{NS}/open"' in operator
    for name in HIDDEN:
        assert f"{NS}/{name}" not in operator, name
    # Series that name no capability are still there.
    assert "yunnao_jobs" in operator and "yunnao_runtime_up" in operator


def _audit(site: Site, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    since = 0
    while True:
        resp = httpx.get(
            f"{site.url}/v1/audit", params={"since": since, "limit": 1000}, headers=headers
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()
        items += page["items"]
        if not page["items"]:
            return items
        since = page["next"]


def _paths(items: list[dict[str, Any]], ns: str) -> set[str]:
    return {i["path"] for i in items if ns in i["path"]}


def test_the_audit_listing_leaves_out_drafts_hidden_from_the_auditor(shinan: Site) -> None:
    admin = shinan.auth("admin", "views-admin")
    draft = f"/v1/invoke/{NS}/draft"
    until(lambda: draft in _paths(_audit(shinan, admin), NS), 30, "the draft's events")
    paths = _paths(_audit(shinan, shinan.auth("auditor", "views-auditor")), NS)
    assert f"/v1/invoke/{NS}/open" in paths
    # The node's auditors keep administrative sight of restricted and ruled entries
    # (audited), but a draft is its writers' only: its events are not listed.
    assert not [p for p in paths if f"{NS}/draft" in p], paths
    assert draft in _paths(_audit(shinan, admin), NS)  # still logged


def test_the_audit_listing_leaves_out_entries_a_rule_hides_at_the_city(
    federation: Federation,
) -> None:
    """At the city, a district's entry is not the city's own: no administrative sight,
    so its own rule (discover by the district's callers only) hides it from the city's
    auditor, and the events naming it with it."""
    shinan, city = federation.shinan, federation.city
    shinan.publish(DEPT, "city-open", input_schema=SCHEMA)
    shinan.publish(
        DEPT, "city-ruled", input_schema=SCHEMA, access={"discover": {"nodes": [SHINAN]}}
    )
    until(
        lambda: {f"{NS}/city-open", f"{NS}/city-ruled"} <= set(city.contents(SHINAN)),
        60,
        "both entries at the city",
    )
    for name in ("city-ruled", "city-open"):
        _call(city, name)  # anonymous, at the city: refused, and recorded as refused
    auditor = city.auth("auditor", "views-auditor")
    opened = f"/v1/invoke/{NS}/city-open"
    # Events are written in order: once the second call's is listed, the first's is in.
    paths = until(
        lambda: (p := _paths(_audit(city, auditor), NS)) and opened in p and p,
        30,
        "the events at the city",
    )
    assert f"/v1/invoke/{NS}/city-ruled" not in paths, paths
