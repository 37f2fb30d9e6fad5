"""Access requests (权限申请) in a real browser: Playwright driving Debian's Chromium
against a real ``yunnao serve``. A signed-in consumer who may find a capability but not
call it asks on its page; an author decides on /access-requests; both pages fit the
screen at a laptop's and at a phone's size. Screenshots go to the test's temporary
directory (``YUNNAO_UI_SHOTS=DIR`` copies them to ``DIR``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from tests.catalog_ui.test_fixes_browser import SIZES, assert_fits, shot  # noqa: F401
from tests.catalog_ui.test_ui_browser import sign_in
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.registry.identity import tokens

pytestmark = pytest.mark.slow

CITY = "sd.qd"
NS = f"{CITY}.env"
PAGE = f"/c/{NS}/noise-check"


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunnaoProcess]:
    node = YunnaoProcess(tmp_path_factory.mktemp("access-ui") / "city", "--node-id", CITY)
    node.start(timeout=180)
    try:
        key = tokens.load_or_create_key(node.cwd / "var" / "node_key.pem")
        admin = tokens.issue(
            key, node_id=CITY, subject="root", role="admin", scopes=[CITY], ttl=timedelta(hours=1)
        )
        body = {
            "version": "1.0.0",
            "title": "噪声超标检测",
            "summary": "按站点检测夜间噪声是否超标",
            "classification": "internal",
            # Found by everyone signed in; called only by its own department.
            "access": {"invoke": {"departments": [NS]}},
        }
        resp = httpx.post(
            f"{node.url}/v1/capabilities/{NS}/noise-check/versions",
            json=body,
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert resp.status_code == 201, resp.text
        yield node
    finally:
        node.stop()


@pytest.mark.parametrize("size", SIZES)
def test_ask_and_decide_in_the_browser(city: YunnaoProcess, browser, size: str, shot) -> None:  # noqa: F811
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    page = context.new_page()
    requester = f"王芳-{size}"
    try:
        sign_in(page, city.url, "consumer", requester)
        page.goto(city.url + PAGE)
        panel = page.locator("section#access")
        expect(panel).to_contain_text("调用权限")
        panel.get_by_label("原因").fill("季度环境报告需要汇总各站点的噪声超标情况")
        assert_fits(page, "the capability page with the request form")
        panel.get_by_role("button", name="申请调用权限").click()
        expect(page.locator('section#access li[data-status="pending"]')).to_contain_text("待审批")
        assert_fits(page, "the capability page with a pending request")
        shot(page, "pending")

        sign_in(page, city.url, "author", f"李强-{size}")
        page.get_by_role("link", name="权限申请").click()
        item = page.locator("article.access-item", has_text=requester)
        expect(item).to_contain_text("季度环境报告")
        assert_fits(page, "the access requests page")
        shot(page, "requests")
        item.locator("form.approve").get_by_label("有效期至（可选）").fill("2031-12-31")
        item.get_by_role("button", name="批准", exact=True).click()
        expect(page.locator("article.access-item", has_text=requester)).to_have_count(0)
        expect(page.locator("tr[data-status=approved]", has_text=requester)).to_contain_text(
            "有效期至 2031-12-31"
        )

        sign_in(page, city.url, "consumer", requester)
        page.goto(city.url + PAGE)
        expect(page.locator("section#access")).to_contain_text("已批准 有效期至 2031-12-31")
        assert_fits(page, "the capability page, approved")
        shot(page, "approved")
    finally:
        context.close()
