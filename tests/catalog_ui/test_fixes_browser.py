"""Fixes found trying the pages (issue 18, item 6), in a real browser: Playwright driving
Debian's Chromium against a real ``yunnao serve`` with the example plugins. No page is
wider than the screen, at a laptop's and at a phone's size; "try it" shows that it is
running, and renders the output as tables (the raw JSON still a click away).
Screenshots go to the test's temporary directory (``YUNNAO_UI_SHOTS=DIR`` copies them
to ``DIR``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from tests.catalog_ui.test_ui_browser import sign_in
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY = "sd.qd"
FORECAST = f"/c/{CITY}.traffic/flow-forecast"
SCENE = f"/c/{CITY}.urban/scene-stats"
SIZES = {"laptop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunnaoProcess]:
    node = YunnaoProcess(tmp_path_factory.mktemp("fixes") / "city", "--node-id", CITY,
                         "--publish-plugins")  # fmt: skip
    node.start(timeout=180)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest):
    def save(page: Page, name: str) -> Path:
        path = tmp_path / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get("YUNNAO_UI_SHOTS"):
            target = Path(os.environ["YUNNAO_UI_SHOTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        return path

    return save


def overflow(page: Page) -> dict[str, object]:
    """How far the page is wider than its viewport, and the widest elements that stick
    out (to say what overflows when it does)."""
    return page.evaluate(
        """() => {
          const root = document.documentElement;
          const out = [];
          for (const el of document.querySelectorAll('body *')) {
            const r = el.getBoundingClientRect();
            if (r.right > root.clientWidth + 1) {
              const name = `${el.tagName.toLowerCase()}.${el.className}#${el.id}`;
              out.push(`${name} ${Math.round(r.right)}`);
            }
          }
          return {scroll: root.scrollWidth, client: root.clientWidth, out: out.slice(0, 8)};
        }"""
    )


def assert_fits(page: Page, what: str) -> None:
    seen = overflow(page)
    assert seen["scroll"] <= seen["client"], f"{what} is wider than the screen: {seen}"


@pytest.mark.parametrize("size", SIZES)
def test_no_page_is_wider_than_the_screen(city: YunnaoProcess, browser, size: str, shot) -> None:
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(f"{city.url}/?q=")
        assert_fits(page, "the home page")
        shot(page, "home")
        for path in (FORECAST, SCENE):
            page.goto(city.url + path)
            expect(page.locator("pre.snippet").first).to_be_visible()
            assert_fits(page, path)
        shot(page, "capability")
        page.goto(city.url + FORECAST)
        page.get_by_role("button", name="运行").click()
        expect(page.locator("#try-result .result")).to_have_attribute("data-status", "200")
        page.locator("#try-result details summary").first.click()  # the raw JSON, open
        assert_fits(page, "the try-it result")
        shot(page, "try-it")
        # A problem (a long English detail and problem document) fits too.
        page.goto(city.url + SCENE)
        page.get_by_label("image").fill("[[0.1, 0.2]]")
        page.get_by_role("button", name="运行").click()
        expect(page.locator("#try-result .result")).to_have_attribute("data-status", "422")
        assert_fits(page, "the try-it problem")
        sign_in(page, city.url, "admin")
        for path in ("/ops", "/publish"):
            page.goto(city.url + path)
            expect(page.locator("h1")).to_be_visible()
            assert_fits(page, path)
            shot(page, path.strip("/"))
    finally:
        context.close()


def test_try_it_shows_it_is_running_then_the_output_as_tables(
    city: YunnaoProcess, page: Page, shot
) -> None:
    page.goto(city.url + SCENE)
    busy = page.locator("#try-busy")
    expect(busy).to_be_hidden()
    held: list[Route] = []
    # Hold the call until the page has been seen busy (no timing involved).
    page.route("**/try", lambda route: held.append(route))
    page.get_by_role("button", name="运行").click()
    expect(busy).to_be_visible()
    expect(page.get_by_role("button", name="运行")).to_be_disabled()
    shot(page, "busy")
    for _ in range(200):  # the handler runs while Playwright waits: let it record the call
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the call was not sent"
    held[0].continue_()
    page.unroute("**/try")
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "200")
    expect(busy).to_be_hidden()
    # The output object as a field table: names, values formatted (numbers, yes/no).
    table = result.locator("table.output")
    expect(table).to_be_visible()
    for name in ("brightness", "contrast", "edge_density", "usable"):
        expect(table.locator(f'tr[data-field="{name}"]')).to_have_count(1)
    expect(table.locator('tr[data-field="usable"] td')).to_have_text("是")
    value = table.locator('tr[data-field="brightness"] td').inner_text()
    assert value and len(value) <= 12, value  # formatted, not a float's 17 digits
    # The raw JSON is still there, folded.
    raw = result.locator("details.raw")
    expect(raw.locator("pre")).to_be_hidden()
    raw.locator("summary").click()
    expect(raw.locator("pre")).to_contain_text('"brightness"')
    shot(page, "result")


def test_a_list_of_records_shows_as_a_table(city: YunnaoProcess, page: Page, shot) -> None:
    page.goto(city.url + FORECAST)
    page.get_by_role("button", name="运行").click()
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "200")
    expect(result.locator("table.output").first).to_be_visible()
    shot(page, "forecast")


def test_validation_problems_speak_the_page_language(city: YunnaoProcess, page: Page) -> None:
    page.goto(city.url + SCENE)
    page.get_by_label("edge_threshold").fill("7")
    page.get_by_role("button", name="运行").click()
    result = page.locator("#try-result .result")
    expect(result).to_have_attribute("data-status", "422")
    expect(result.locator(".field-errors li")).to_contain_text("input.edge_threshold")
    expect(result.locator(".field-errors li")).to_contain_text("不大于")


def test_the_compare_page_names_the_breaks_and_fits(city: YunnaoProcess, browser, shot) -> None:
    """Issue 20: two versions side by side. A draft 2.0.0 of flow-forecast (a draft, so
    the capability's current version and the other tests stay as they are) drops an
    output field of 1.0.0."""
    import subprocess

    import httpx

    from tests.realservers.yunnao_node import YUNNAO

    made = subprocess.run([YUNNAO, "token", "create", "--node-id", CITY, "--role", "author",
                           "--namespace", f"{CITY}.traffic"], cwd=city.cwd, capture_output=True,
                          text=True, check=True)  # fmt: skip
    auth = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    api = f"{city.url}/v1/capabilities/{CITY}.traffic/flow-forecast"
    v1 = httpx.get(f"{api}/versions/1.0.0", headers=auth).json()
    out = dict(v1["output_schema"])
    dropped = sorted(out.get("properties") or {})[0]
    out["properties"] = {k: v for k, v in out["properties"].items() if k != dropped}
    out["required"] = [r for r in out.get("required", []) if r != dropped]
    body = {"version": "2.0.0", "title": v1.get("title") or "交通流量预测", "status": "draft",
            "input_schema": v1["input_schema"], "output_schema": out}  # fmt: skip
    resp = httpx.post(f"{api}/versions", json=body, headers=auth)
    assert resp.status_code == 201, resp.text
    for size, (width, height) in SIZES.items():
        context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
        page = context.new_page()
        try:
            sign_in(page, city.url, "author")
            page.goto(f"{city.url}{FORECAST}/compare?from=1.0.0&to=2.0.0")
            expect(page.locator("#verdict")).to_contain_text("不兼容")
            expect(page.locator("ul.breaks")).to_contain_text(f"output.{dropped}")
            assert_fits(page, f"the compare page ({size})")
            shot(page, f"compare-{size}")
        finally:
            context.close()
