"""Single sign-on: a node accepts bearer tokens from a real OpenID Connect provider
process (discovery, JWKS, token endpoint) and refuses every bad one with a clear 401."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, assert_problem
from tests.realservers.oidc import OidcProvider
from yunnao.app import create_app
from yunnao.registry.identity.oidc import OidcConfig, OidcVerifier
from yunnao.settings import Settings

pytestmark = pytest.mark.slow

NS = f"{NODE_ID}.traffic"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    idp = OidcProvider(tmp_path_factory.mktemp("oidc")).start()
    yield idp
    idp.stop()


@pytest.fixture
def client(provider: OidcProvider, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        node_id=NODE_ID,
        data_dir=tmp_path / "node",
        oidc_issuer=provider.issuer,
        oidc_audience="yunnao",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def publish(client: TestClient, token: str, name: str = "flow") -> object:
    body = {"version": "1.0.0", "title": "流量", "classification": "internal"}
    return client.post(f"/v1/capabilities/{NS}/{name}/versions", json=body, headers=bearer(token))


def test_a_provider_token_signs_in_with_its_role_node_and_department(
    provider: OidcProvider, client: TestClient
) -> None:
    author = provider.token("wang.li", role="author", node=NODE_ID, department="traffic")
    assert publish(client, author).status_code == 201
    # Signed-in staff see the internal entry; anonymous callers do not.
    consumer = provider.token("li.na", role=["viewer", "consumer"], node=NODE_ID)
    assert client.get(f"/v1/capabilities/{NS}/flow", headers=bearer(consumer)).status_code == 200
    assert client.get(f"/v1/capabilities/{NS}/flow").status_code == 404
    # Another department's author may not write here.
    other = provider.token("zhao.lei", role="author", node=NODE_ID, department="water")
    assert_problem(publish(client, other, "x"), 403)


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"expires_in": -300}, "expired"),
        ({"audience": "someone-else"}, "audience"),
        ({"iss": "http://127.0.0.1:1/other-realm"}, "does not accept"),
    ],
)
def test_expired_misaddressed_and_foreign_tokens_are_refused(
    provider: OidcProvider, client: TestClient, claims: dict, says: str
) -> None:
    token = provider.token("wang.li", role="author", node=NODE_ID, **claims)
    body = assert_problem(publish(client, token), 401)
    assert says in body["detail"]


def _forge(token: str, *, header: dict | None = None, payload: dict | None = None) -> str:
    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    def encode(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    head, body, signature = token.split(".")
    new_head = encode({**decode(head), **(header or {})})
    new_body = encode({**decode(body), **(payload or {})})
    return f"{new_head}.{new_body}.{signature}"


def test_alg_none_and_tampered_tokens_are_refused(
    provider: OidcProvider, client: TestClient
) -> None:
    token = provider.token("wang.li", role="consumer", node=NODE_ID)
    unsigned = _forge(token, header={"alg": "none"}).rsplit(".", 1)[0] + "."
    assert "not accepted" in assert_problem(publish(client, unsigned), 401)["detail"]
    hmac = _forge(token, header={"alg": "HS256"})
    assert "not accepted" in assert_problem(publish(client, hmac), 401)["detail"]
    promoted = _forge(token, payload={"role": "admin"})
    assert "signature" in assert_problem(publish(client, promoted), 401)["detail"]
    made_up_key = _forge(token, header={"kid": "no-such-key"})
    assert "lacks" in assert_problem(publish(client, made_up_key), 401)["detail"]


def test_rotated_keys_are_fetched_again(provider: OidcProvider) -> None:
    verifier = OidcVerifier(
        OidcConfig(issuer=provider.issuer, audience="yunnao", refetch_seconds=0)
    )
    before = provider.token("wang.li", role="author", node=NODE_ID)
    assert verifier.verify(before).subject == "wang.li"
    provider.rotate()
    after = provider.token("li.na", role="author", node=NODE_ID)
    # A key id the cache lacks makes the verifier read the JWKS again ...
    assert verifier.verify(after).subject == "li.na"
    # ... and a token signed before the rotation stays valid while the provider lists
    # its key.
    assert verifier.verify(before).subject == "wang.li"
    # Unknown key ids do not make it ask the provider on every request.
    slow = OidcVerifier(replace(verifier.config, refetch_seconds=3600))
    slow.verify(after)
    provider.rotate()
    newest = provider.token("zhao.lei", role="author", node=NODE_ID)
    with pytest.raises(Exception, match="lacks"):
        slow.verify(newest)


def test_an_unreachable_provider_is_a_503_not_a_500(provider: OidcProvider, tmp_path: Path) -> None:
    settings = Settings(
        node_id=NODE_ID,
        data_dir=tmp_path / "node",
        oidc_issuer=provider.issuer,
        oidc_jwks_url="http://127.0.0.1:1/jwks",  # nothing listens there
    )
    token = provider.token("wang.li", role="consumer", node=NODE_ID)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/v1/capabilities", headers=bearer(token)), 503)
        assert "unreachable" in body["detail"]


# ---------------------------------------------------------------- the web catalog


def _log_in(client: TestClient, *, tamper: str | None = None, **claims: str) -> httpx.Response:
    """Sign in at the catalog through the provider's login form: start at /signin/sso,
    fill the provider's form, come back to the node's callback."""
    start = client.get("/signin/sso?next=/ops", follow_redirects=False)
    assert start.status_code == 303
    authorize = start.headers["location"]
    query = dict(httpx.URL(authorize).params)
    assert query["code_challenge_method"] == "S256" and query["client_id"] == "yunnao"
    assert query["redirect_uri"] == "http://testserver/signin/callback"
    form_page = httpx.get(authorize, timeout=10)
    assert form_page.status_code == 200 and "<form" in form_page.text
    hidden = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form_page.text))
    back = httpx.post(authorize, data={**hidden, **claims}, timeout=10)
    assert back.status_code == 302
    callback = httpx.URL(back.headers["location"])
    assert callback.path == "/signin/callback"
    params = dict(callback.params)
    if tamper == "state":
        params["state"] = "forged"
    if tamper == "verifier":  # the code goes with another challenge: PKCE refuses it
        flow = json.loads(base64.urlsafe_b64decode(client.cookies["yunnao_sso_flow"]))
        forged = json.dumps({**flow, "verifier": "x" * 64}).encode()
        client.cookies.delete("yunnao_sso_flow")
        client.cookies.set("yunnao_sso_flow", base64.urlsafe_b64encode(forged).decode())
    return client.get("/signin/callback", params=params, follow_redirects=False)


def test_the_catalog_signs_in_through_the_provider(client: TestClient) -> None:
    assert "/signin/sso" in client.get("/signin").text
    done = _log_in(client, username="zhang.wei", role="operator", node=NODE_ID)
    assert done.status_code == 303 and done.headers["location"] == "/ops"
    assert "HttpOnly" in done.headers["set-cookie"]
    page = client.get("/ops")
    assert page.status_code == 200 and "zhang.wei" in page.text
    # A state that is not this browser's is refused, and no session is made.
    client.cookies.clear()
    forged = _log_in(client, tamper="state", username="mallory", role="admin", node=NODE_ID)
    assert forged.status_code == 403 and "yunnao_session" not in forged.headers.get(
        "set-cookie", ""
    )
    # A code redeemed without this browser's verifier is refused by the provider.
    client.cookies.clear()
    stolen = _log_in(client, tamper="verifier", username="eve", role="admin", node=NODE_ID)
    assert stolen.status_code == 401 and "did not redeem the code" in stolen.text
    assert client.get("/ops").status_code == 401
