"""Access requests on the pages: the capability page's form for a visitor who may find
it but not call it, the deciders' page (/access-requests) with approve and refuse forms,
and the requester seeing 待审批, 未通过：reason and 已批准 (有效期至 …)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.conftest import NODE_ID, Node
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE

NS = f"{NODE_ID}.env"
OTHER = f"{NODE_ID}.office"
PAGE = f"/c/{NS}/noise"


def _as(node: Node, role: str, scope: str, subject: str, dept: str | None = None) -> None:
    key = tokens.load_or_create_key(node.settings.key_path)
    who = Identity(
        subject=subject, role=role, scopes=(scope,), issuer=NODE_ID, node=NODE_ID, department=dept
    )
    token = tokens.issue_session(key, node_id=NODE_ID, identity=who, ttl=timedelta(hours=1))
    node.client.cookies.set(SESSION_COOKIE, token)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_ask_on_the_capability_page_and_decide_on_the_requests_page(sqlite_node: Node) -> None:
    node = sqlite_node
    resp = node.publish(
        NS, "noise", title="噪声检测", classification="internal",
        access={"invoke": {"departments": [NS]}}, headers=node.auth("admin"),
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    _as(node, "consumer", OTHER, "wang", OTHER)
    page = node.client.get(PAGE)
    assert page.status_code == 200 and "申请调用权限" in page.text
    # No reason: the page says what is missing.
    missing = node.client.post(f"{PAGE}/access-request", data={"reason": ""})
    assert missing.status_code == 422
    done = node.client.post(f"{PAGE}/access-request", data={"reason": "季度报表需要"})
    assert done.status_code == 200 and "待审批" in done.text  # followed the 303 back
    assert 'action="/c/' + NS + '/noise/access-request"' not in done.text
    # A form from another site is refused.
    foreign = node.client.post(
        f"{PAGE}/access-request", data={"reason": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403

    _as(node, "author", NS, "li")
    listing = node.client.get("/access-requests")
    assert listing.status_code == 200 and 'href="/access-requests"' in listing.text
    text = _text(listing.text)
    assert (
        "季度报表需要" in text and "wang" in text and "噪声检测" in text and "待审批（1）" in text
    )
    (request_id,) = re.findall(r'data-request="([0-9a-f]{32})"', listing.text)
    no_reason = node.client.post(f"/access-requests/{request_id}/refuse", data={"reason": ""})
    assert no_reason.status_code == 422
    refused = node.client.post(
        f"/access-requests/{request_id}/refuse", data={"reason": "请先走数据共享流程"}
    )
    assert refused.status_code == 200 and "暂无待审批的申请" in refused.text

    _as(node, "consumer", OTHER, "wang", OTHER)
    page = node.client.get(PAGE)
    assert "未通过：请先走数据共享流程" in _text(page.text).replace(" ：", "：").replace(
        "： ", "："
    )
    node.client.post(f"{PAGE}/access-request", data={"reason": "补充了说明"})

    # Another department's author sees nothing to decide (and no link to it in the nav
    # would help: the list is empty).
    _as(node, "author", f"{NODE_ID}.water", "zhao")
    assert "暂无待审批的申请" in node.client.get("/access-requests").text

    _as(node, "admin", NODE_ID, "root")
    listing = node.client.get("/access-requests")
    (request_id,) = re.findall(r'data-request="([0-9a-f]{32})"', listing.text)
    until = (datetime.now(UTC) + timedelta(days=90)).date().isoformat()
    approved = node.client.post(
        f"/access-requests/{request_id}/approve", data={"expires_on": until}
    )
    assert approved.status_code == 200
    _as(node, "consumer", OTHER, "wang", OTHER)
    page = _text(node.client.get(PAGE).text)
    assert "已批准" in page and f"有效期至 {until}" in page
    # English pages too.
    node.client.cookies.set("yunnao_lang", "en")
    assert "Approved" in _text(node.client.get(PAGE).text)
