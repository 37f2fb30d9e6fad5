"""Remembered bearer tokens (:class:`VerifiedTokens` in the identity middleware): a node
token that verified is not verified again until its ``exp`` (at most a minute); a
refusal, an API key and a linked node's assertion are never remembered. (API key
revocation through the whole app: tests/registry/test_api_keys.py.)"""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.plugins.errors import Unauthorized
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import CACHE_SECONDS, VerifiedTokens


def _counting(node: Node) -> tuple[VerifiedTokens, list[str]]:
    public = tokens.load_or_create_key(node.settings.key_path).public_key()
    seen: list[str] = []

    def verify(token: str) -> Identity:
        seen.append(token)
        return tokens.verify(public, NODE_ID, token)

    return VerifiedTokens(verify), seen


def test_a_node_token_is_verified_once_until_it_expires(sqlite_node: Node) -> None:
    verified, seen = _counting(sqlite_node)
    token = sqlite_node.token("consumer", NODE_ID, ttl=timedelta(seconds=30))
    first, second = verified(token), verified(token)
    assert first == second and first.subject == "tester" and seen == [token]
    until = verified._known[token][0]
    assert until <= jwt.decode(token, options={"verify_signature": False})["exp"]
    long = sqlite_node.token("consumer", NODE_ID, ttl=timedelta(hours=1))
    verified(long)
    assert verified._known[long][0] <= time.time() + CACHE_SECONDS  # a minute at most


def test_refusals_and_api_keys_are_never_remembered(sqlite_node: Node) -> None:
    verified, seen = _counting(sqlite_node)
    token = sqlite_node.token("consumer", NODE_ID)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    for _ in range(2):
        with pytest.raises(Unauthorized):
            verified(forged)
    assert seen == [forged, forged] and not verified._known
    # Through the app: the real token works every time, the forged one never does.
    for _ in range(2):
        good = sqlite_node.client.get(
            "/v1/capabilities", headers={"Authorization": f"Bearer {token}"}
        )
        assert good.status_code == 200
        bad = sqlite_node.client.get(
            "/v1/capabilities", headers={"Authorization": f"Bearer {forged}"}
        )
        assert_problem(bad, 401)
