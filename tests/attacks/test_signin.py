"""Item 3: the dev sign-in cannot be reached from the network, and a web page session is
no API credential.

Real ``yunnao serve`` processes on embedded defaults (where the dev sign-in used to be
on whatever ``--host`` said): one listening on every interface, one on loopback, one
that is told to turn the dev sign-in on while listening on every interface, and one
signing in through a real OpenID Connect provider. The tests only ever talk to
127.0.0.1: a node listening on 0.0.0.0 must refuse the dev sign-in even then.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cascade_support import Site
from tests.conftest import assert_problem
from tests.realservers.oidc import OidcProvider
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

WIDE, LOOP, SSO = "sd.qd.signinwide", "sd.qd.signinloop", "sd.qd.signinsso"
SESSION = "yunnao_session"
BANNER = "dev-signin-banner"


def _site(root: Path, node_id: str, *args: str, env: dict[str, str] | None = None) -> Site:
    return Site(node_id, YunnaoProcess(root / node_id, "--node-id", node_id, *args, env=env))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Embedded defaults, listening on every interface."""
    site = _site(tmp_path_factory.mktemp("signin"), WIDE, "--host", "0.0.0.0")
    site.proc.start(timeout=120)
    yield site
    site.proc.stop()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Embedded defaults, listening on loopback only (the default --host)."""
    site = _site(tmp_path_factory.mktemp("signin"), LOOP)
    site.proc.start(timeout=120)
    yield site
    site.proc.stop()


def _dev_signin(site: Site, role: str = "admin", **headers: str) -> httpx.Response:
    form = {"subject": "mallory", "role": role, "scope": site.node_id}
    return httpx.post(
        f"{site.url}/signin",
        data=form,
        headers={"Origin": site.url, **headers},
        follow_redirects=False,
        timeout=30,
    )


def _publish_as(site: Site, token: str, name: str) -> httpx.Response:
    body = {"version": "1.0.0", "title": "入侵", "classification": "public"}
    return httpx.post(
        f"{site.url}/v1/capabilities/{site.node_id}.attack/{name}/versions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _absent(site: Site, name: str) -> None:
    """Nothing was published: an admin of the node does not find it."""
    resp = site.get(f"{site.node_id}.attack/{name}", headers=site.auth("admin"))
    assert resp.status_code == 404, resp.text


# ---------------------------------------------------------------- off the network


def test_a_node_listening_on_every_interface_refuses_the_dev_sign_in(wide: Site) -> None:
    page = httpx.get(f"{wide.url}/signin", timeout=30)
    assert page.status_code == 200
    assert 'name="role"' not in page.text  # no form to choose who you are
    assert "127.0.0.1" in page.text and "yunnao token create" in page.text  # how, instead
    assert BANNER not in page.text

    refused = _dev_signin(wide, "admin")
    assert refused.status_code == 403, refused.text
    assert "loopback" in refused.text or "dev sign-in is off" in refused.text
    assert SESSION not in refused.headers.get("set-cookie", "")
    # Nothing changed: nobody is signed in, the catalog page offers sign-in.
    home = httpx.get(wide.url, cookies=refused.cookies, timeout=30)
    assert home.status_code == 200 and "mallory" not in home.text and BANNER not in home.text


def test_dev_sign_in_forced_on_a_network_listener_refuses_to_start(tmp_path: Path) -> None:
    node = _site(
        tmp_path, "sd.qd.signinforced", "--host", "0.0.0.0", env={"YUNNAO_UI_DEV_SIGNIN": "true"}
    ).proc
    try:
        with pytest.raises(RuntimeError) as refused:
            node.start(timeout=120)
    finally:
        node.stop()
    assert "loopback" in str(refused.value), str(refused.value)
    assert "Traceback" not in node.output()


# ---------------------------------------------------------------- on loopback


def test_on_loopback_the_dev_sign_in_works_and_every_page_says_so(loop: Site) -> None:
    for path in ("/", "/signin", "/c/sd.qd.nowhere/nothing"):
        page = httpx.get(loop.url + path, timeout=30)
        assert BANNER in page.text, path
        assert "开发登录" in page.text and "不可用于生产环境" in page.text, path
    done = _dev_signin(loop, "admin")
    assert done.status_code == 303, done.text
    home = httpx.get(loop.url, cookies=done.cookies, timeout=30)
    assert "mallory" in home.text and BANNER in home.text


def test_a_dev_session_cookie_is_refused_as_an_api_bearer_token(loop: Site) -> None:
    done = _dev_signin(loop, "admin")
    assert done.status_code == 303, done.text
    session = done.cookies[SESSION]
    # The pages take it ...
    assert httpx.get(f"{loop.url}/ops", cookies={SESSION: session}, timeout=30).status_code == 200
    # ... the API does not: a write with it is 401 and changes nothing.
    resp = _publish_as(loop, session, "cookie-write")
    body = assert_problem(resp, 401)
    assert "session" in body["detail"], body
    _absent(loop, "cookie-write")
    for method, path in [("GET", "/v1/keys"), ("GET", "/metrics"), ("GET", "/v1/audit")]:
        other = httpx.request(
            method, loop.url + path, headers={"Authorization": f"Bearer {session}"}, timeout=30
        )
        assert other.status_code == 401, (path, other.text)


def test_an_api_token_set_as_the_cookie_signs_nobody_in(loop: Site) -> None:
    token = loop.token("admin", "root-of-node")
    ops = httpx.get(f"{loop.url}/ops", cookies={SESSION: token}, timeout=30)
    assert ops.status_code == 401, ops.text
    assert "root-of-node" not in httpx.get(loop.url, cookies={SESSION: token}, timeout=30).text


def test_the_dev_sign_in_refuses_what_a_proxy_relays(loop: Site) -> None:
    refused = _dev_signin(loop, "admin", **{"X-Forwarded-For": "203.0.113.7"})
    assert refused.status_code == 403 and "proxy" in refused.text, refused.text
    assert SESSION not in refused.headers.get("set-cookie", "")


# ---------------------------------------------------------------- single sign-on


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, OidcProvider]]:
    root = tmp_path_factory.mktemp("signin-sso")
    idp = OidcProvider(root / "oidc").start()
    site = _site(
        root, SSO, env={"YUNNAO_OIDC_ISSUER": idp.issuer, "YUNNAO_OIDC_AUDIENCE": "yunnao"}
    )
    try:
        site.proc.start(timeout=120)
        yield site, idp
    finally:
        site.proc.stop()
        idp.stop()


def test_a_single_sign_on_session_cookie_is_no_api_token(sso: tuple[Site, OidcProvider]) -> None:
    site, _ = sso
    with httpx.Client(base_url=site.url, timeout=30) as browser:
        start = browser.get("/signin/sso?next=/ops")
        assert start.status_code == 303, start.text
        authorize = start.headers["location"]
        form = httpx.get(authorize, timeout=30)
        hidden = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.text))
        claims = {"username": "zhang.wei", "role": "admin", "node": SSO}
        back = httpx.post(authorize, data={**hidden, **claims}, timeout=30)
        assert back.status_code == 302, back.text
        done = browser.get(back.headers["location"])
        assert done.status_code == 303, done.text
        session = browser.cookies[SESSION]
        assert browser.get("/ops").status_code == 200  # the pages take the session
    body = assert_problem(_publish_as(site, session, "sso-cookie-write"), 401)
    assert "session" in body["detail"], body
    _absent(site, "sso-cookie-write")
