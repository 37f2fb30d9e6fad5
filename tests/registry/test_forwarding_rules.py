"""The rules behind forwarded calls, one by one: whose callers a linked node may vouch
for, what an assertion is good for, one-time ids, and which runtime bindings are an
author's. (The attacks on real nodes are in tests/attacks/test_forwarding.py and
test_bindings.py.)"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yunnao.plugins.errors import Forbidden, Unauthorized, Unavailable
from yunnao.registry.access import Identity
from yunnao.registry.bindings import may_bind_outside, reaching_out
from yunnao.registry.identity import assertions
from yunnao.registry.identity.forwarded import Forwarded
from yunnao.registry.identity.replay import OneTimeIds
from yunnao.registry.schemas import RuntimeBinding

HERE = "sd.qd.shinan"
ROUTE = "/v1/invoke/sd.qd.shinan.traffic/flow@1.0.0"


@pytest.mark.parametrize(
    ("peer", "relation", "node", "ok"),
    [
        ("sd.qd.shinan.a", "child", "sd.qd.shinan.a", True),
        ("sd.qd.shinan.a", "child", "sd.qd.shinan.a.b", True),
        ("sd.qd.shinan.a", "child", "sd.qd.shinan.b", False),  # a sibling's
        ("sd.qd.shinan.a", "child", "sd.qd.shinan", False),  # this node's own
        ("sd.qd.shinan.a", "child", "sd.qd", False),
        ("sd.qd", "parent", "sd.qd", True),
        ("sd.qd", "parent", "sd.qd.laoshan", True),  # the parent's other children
        ("sd.qd", "parent", "sd", True),  # forwarded to the parent by its own parent
        ("sd.qd", "parent", "sd.qd.shinan", False),  # this node's own callers
        ("sd.qd", "parent", "sd.qd.shinan.a", False),
        ("sd.qd", None, "sd.qd", False),  # not linked
    ],
)
def test_a_linked_node_vouches_for_its_side_of_the_link(
    peer: str, relation: str | None, node: str, ok: bool
) -> None:
    assert assertions.vouches_for(peer, relation, HERE, node) is ok


def _token(key: Ed25519PrivateKey, peer: str, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": peer, "aud": HERE, "iat": now, "exp": now + 60, "jti": "j1"}
    base.update({"purpose": "invoke", "route": ROUTE, "visited": [peer]})
    return jwt.encode({**base, **claims}, key, algorithm="EdDSA")


def test_verify_checks_the_caller_against_the_peers_side() -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()

    def verify(peer: str, relation: str, **claims: Any) -> Forwarded:
        token = _token(key, peer, **claims)
        return assertions.verify(pub, peer=peer, node_id=HERE, token=token, relation=relation)

    child = verify("sd.qd.shinan.a", "child", sub="u", node="sd.qd.shinan.a.b", role="consumer")
    assert (child.node, child.issuer, child.scopes) == ("sd.qd.shinan.a.b", "sd.qd.shinan.a.b", ())
    with pytest.raises(Forbidden, match="vouch"):
        verify("sd.qd.shinan.a", "child", sub="u", node="sd.qd.laoshan")
    with pytest.raises(Forbidden, match="department"):
        verify("sd.qd.shinan.a", "child", sub="u", dept="sd.qd.laoshan.police")
    with pytest.raises(Forbidden):
        verify("sd.qd", "parent", sub="u", node="sd.qd.shinan")
    # A name the peer cannot vouch for is not the caller's issuer: its node is.
    sso = verify("sd.qd", "parent", sub="u", node="sd.qd.laoshan", origin_iss="https://sso")
    assert (sso.issuer, sso.node) == ("sd.qd.laoshan", "sd.qd.laoshan")
    # No node claim: the peer's own caller.
    assert verify("sd.qd", "parent", sub="u").node == "sd.qd"
    anonymous = verify("sd.qd", "parent", deadline=123.5, visited=["sd", "sd.qd"])
    assert not anonymous.authenticated
    assert (anonymous.visited, anonymous.deadline) == (("sd", "sd.qd"), 123.5)
    with pytest.raises(Unauthorized, match="route"):
        verify("sd.qd", "parent", route="/v1/capabilities/x")
    with pytest.raises(Unauthorized, match="visited"):
        verify("sd.qd", "parent", visited="sd.qd")
    with pytest.raises(Unauthorized, match="deadline"):
        verify("sd.qd", "parent", deadline="soon")


def test_issue_binds_route_visited_and_deadline() -> None:
    key = Ed25519PrivateKey.generate()
    caller = Identity(subject="u", role="consumer", issuer="sd.qd", node="sd.qd")
    token = assertions.issue(
        key,
        node_id="sd.qd",
        audience=HERE,
        purpose="invoke",
        caller=caller,
        route=ROUTE,
        visited=("sd",),
        deadline=99.0,
    )
    got = assertions.verify(
        key.public_key(), peer="sd.qd", node_id=HERE, token=token, relation="parent"
    )
    assert (got.route, got.visited, got.deadline, got.subject) == (
        ROUTE,
        ("sd", "sd.qd"),
        99.0,
        "u",
    )


def test_an_assertion_serves_its_purpose_and_route_once() -> None:
    seen = OneTimeIds()
    call = Forwarded(peer="sd.qd", route=ROUTE, jti="a", expires=time.time() + 60)
    with pytest.raises(Unauthorized, match="made for"):
        assertions.check_use(call, "POST", "/v1/invoke/other/x@1.0.0", seen)
    with pytest.raises(Unauthorized, match="made for"):
        assertions.check_use(call, "GET", ROUTE, seen)
    assertions.check_use(call, "POST", ROUTE, seen)
    with pytest.raises(Unauthorized, match="used before"):
        assertions.check_use(call, "POST", ROUTE, seen)
    feed = Forwarded(peer="sd.qd", purpose="cascade", jti="b")
    assertions.check_use(feed, "GET", "/v1/cascade/changes", seen)
    assertions.check_use(feed, "GET", "/v1/cascade/changes", seen)  # not one-time
    with pytest.raises(Unauthorized, match="cascade routes only"):
        assertions.check_use(feed, "POST", ROUTE, seen)
    assertions.check_use(Identity(subject="local"), "GET", "/anything", seen)


def test_one_time_ids_are_kept_until_expiry_and_bounded() -> None:
    seen = OneTimeIds(max_ids=2)
    now = 1000.0
    seen.use("a", now + 10, peer="p", now=now)
    seen.use("a", now + 10, peer="q", now=now)  # another peer's id
    with pytest.raises(Unavailable):
        seen.use("b", now + 10, peer="p", now=now)  # full of live ids: no room for replays
    with pytest.raises(Unauthorized):
        seen.use("a", now + 10, peer="p", now=now + 5)
    seen.use("c", now + 30, peer="p", now=now + 11)  # the expired ones are gone
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("binding", "outside"),
    [
        ({"type": "inprocess"}, []),
        ({"type": "inprocess", "config": {"max_concurrency": 2}}, []),
        ({"type": "rayserve", "config": {"num_replicas": 2, "num_gpus": 1}}, []),
        ({"type": "triton", "config": {"instances": 2, "kind": "gpu"}}, []),
        ({"type": "remote", "config": {"node": "sd.qd"}}, ["type"]),
        ({"type": "remote"}, ["type"]),
        ({"type": "bentoml", "config": {"url": "http://x"}}, ["config.url"]),
        ({"type": "rayserve", "config": {"address": "ray://x"}}, ["config.address"]),
        ({"type": "triton", "config": {"model": "m", "url": "u"}}, ["config.model", "config.url"]),
        ({"type": "someplugin", "config": {"endpoint": "x"}}, ["config.endpoint"]),
        ({"type": "someplugin"}, []),
    ],
)
def test_only_listed_settings_are_an_authors(binding: dict[str, Any], outside: list[str]) -> None:
    assert reaching_out(RuntimeBinding(**binding)) == outside


def test_only_the_nodes_operators_bind_outside() -> None:
    node = "sd.qd"
    assert may_bind_outside(Identity("ops", "operator", scopes=(node,)), node)
    assert may_bind_outside(Identity("boss", "admin", scopes=(node,)), node)
    assert not may_bind_outside(Identity("dev", "author", scopes=(node,)), node)
    assert not may_bind_outside(Identity("boss", "admin", scopes=("sd.qd.traffic",)), node)
    assert not may_bind_outside(Identity("ops", "operator", scopes=(node,), peer="sd"), node)
