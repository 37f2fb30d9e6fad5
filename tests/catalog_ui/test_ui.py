"""The web catalog's pages in process: access through the session cookie, the dev
sign-in's limits, forms posted from other sites, sanitized Markdown, the message
catalogs, and the schema helpers behind the "try it" form."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node
from yunnao.catalog_ui import forms, i18n, text
from yunnao.plugins.errors import ValidationFailed
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE

NS = f"{NODE_ID}.traffic"
UI = Path(__file__).resolve().parents[2] / "catalog_ui"


def _session_token(node: Node, role: str = "consumer", *scopes: str) -> str:
    """A web page session, as the sign-in makes it (audience <node>#ui)."""
    key = tokens.load_or_create_key(node.settings.key_path)
    who = Identity(
        subject="tester", role=role, scopes=scopes or (NODE_ID,), issuer=NODE_ID, node=NODE_ID
    )
    return tokens.issue_session(key, node_id=NODE_ID, identity=who, ttl=timedelta(hours=1))


def _session(node: Node, role: str = "consumer", *scopes: str) -> None:
    node.client.cookies.set(SESSION_COOKIE, _session_token(node, role, *scopes))


def _loopback(node: Node) -> TestClient:
    """A client of the same app whose requests come from 127.0.0.1 (the default
    TestClient's address, "testclient", is not loopback: the dev sign-in refuses it)."""
    return TestClient(node.client.app, client=("127.0.0.1", 50000))


def test_pages_show_what_the_session_may_discover(sqlite_node: Node) -> None:
    sqlite_node.publish(NS, "open", title="开放能力", classification="public")
    sqlite_node.publish(NS, "staff", title="内部能力", classification="internal")
    page = sqlite_node.client.get("/")
    assert page.status_code == 200 and "开放能力" in page.text and "内部能力" not in page.text
    assert sqlite_node.client.get(f"/c/{NS}/staff").status_code == 404
    _session(sqlite_node)
    page = sqlite_node.client.get("/")
    assert "内部能力" in page.text and "共 2 项能力" in page.text
    assert sqlite_node.client.get(f"/c/{NS}/staff").status_code == 200
    # The cookie is for the pages only: the API ignores it (no cross-site API calls).
    api = sqlite_node.client.get(f"/v1/capabilities/{NS}/staff")
    assert api.status_code == 404
    # ... and refuses its value as a bearer token; an API token is no session either.
    session = sqlite_node.client.cookies[SESSION_COOKIE]
    sqlite_node.client.cookies.clear()
    as_bearer = sqlite_node.client.get(
        f"/v1/capabilities/{NS}/staff", headers={"Authorization": f"Bearer {session}"}
    )
    assert as_bearer.status_code == 401 and "web page session" in as_bearer.text
    sqlite_node.client.cookies.set(SESSION_COOKIE, sqlite_node.token("admin", NODE_ID))
    assert "内部能力" not in sqlite_node.client.get("/").text
    # An expired or forged cookie is a signed-out visitor, not an error.
    sqlite_node.client.cookies.set(SESSION_COOKIE, "garbage")
    assert sqlite_node.client.get(f"/c/{NS}/staff").status_code == 404
    assert sqlite_node.client.get("/").status_code == 200


def test_the_dev_sign_in_and_its_limits(sqlite_node: Node) -> None:
    client = _loopback(sqlite_node)
    form = {"subject": "王芳", "role": "author", "scope": NS, "department": NS}
    # sqlite_node is given a database URL: not embedded defaults, so the dev sign-in is off.
    refused = client.post("/signin", data=form, follow_redirects=False)
    assert refused.status_code == 403 and "dev sign-in is off" in refused.text
    assert "dev-signin-banner" not in client.get("/").text
    sqlite_node.settings.ui_dev_signin = True
    try:
        assert "dev-signin-banner" in client.get("/").text
        # Only from this machine, and not through a proxy.
        remote = sqlite_node.client.post("/signin", data=form, follow_redirects=False)
        assert remote.status_code == 403 and "this node&#39;s own machine" in remote.text
        proxied = client.post("/signin", data=form, headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403 and "proxy" in proxied.text
        crossed = client.post(
            "/signin", data=form, headers={"Origin": "http://evil.example"}, follow_redirects=False
        )
        assert crossed.status_code == 403
        bad = client.post("/signin", data={**form, "role": "root"}, follow_redirects=False)
        assert bad.status_code == 422 and "role" in bad.text
        done = client.post("/signin?next=//evil.example/x", data=form, follow_redirects=False)
        # Never another site; signed in, staff land on the federation overview.
        assert done.status_code == 303 and done.headers["location"] == "/overview"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "王芳" in client.get("/").text
        # The session is no API credential.
        bearer = {"Authorization": f"Bearer {client.cookies[SESSION_COOKIE]}"}
        api = client.get("/v1/capabilities", headers=bearer)
        assert api.status_code == 401
        # A node listening on another address has no dev sign-in, whatever it is set to.
        sqlite_node.settings.host = "0.0.0.0"
        off = client.post("/signin", data=form, follow_redirects=False)
        assert off.status_code == 403 and "loopback" in off.text
        assert "dev-signin-banner" not in client.get("/").text
    finally:
        sqlite_node.settings.ui_dev_signin = None
        sqlite_node.settings.host = "127.0.0.1"


def test_try_it_refuses_posts_from_other_sites(sqlite_node: Node) -> None:
    sqlite_node.publish(NS, "open", classification="public")
    resp = sqlite_node.client.post(
        f"/c/{NS}/open/try",
        data={"x": "1"},
        headers={"Origin": "http://evil.example", "HX-Request": "true"},
    )
    assert resp.status_code == 200  # a fragment, showing the refusal
    assert 'data-status="403"' in resp.text and "this node&#39;s own pages" in resp.text


def test_operator_pages_need_an_operator(sqlite_node: Node) -> None:
    assert sqlite_node.client.get("/ops").status_code == 401
    _session(sqlite_node, "consumer")
    assert sqlite_node.client.get("/ops").status_code == 403
    _session(sqlite_node, "operator")
    page = sqlite_node.client.get("/ops")
    assert page.status_code == 200 and "级联节点" in page.text
    # Which process runs the store-wide duties (one per store, see registry.leadership).
    assert "后台任务" in page.text and "级联同步" in page.text and "执行进程" in page.text


def test_markdown_is_rendered_and_sanitized() -> None:
    html = str(
        text.markdown(
            "# 标题\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) "
            '<img src=x onerror="alert(1)"> **粗体**\n\n| a | b |\n|---|---|\n| 1 | 2 |'
        )
    )
    assert "<h1>标题</h1>" in html and "<strong>粗体</strong>" in html and "<table>" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript:' not in html


def test_highlight_escapes_and_marks() -> None:
    marked = str(text.highlight("Traffic <b>flow</b> 交通流量", "flow 流量"))
    assert (
        marked == "Traffic &lt;b&gt;<mark>flow</mark>&lt;/b&gt; 交通<mark>流</mark><mark>量</mark>"
    )


def test_schema_rows_and_form_fields() -> None:
    schema = {
        "type": "object",
        "required": ["counts", "mode"],
        "$defs": {"Mode": {"enum": ["fast", "exact"]}},
        "properties": {
            "counts": {"type": "array", "items": {"type": "number"}, "minItems": 3},
            "mode": {"$ref": "#/$defs/Mode"},
            "limit": {"anyOf": [{"type": "integer", "maximum": 9}, {"type": "null"}]},
            "verbose": {"type": "boolean", "default": True},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        },
    }
    rows = {r.name: r for r in forms.rows(schema)}
    assert rows["counts"].type == "array of number" and rows["counts"].required
    assert rows["counts"].constraints == "items ≥ 3"
    assert rows["mode"].type == '"fast" | "exact"'
    assert rows["limit"].type == "integer" and rows["limit"].constraints == "≤ 9"
    assert rows["where.lat"].type == "number"
    controls = forms.fields(schema, {"counts": [1, 2, 3], "mode": "exact"})
    kinds = {f.name: (f.control, f.value) for f in controls}
    assert kinds["counts"] == ("json", "[1, 2, 3]")
    assert kinds["mode"] == ("select", '"exact"')
    assert kinds["limit"] == ("integer", "")
    assert kinds["verbose"][0] == "checkbox"
    data = forms.parse(
        {"counts": "[4, 5]", "mode": '"fast"', "limit": "", "verbose": "true", "where": ""},
        controls,
    )
    assert data == {"counts": [4, 5], "mode": "fast", "verbose": True}
    with pytest.raises(ValidationFailed) as err:
        forms.parse({"counts": "[4,", "limit": "many"}, controls)
    assert [e.field for e in err.value.errors] == ["input.counts", "input.limit"]


def _used_messages() -> set[str]:
    found = set()
    for path in [*UI.glob("templates/*.html"), UI / "pages.py"]:
        source = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\(\s*"((?:[^"\\]|\\.)*)"', source))
        found |= set(re.findall(r"_\(\s*'((?:[^'\\]|\\.)*)'", source))
    return found - {"facet:"}


def test_every_message_the_pages_use_is_translated() -> None:
    zh = i18n.catalog("zh-CN")
    missing = sorted(m for m in _used_messages() if m not in zh)
    assert not missing, missing
    facets = {f"facet:{f}" for f in ("domain", "node", "namespace", "runtime", "classification")}
    assert facets <= set(zh) and facets <= set(i18n.catalog("en"))
