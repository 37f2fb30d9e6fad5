"""The review pages in a real browser (Playwright driving Debian's Chromium) against two
real nodes: a city that reviews (``YUNNAO_CASCADE_REVIEW=true``) and a district that
follows it. A reviewer signs in at the city, opens the queue (审核), reads a held entry,
approves one and refuses another with a reason; at the district, the capability pages
say 已通过 and 未通过（reason）. Neither page is wider than a laptop's or a phone's
screen. Screenshots go to the test's temporary directory (``YUNNAO_UI_SHOTS=DIR``
copies them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.cascade_support import Site, until
from tests.catalog_ui.test_fixes_browser import SIZES, assert_fits, shot  # noqa: F401
from tests.catalog_ui.test_ui_browser import sign_in
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
NS = f"{SHINAN}.traffic"
REASON = "接口未注明数据来源，请补充后重新提交"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    root = tmp_path_factory.mktemp("review-ui")
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY, env={
        "YUNNAO_CASCADE_REVIEW": "true", "YUNNAO_NODE_TITLE": "青岛市"}))  # fmt: skip
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN,
                                        env={"YUNNAO_NODE_TITLE": "市南区"}))  # fmt: skip
    try:
        for site in (city, shinan):
            site.proc.start(timeout=120)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url, "--follow")
        shinan.publish("traffic", "flow", classification="public", title="客流预测",
                       summary="按站点预测未来一小时客流",
                       input_schema={"type": "object", "required": ["station"],
                                     "properties": {"station": {"type": "string"}}})  # fmt: skip
        shinan.publish("traffic", "plates", classification="internal", title="车牌识别")
        yield city, shinan
    finally:
        for site in (city, shinan):
            site.proc.stop()


def test_a_reviewer_approves_and_refuses_and_the_district_sees_it(
    pair: tuple[Site, Site],
    browser,
    shot,  # noqa: F811
) -> None:
    city, shinan = pair
    for size, (width, height) in SIZES.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        page: Page = context.new_page()
        sign_in(page, city.url, "reviewer", "李审核")
        page.get_by_role("link", name="审核", exact=True).click()
        held = page.locator("article[data-review]")
        until(lambda p=page, h=held: p.reload() and h.count() == 2, 60, "both in the queue")
        expect(page.locator("h1")).to_have_text("审核")
        expect(page.locator('article[data-review$="/flow"]')).to_contain_text("客流预测")
        assert_fits(page, f"/review ({size})")
        shot(page, f"queue-{size}")
        page.locator('article[data-review$="/flow"] h3 a').click()
        expect(page.locator("#review-state")).to_have_text("审核中")
        expect(page.locator(".held-version table.schema").first).to_contain_text("station")
        assert_fits(page, f"the held entry ({size})")
        shot(page, f"detail-{size}")
        context.close()

    page = browser.new_page()
    sign_in(page, city.url, "reviewer", "李审核")
    page.goto(f"{city.url}/review/{NS}/flow")
    page.locator("#approve").click()
    expect(page.locator('article[data-review$="/flow"]')).to_have_attribute(
        "data-state", "approved"
    )
    page.goto(f"{city.url}/review")
    plates = page.locator('article[data-review$="/plates"]')
    plates.get_by_label("原因").fill(REASON)
    plates.get_by_role("button", name="不予批准").click()
    expect(page.locator('article[data-review$="/plates"]')).to_contain_text(REASON)
    shot(page, "refused")

    author = browser.new_page()
    sign_in(author, shinan.url, "author", "张作者")
    author.goto(f"{shinan.url}/c/{NS}/plates")
    until(lambda: author.reload() and "未通过" in author.locator("#review-line").inner_text(),
          60, "the refusal reaches the district")  # fmt: skip
    expect(author.locator("#review-line")).to_contain_text(f"（{REASON}）")
    expect(author.locator("#review-line .review")).to_have_attribute("data-reviewer", CITY)
    expect(author.locator("#review-line")).to_contain_text("青岛市审核")  # its name, not its id
    shot(author, "district-refused")
    author.goto(f"{shinan.url}/c/{NS}/flow")
    until(lambda: author.reload() and "已通过" in author.locator("#review-line").inner_text(),
          60, "the approval reaches the district")  # fmt: skip
    author.set_viewport_size({"width": 390, "height": 844})
    assert_fits(author, "the district's capability page (phone)")
    shot(author, "district-approved-phone")
