"""Authorization over HTTP, table-driven: every role x action x classification x scope
the policy module knows (:mod:`yunnao.registry.access`), then capabilities' own access
rules, and search counts that never reveal hidden entries.

The expected outcomes below are written out from the specification (docs/security.md),
not computed by the policy module, so a change of behaviour fails here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import bearer
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.registry.identity import tokens
from yunnao.settings import Settings

NODE = "sd.qd"
NS = NAMESPACE  # sd.qd.rt: the department owning the capabilities under test
CLASSES = ("public", "internal", "restricted")
ROLES = (None, "consumer", "auditor", "author", "operator", "admin")  # None: anonymous
# What the token is scoped to: the capabilities' namespace, another department of the
# same node, or the whole node.
SCOPES = {"namespace": NS, "other": f"{NODE}.water", "node": NODE}


class AuthzNode:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def headers(
        self,
        role: str | None,
        *scopes: str,
        subject: str = "staff-1",
        department: str | None = None,
    ) -> dict[str, str]:
        if role is None:
            return {}
        return bearer(
            self.settings.key_path, NODE, role, *scopes, subject=subject, department=department
        )


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthzNode]:
    """A node with one invocable model published through MLflow, and copies of it as
    capabilities of each classification (same code, logged under each name, published
    over HTTP)."""
    tmp: Path = tmp_path_factory.mktemp("authz")
    config = Settings(node_id=NODE, data_dir=tmp, plugins=False)
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        greet = rt_capabilities()["greet"]
        publisher = app.state.catalog.publisher
        version = publisher.publish(greet, namespace=NS).version
        node = AuthzNode(client, config)
        admin = node.headers("admin", NODE)
        for cls in CLASSES:
            # A version may name only its own model: log the same code under each name.
            copy = dataclasses.replace(greet, name=f"c-{cls}")
            model_uri = publisher.models.log(copy, namespace=NS, node=NODE).model_uri
            body = {
                "version": "1.0.0",
                "title": f"{cls} greeter",
                "classification": cls,
                "input_schema": version.input_schema,
                "output_schema": version.output_schema,
                "runtime": version.runtime.model_dump(),
                "model_uri": model_uri,
            }
            resp = client.post(f"/v1/capabilities/{NS}/c-{cls}/versions", json=body, headers=admin)
            assert resp.status_code == 201, resp.text
        yield node


# ---------------------------------------------------------------- the specification

WRITERS = {"admin", "author"}
ALLOWED_ROLES = {
    "update": WRITERS,
    "publish": WRITERS,
    "transition": WRITERS,
    "delete": WRITERS,
    "grant": {"admin"},
    "bind": {"admin", "operator", "author"},
}
# The status an allowed request gets: each is made to stop at a precondition after
# the access check (a stale If-Match, a version that exists), so nothing changes.
ALLOWED_STATUS = {
    "update": 412,
    "grant": 412,
    "transition": 412,
    "delete": 412,
    "bind": 412,
    "publish": 409,
}


def expected_read(role: str | None, scope: str, cls: str) -> bool:
    """May discover: public for everyone; internal for signed-in callers; restricted for
    members of the owning department (a scope at or below its namespace) and, for
    administration, admins and auditors scoped over it (the node scope covers it). A
    consumer, author or operator scoped to the whole node is no member of each
    department."""
    if role is None:
        return cls == "public"
    if scope == "namespace":
        return True
    if scope == "node" and role in ("admin", "auditor"):
        return True
    return cls != "restricted"


def expected_invoke(role: str | None, scope: str, cls: str) -> int:
    if not expected_read(role, scope, cls):
        return 404
    return 403 if role == "auditor" else 200


def expected_write(action: str, role: str | None, scope: str) -> int:
    if role is None:
        return 401
    if role in ALLOWED_ROLES[action] and scope in ("namespace", "node"):
        return ALLOWED_STATUS[action]
    return 403


def request(node: AuthzNode, action: str, name: str, headers: dict[str, str]) -> Any:
    cap = f"/v1/capabilities/{NS}/{name}"
    stale = {**headers, "If-Match": '"stale"'}
    c = node.client
    if action == "discover":
        return c.get(cap, headers=headers)
    if action == "invoke":
        return c.post(f"/v1/invoke/{NS}/{name}", json={"input": {"name": "a"}}, headers=headers)
    if action == "update":
        return c.patch(cap, json={"summary": "changed"}, headers=stale)
    if action == "grant":
        return c.patch(cap, json={"access": {"grants": ["someone"]}}, headers=stale)
    if action == "transition":
        body = {"status": "deprecated"}
        return c.post(f"{cap}/versions/1.0.0/lifecycle", json=body, headers=stale)
    if action == "delete":
        return c.delete(cap, headers=stale)
    if action == "bind":
        return c.put(f"{cap}/versions/1.0.0/runtime", json={"type": "inprocess"}, headers=stale)
    if action == "publish":
        body = {"version": "1.0.0", "title": "again"}
        return c.post(f"{cap}/versions", json=body, headers=headers)
    raise AssertionError(action)


ENTRY_ACTIONS = ("discover", "invoke", *ALLOWED_ROLES)
MATRIX = list(itertools.product(ROLES, ENTRY_ACTIONS, CLASSES, SCOPES))


def test_every_role_action_classification_and_scope(authz: AuthzNode) -> None:
    """All 6 x 8 x 3 x 3 combinations; every mismatch is reported at once."""
    wrong = []
    for role, action, cls, scope in MATRIX:
        headers = authz.headers(role, SCOPES[scope])
        resp = request(authz, action, f"c-{cls}", headers)
        if action == "discover":
            want = 200 if expected_read(role, scope, cls) else 404
        elif action == "invoke":
            want = expected_invoke(role, scope, cls)
        else:
            want = expected_write(action, role, scope)
        if resp.status_code != want:
            wrong.append(
                f"{role or 'anonymous'} {action} {cls} scope={scope}: "
                f"{resp.status_code} (want {want}) {resp.text[:160]}"
            )
        elif want >= 400:
            assert resp.headers["content-type"].startswith("application/problem+json")
    assert not wrong, "\n".join(wrong)
    # Nothing changed: every allowed write stopped at its precondition.
    admin = authz.headers("admin", NODE)
    for cls in CLASSES:
        cap = authz.client.get(f"/v1/capabilities/{NS}/c-{cls}", headers=admin).json()
        assert (
            cap["summary"] == ""
            and cap["status"] == "published"
            and cap["access"]
            == {
                "discover": {"nodes": [], "departments": [], "roles": []},
                "invoke": {"nodes": [], "departments": [], "roles": []},
                "grants": [],
                "rate_limit": None,
            }
        )


@pytest.mark.parametrize(("role", "scope"), list(itertools.product(ROLES, SCOPES)))
def test_search_lists_and_counts_exactly_what_each_caller_may_discover(
    authz: AuthzNode, role: str | None, scope: str
) -> None:
    resp = authz.client.get(
        "/v1/capabilities",
        params={"namespace": NS, "q": "greeter"},
        headers=authz.headers(role, SCOPES[scope]),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    want = {f"c-{cls}" for cls in CLASSES if expected_read(role, scope, cls)}
    assert {i["name"] for i in body["items"]} == want
    assert body["total"] == len(want)
    counts = body["facets"]["classification"]
    assert counts == {cls: 1 for cls in CLASSES if expected_read(role, scope, cls)}


NODE_ACTIONS = {
    # action: (request, roles allowed when scoped to the node)
    "read-node": (("GET", "/v1/cascade/peers"), {"admin", "operator"}),
    "manage-node": (("GET", "/v1/keys"), {"admin"}),
    "audit": (("GET", "/v1/audit"), {"admin", "auditor"}),
}


@pytest.mark.parametrize(
    ("role", "action", "scope"), list(itertools.product(ROLES, NODE_ACTIONS, SCOPES))
)
def test_node_actions_need_their_role_scoped_to_the_node(
    authz: AuthzNode, role: str | None, action: str, scope: str
) -> None:
    (method, path), roles = NODE_ACTIONS[action]
    resp = authz.client.request(method, path, headers=authz.headers(role, SCOPES[scope]))
    if role is None:
        want = 401
    elif role in roles and scope == "node":
        want = 200
    else:
        want = 403
    assert resp.status_code == want, resp.text


# ---------------------------------------------------------------- access rules


RULED = f"{NS}/c-internal"


@pytest.fixture
def rules(authz: AuthzNode) -> Iterator[Any]:
    """Set access rules on the internal capability for one test, then clear them."""
    admin = authz.headers("admin", NODE)
    path = f"/v1/capabilities/{RULED}"

    def set_rules(access: dict[str, Any]) -> None:
        resp = authz.client.patch(path, json={"access": access}, headers=admin)
        assert resp.status_code == 200, resp.text

    yield set_rules
    set_rules({})


# Callers as (role, scopes, department, subject); none scoped to sd.qd.rt.
CALLERS = {
    "water-consumer": ("consumer", (f"{NODE}.water",), f"{NODE}.water", "u-water"),
    "traffic-consumer": ("consumer", (f"{NODE}.traffic",), f"{NODE}.traffic", "u-traffic"),
    "traffic-auditor": ("auditor", (f"{NODE}.traffic",), f"{NODE}.traffic", "u-audit"),
    "no-department": ("consumer", (f"{NODE}.water",), None, "u-none"),
    "named": ("consumer", (f"{NODE}.water",), None, "alice"),
    "owner": ("consumer", (NS,), None, "u-owner"),
}
RULE_CASES = [
    # (access rules, {caller: (discover status, invoke status)})
    (
        {"discover": {"departments": [f"{NODE}.traffic"]}},
        {
            "water-consumer": (404, 404),
            "traffic-consumer": (200, 200),
            "traffic-auditor": (200, 403),
            "no-department": (404, 404),
            "named": (404, 404),
            "owner": (200, 200),
        },
    ),
    (
        {"invoke": {"roles": ["admin"]}, "grants": ["alice"]},
        {
            "water-consumer": (200, 403),
            "traffic-consumer": (200, 403),
            "traffic-auditor": (200, 403),
            "no-department": (200, 403),
            "named": (200, 200),
            "owner": (200, 200),
        },
    ),
    (
        {"discover": {"nodes": ["sd.qd.shinan"]}, "invoke": {"departments": [f"{NODE}.water"]}},
        {
            "water-consumer": (404, 404),
            "traffic-consumer": (404, 404),
            "traffic-auditor": (404, 404),
            "no-department": (404, 404),
            "named": (404, 404),
            "owner": (200, 200),
        },
    ),
    (
        {
            "discover": {"nodes": [NODE], "roles": ["consumer"]},
            "invoke": {"departments": [f"{NODE}.water"]},
        },
        {
            "water-consumer": (200, 200),
            "traffic-consumer": (200, 403),
            "traffic-auditor": (404, 404),
            "no-department": (200, 403),
            "named": (200, 403),
            "owner": (200, 200),
        },
    ),
]


@pytest.mark.parametrize(("access", "outcomes"), RULE_CASES, ids=lambda v: str(v)[:40])
def test_access_rules_narrow_who_may_discover_and_invoke(
    authz: AuthzNode, rules: Any, access: dict[str, Any], outcomes: dict[str, tuple[int, int]]
) -> None:
    rules(access)
    for caller, (see, call) in outcomes.items():
        role, scopes, department, subject = CALLERS[caller]
        headers = authz.headers(role, *scopes, department=department, subject=subject)
        got = authz.client.get(f"/v1/capabilities/{RULED}", headers=headers).status_code
        assert got == see, (caller, "discover", got)
        listed = authz.client.get(
            "/v1/capabilities", params={"namespace": NS}, headers=headers
        ).json()
        names = {i["name"] for i in listed["items"]}
        assert ("c-internal" in names) == (see == 200), caller
        assert listed["total"] == len(names)
        assert listed["facets"]["classification"].get("internal", 0) == (see == 200), caller
        resp = request(authz, "invoke", "c-internal", headers)
        assert resp.status_code == call, (caller, "invoke", resp.text)
    # Anonymous callers match no rule: a public entry with a discover rule hides from them.
    assert authz.client.get(f"/v1/capabilities/{RULED}").status_code == 404


def test_a_restricted_entry_is_for_its_namespace_and_named_grants_only(
    authz: AuthzNode,
) -> None:
    admin = authz.headers("admin", NODE)
    path = f"/v1/capabilities/{NS}/c-restricted"
    alice = authz.headers("consumer", f"{NODE}.water", subject="alice")
    bob = authz.headers("consumer", f"{NODE}.water", subject="bob", department=f"{NODE}.water")
    # Rules cannot open a restricted entry to a department: only names can.
    resp = authz.client.patch(
        path, json={"access": {"discover": {"departments": [f"{NODE}.water"]}}}, headers=admin
    )
    assert resp.status_code == 200
    assert authz.client.get(path, headers=bob).status_code == 404
    resp = authz.client.patch(path, json={"access": {"grants": ["alice"]}}, headers=admin)
    assert resp.status_code == 200
    try:
        assert authz.client.get(path, headers=alice).status_code == 200
        assert request(authz, "invoke", "c-restricted", alice).status_code == 200
        assert authz.client.get(path, headers=bob).status_code == 404
        assert request(authz, "invoke", "c-restricted", bob).status_code == 404
    finally:
        authz.client.patch(path, json={"access": {}}, headers=admin)
    assert authz.client.get(path, headers=alice).status_code == 404


def test_only_admins_grant_and_a_new_version_keeps_the_rules(authz: AuthzNode) -> None:
    author = authz.headers("author", NS)
    admin = authz.headers("admin", NODE)
    path = f"/v1/capabilities/{NS}/c-public"
    resp = authz.client.patch(path, json={"access": {"grants": ["x"]}}, headers=author)
    assert resp.status_code == 403 and "grant" in resp.json()["detail"]
    body = {"version": "9.0.0", "title": "with rules", "access": {"grants": ["x"]}}
    resp = authz.client.post(f"{path}/versions", json=body, headers=author)
    assert resp.status_code == 403
    assert authz.client.get(f"{path}/versions/9.0.0", headers=admin).status_code == 404
    rules = {"invoke": {"roles": ["consumer"]}, "rate_limit": "100/min"}
    assert authz.client.patch(path, json={"access": rules}, headers=admin).status_code == 200
    try:
        # An author's new version (no `access` in it) leaves the admin's rules as they are.
        v1 = authz.client.get(f"{path}/versions/1.0.0", headers=admin).json()
        schemas = {k: v1[k] for k in ("input_schema", "output_schema")}  # compatible
        resp = authz.client.post(
            f"{path}/versions",
            json={"version": "1.1.0", "title": "public greeter", "classification": "public",
                  **schemas},
            headers=author,
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        got = authz.client.get(path, headers=admin).json()["access"]
        assert got["invoke"]["roles"] == ["consumer"] and got["rate_limit"] == "100/min"
    finally:
        assert authz.client.patch(path, json={"access": {}}, headers=admin).status_code == 200
    # Grants are audited as such, refused ones included.
    authz.client.app.state.audit.flush()
    events = authz.client.get("/v1/audit", params={"action": "grant"}, headers=admin).json()
    outcomes = {(e["actor"], e["role"], e["outcome"]) for e in events["items"]}
    assert {("staff-1", "author", "denied"), ("staff-1", "admin", "ok")} <= outcomes
    bad = authz.client.patch(path, json={"access": {"rate_limit": "fast"}}, headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "access.rate_limit"
    bad = authz.client.patch(
        path, json={"access": {"discover": {"nodes": ["Not A Node"]}}}, headers=admin
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "access.discover.nodes[0]"


# ---------------------------------------------------------------- ownership


def _district_feed(
    tmp: Path, district: str, access: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], int, str]:
    """Publish at a district node of its own and read its feed: (items, head, key)."""
    settings = Settings(node_id=district, data_dir=tmp / district, plugins=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"version": "1.0.0", "title": "flow", "classification": "public"}
        if access is not None:
            body["access"] = access
        resp = client.post(
            f"/v1/capabilities/{district}.traffic/flow/versions",
            json=body,
            headers=bearer(settings.key_path, district, "admin", district),
        )
        assert resp.status_code == 201, resp.text
        operator = bearer(settings.key_path, district, "operator", district)
        page = client.get("/v1/cascade/changes", params={"limit": 1000}, headers=operator).json()
        key = tokens.load_or_create_key(settings.key_path)
        return page["items"], page["head"], tokens.public_key_text(key)


# Bodies that pass validation, so a refusal can only come from the access check.
BODIES: dict[str, Any] = {
    "setRuntime": {"type": "inprocess"},
    "updateCapability": {"summary": "taken over"},
    "publishVersion": {"version": "9.9.9", "title": "taken over", "classification": "public"},
    "transitionVersion": {"status": "retired"},
    "publishPlugin": {"capability": "greet"},
    "createApiKey": {"name": "mine", "role": "admin", "scopes": [NODE]},
    "cascadeAddPeer": {"id": "sd.qd.evil", "relation": "child", "public_key": "00" * 32},
    "cascadeIngest": {"since": 0, "next": 0, "head": 0, "items": []},
    "createAccessRequest": {"reason": "taken over"},
    "approveAccessRequest": {},
    "refuseAccessRequest": {"reason": "taken over"},
    "createWebhook": {"scope": NODE, "url": "https://hooks.example.org/x",
                      "events": ["version.published", "cascade.entry_arrived"]},
}  # fmt: skip
# Calls, not changes: they may succeed (and change nothing in the registry).
# An access request is asked, not granted: it changes nothing in the registry.
CALLS = {"invoke", "v2Infer", "v2InferVersion", "createAccessRequest"}


def test_a_district_author_changes_nothing_outside_their_district_by_any_endpoint(
    authz: AuthzNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """At the city: its own entries, and two districts' entries received by cascade.
    Staff of district shinan (author, and even admin of the district) try every
    changing operation of the API on each; none succeeds and nothing changes."""
    from yunnao.cascade.apply import Applier
    from yunnao.cascade.peers import PeerStore

    app = authz.client.app
    store = app.state.catalog.store
    node_key = tokens.load_or_create_key(authz.settings.key_path)
    peers = PeerStore(store, node_key)
    tmp = tmp_path_factory.mktemp("districts")
    for district in ("sd.qd.shinan", "sd.qd.laoshan"):
        items, head, public_key = _district_feed(tmp, district)
        peer = peers.add(
            district, relation="child", public_key=public_key, url=None, pull=False, push=False
        )
        outcome = Applier(NODE, node_key, store.transaction).apply(
            peer, items, since=0, next_seq=head, head=head
        )
        assert outcome.rejected == [] and outcome.applied == len(items)

    admin = authz.headers("admin", NODE)
    city_entry = (NS, "c-public")
    targets = [city_entry, ("sd.qd.laoshan.traffic", "flow"), ("sd.qd.shinan.traffic", "flow")]

    def state() -> list[Any]:
        out = []
        for ns, name in targets:
            cap = authz.client.get(f"/v1/capabilities/{ns}/{name}", headers=admin)
            versions = authz.client.get(f"/v1/capabilities/{ns}/{name}/versions", headers=admin)
            assert cap.status_code == 200, cap.text
            entry = cap.json()
            entry.pop("health", None)  # live state (reachability, recent calls), not content
            out.append((entry, cap.headers["etag"], versions.json()))
        peers_now = authz.client.get("/v1/cascade/peers", headers=admin).json()
        keys_now = authz.client.get("/v1/keys", headers=admin).json()
        return [out, sorted(p["id"] for p in peers_now["items"]), keys_now]

    before = state()
    spec = authz.client.get("/openapi.json").json()
    ops = [
        (method.upper(), path, op["operationId"])
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if method in ("post", "put", "patch", "delete")
    ]
    assert len(ops) >= 15  # every changing operation the node serves
    tried = 0
    for role in ("author", "admin"):
        headers = authz.headers(
            role, "sd.qd.shinan", department="sd.qd.shinan.traffic", subject="d-staff"
        )
        for (method, path, op_id), (ns, name) in itertools.product(ops, targets):
            url = path.format(
                namespace=ns,
                name=name,
                version="1.0.0",
                model=f"{ns}.{name}",
                peer="sd.qd.laoshan",
                key_id="k1",
                id="0" * 32,
                delivery="msg_" + "0" * 32,
                rule="0" * 32,
            )
            body = BODIES.get(op_id)
            if op_id == "publishPlugin":
                body = {**body, "namespace": ns}
            resp = authz.client.request(method, url, json=body, headers=headers)
            tried += 1
            assert resp.status_code < 500, (op_id, url, resp.text)
            if op_id in CALLS:
                continue
            assert resp.status_code in (401, 403, 404), (
                role,
                op_id,
                url,
                resp.status_code,
                resp.text,
            )
            assert resp.headers["content-type"].startswith("application/problem+json")
    assert tried == 2 * len(ops) * len(targets)
    assert state() == before


def test_access_rules_travel_with_a_cascaded_entry(
    authz: AuthzNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A district's rules, signed into its entry, apply at the city that received it:
    in reads, in search counts and in calls (which the city refuses before forwarding)."""
    from yunnao.cascade.apply import Applier
    from yunnao.cascade.peers import PeerStore

    store = authz.client.app.state.catalog.store
    node_key = tokens.load_or_create_key(authz.settings.key_path)
    district = "sd.qd.chengyang"
    rules = {"discover": {"roles": ["author", "admin"]}}
    items, head, public_key = _district_feed(tmp_path_factory.mktemp("cy"), district, rules)
    peer = PeerStore(store, node_key).add(
        district, relation="child", public_key=public_key, url=None, pull=False, push=False
    )
    outcome = Applier(NODE, node_key, store.transaction).apply(
        peer, items, since=0, next_seq=head, head=head
    )
    assert outcome.rejected == [] and outcome.applied == len(items)
    path = f"/v1/capabilities/{district}.traffic/flow"
    consumer = authz.headers("consumer", NODE)
    author = authz.headers("author", f"{NODE}.water")
    assert authz.client.get(path).status_code == 404
    assert authz.client.get(path, headers=consumer).status_code == 404
    seen = authz.client.get(path, headers=author)
    assert seen.status_code == 200 and seen.json()["access"]["discover"]["roles"] == [
        "author",
        "admin",
    ]
    for headers, want in ((consumer, 0), (author, 1)):
        page = authz.client.get(
            "/v1/capabilities", params={"node": district}, headers=headers
        ).json()
        assert page["total"] == want and page["facets"]["node"].get(district, 0) == want
    call = authz.client.post(
        f"/v1/invoke/{district}.traffic/flow", json={"input": {}}, headers=consumer
    )
    assert call.status_code == 404
