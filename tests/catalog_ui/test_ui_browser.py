"""The web catalog in a real browser: Playwright driving Debian's Chromium against real
``yunnao serve`` processes (a city with the example plugins, and a district linked as
its child for the operator page). Every test saves a screenshot (to the test's
temporary directory; with ``YUNNAO_UI_SCREENSHOTS=docs`` the ones the docs show go to
``docs/images/ui``)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Page, expect

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess

pytestmark = pytest.mark.slow

CITY, DISTRICT = "sd.qd", "sd.qd.shinan"
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images" / "ui"
# The screenshots docs/ui.md and the README show.
DOCS_NAMES = {
    "search_facet_open_try_and_see_the_result-search",
    "search_facet_open_try_and_see_the_result",
    "the_language_switch",
    "the_operator_page_shows_a_childs_lag",
    "try_it_uploads_a_picture_and_shows_the_picture_it_answers-upload",
}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunnaoProcess]:
    root = tmp_path_factory.mktemp("ui")
    node = YunnaoProcess(root / "city", "--node-id", CITY, "--publish-plugins")
    node.start(timeout=180)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest):
    """Save a full-page screenshot named after the test (and a suffix)."""
    to_docs = os.environ.get("YUNNAO_UI_SCREENSHOTS") == "docs"

    def save(page: Page, suffix: str = "") -> Path:
        name = request.node.name.removeprefix("test_") + (f"-{suffix}" if suffix else "")
        target = DOCS_SHOTS if to_docs and name in DOCS_NAMES else tmp_path
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        return path

    return save


def link(node: YunnaoProcess, node_id: str, *args: str) -> None:
    """``yunnao cascade ARGS`` on ``node``'s machine (it signs with that node's key)."""
    done = subprocess.run(
        [YUNNAO, "cascade", *args, "--url", node.url],
        cwd=node.cwd,
        env={**os.environ, "YUNNAO_NODE_ID": node_id},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def sign_in(page: Page, base: str, role: str, subject: str = "王芳") -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("姓名").fill(subject)
    page.get_by_label("角色").select_option(role)
    page.get_by_role("button", name="登录").click()
    expect(page.locator(".who")).to_contain_text(subject)


def test_search_facet_open_try_and_see_the_result(city: YunnaoProcess, page: Page, shot) -> None:
    page.goto(city.url)
    expect(page.locator("h1")).to_have_text("能力目录")
    page.get_by_label("搜索能力", exact=True).fill("流量")
    page.get_by_role("button", name="搜索").click()
    expect(page.locator(".hit")).to_have_count(1)
    expect(page.locator(".hit mark").first).to_have_text("流")
    # Facet: the domain, then its count narrows nothing more and the URL keeps the query.
    page.locator('a.facet[data-facet="domain"][data-value="governance"]').click()
    assert re.search(r"q=%E6%B5%81%E9%87%8F.*domain=governance", page.url)
    expect(page.locator(".total")).to_have_text("共 1 项能力")
    shot(page, "search")
    page.get_by_role("link", name=re.compile("交通流量预测")).click()
    expect(page.locator("h1")).to_have_text("交通流量预测")
    expect(page.locator("table.schema").first).to_contain_text("counts")
    expect(page.locator("pre.snippet").first).to_contain_text("curl -X POST")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=city.url)
    copy = page.locator('button[data-copy="snippet-curl"]')
    copy.click()
    expect(copy).to_have_text("已复制")
    assert page.evaluate("navigator.clipboard.readText()").startswith("curl -X POST")
    # The form comes filled with the capability's example: run it as it is.
    page.get_by_role("button", name="运行").click()
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "200")
    expect(result).to_contain_text('"hours"')
    shot(page)
    # Signed in, the page charts its usage: the call just made is there (records are
    # written once a second).
    capability_url = page.url
    sign_in(page, city.url, "consumer")
    deadline = time.monotonic() + 20
    while True:
        page.goto(capability_url)
        if page.locator("svg.chart").count() == 2:
            break
        assert time.monotonic() < deadline, "no usage charts"
        time.sleep(1)
    expect(page.locator("#h-usage + p")).to_contain_text("次调用")
    assert page.locator("svg.chart rect").count() >= 1


def test_invalid_input_shows_the_problem(city: YunnaoProcess, page: Page, shot) -> None:
    page.goto(f"{city.url}/c/{CITY}.urban/scene-stats")
    page.get_by_label("image").fill("[[0.1, 0.2]]")
    page.get_by_role("button", name="运行").click()
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "422")
    # The capability's own check keeps its text; the page names the field in Chinese.
    expect(result.locator(".detail")).to_contain_text("输入不符合该能力的要求")
    expect(result.locator('.field-errors li[data-field="input.image"]')).to_contain_text(
        "at least 3 × 3"
    )
    expect(result).to_contain_text("validation-failed")  # the problem document, folded
    # Not JSON at all: the form says which field, before any call.
    page.get_by_label("image").fill("not json")
    page.get_by_role("button", name="运行").click()
    expect(result.locator('.field-errors li[data-field="input.image"]')).to_contain_text(
        "不是有效的 JSON"
    )
    shot(page)


def test_the_language_switch(city: YunnaoProcess, page: Page, shot) -> None:
    page.goto(f"{city.url}/?q=forecast")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("h1")).to_have_text("能力目录")
    expect(page.locator(".facets h2").first).to_have_text("领域")
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Capability catalog")
    expect(page.locator(".facets h2").first).to_have_text("Domain")
    assert "q=forecast" in page.url  # the switch keeps the visitor where they were
    shot(page)
    page.get_by_role("link", name="中文").click()
    expect(page.locator("h1")).to_have_text("能力目录")


def test_an_anonymous_visitor_does_not_see_an_internal_entry(
    city: YunnaoProcess, page: Page, shot
) -> None:
    internal = f"{CITY}.env/air-anomaly"  # the air example is classified internal
    page.goto(city.url)
    expect(page.locator(".hit")).not_to_have_count(0)
    links = page.locator(".hit h2 a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert f"/c/{internal}" not in links
    counts = page.locator('a.facet[data-facet="classification"]').all_inner_texts()
    assert not [c for c in counts if "内部" in c]
    response = page.goto(f"{city.url}/c/{internal}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_contain_text("404")
    shot(page, "anonymous")
    sign_in(page, city.url, "consumer")
    page.goto(city.url)
    expect(page.locator(f'.hit h2 a[href="/c/{internal}"]')).to_have_count(1)
    shot(page, "signed-in")


def test_the_operator_page_shows_a_childs_lag(
    city: YunnaoProcess, page: Page, shot, tmp_path: Path
) -> None:
    district = YunnaoProcess(tmp_path / "district", "--node-id", DISTRICT)
    district.start(timeout=120)
    try:
        link(city, CITY, "add-child", DISTRICT, "--child-url", district.url)
        link(district, DISTRICT, "add-parent", CITY, "--parent-url", city.url)
        sign_in(page, city.url, "operator")
        # Lag is sampled every 10 s: reload until the child's chart has a point.
        deadline = time.monotonic() + 40
        while True:
            page.goto(f"{city.url}/ops")
            if page.locator(f'figure.lag-chart[data-peer="{DISTRICT}"]').count():
                break
            assert time.monotonic() < deadline, "no lag sample for the child"
            time.sleep(2)
        row = page.locator(f'tr[data-peer="{DISTRICT}"]')
        expect(row).to_contain_text("下级")
        assert re.fullmatch(r"\d+", row.locator(".lag-entries").inner_text().strip())
        expect(page.locator(f'figure.lag-chart[data-peer="{DISTRICT}"] svg')).to_have_count(1)
        shot(page)
        # Consumers have no operator pages.
        sign_in(page, city.url, "consumer", subject="李雷")
        response = page.goto(f"{city.url}/ops")
        assert response is not None and response.status == 403
    finally:
        district.stop()


def test_try_it_uploads_a_picture_and_shows_the_picture_it_answers(
    city: YunnaoProcess, page: Page, shot
) -> None:
    page.goto(f"{city.url}/c/{CITY}.urban/frame-quality")
    picker = page.locator('#try-form input[type="file"][name="frame"]')
    expect(picker).to_have_attribute("accept", "image/jpeg,image/png")
    frame = np.full((48, 64, 3), 30, dtype=np.uint8)
    frame[12:36, 16:48] = 230  # a bright block: its outline is the edge map
    out = io.BytesIO()
    PILImage.fromarray(frame).save(out, format="PNG")
    picker.set_input_files({"name": "snap.png", "mimeType": "image/png", "buffer": out.getvalue()})
    page.get_by_role("button", name="运行").click()
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "200")
    picture = result.locator('tr[data-field="edges"] img.output-image')
    expect(picture).to_be_visible()
    size = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [64, 48]  # the answered PNG, decoded by the browser
    expect(result.locator('tr[data-field="width"]')).to_contain_text("64")
    shot(page, "upload")
    # A file that is not a picture: the field is named, in Chinese.
    picker.set_input_files({"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"})
    page.get_by_role("button", name="运行").click()
    expect(result).to_have_attribute("data-status", "422")
    expect(result.locator('.field-errors li[data-field="input.frame"]')).to_be_visible()


def _clip(path: Path, frames: int) -> bytes:
    from yunnao_example_vision.synthetic import clip

    return clip(str(path), frames)


def test_try_it_shows_a_stream_item_by_item_and_stops_it(
    city: YunnaoProcess, page: Page, shot, tmp_path: Path
) -> None:
    page.goto(f"{city.url}/c/{CITY}.urban/video-people")
    picker = page.locator('#try-form input[type="file"][name="clip"]')
    picker.set_input_files(
        {"name": "c.avi", "mimeType": "video/x-msvideo", "buffer": _clip(tmp_path / "c.avi", 20)}
    )
    page.get_by_label("every").fill("5")
    page.get_by_role("button", name="运行").click()
    items = page.locator("#try-result ol.stream-items > li")
    expect(items).to_have_count(4)
    expect(page.locator(".stream-status")).to_contain_text("完成：共 4 项")
    expect(items.nth(3).locator('tr[data-field="count"]')).to_contain_text("3")
    shot(page, "stream")
    # A long clip, stopped after its first item: the page says so.
    picker.set_input_files(
        {"name": "l.avi", "mimeType": "video/x-msvideo", "buffer": _clip(tmp_path / "l.avi", 150)}
    )
    page.get_by_label("every").fill("1")
    page.get_by_role("button", name="运行").click()
    expect(items.first).to_be_visible()
    page.get_by_role("button", name="停止").click()
    expect(page.locator(".stream-status")).to_have_text("已停止。")
    assert items.count() < 150
