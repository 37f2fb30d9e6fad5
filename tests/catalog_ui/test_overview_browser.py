"""The federation overview (``/overview``) in a real browser: Playwright driving Debian's
Chromium against two real ``yunnao serve`` processes, a city (青岛市, with the example
plugins) and a district (市南区) linked as its child. Calls are made through the city's
HTTP API and its daily aggregates refreshed; the district's daily rows for the last days
are written into the city's store as the district's signed usage items would leave them
(the district has no capabilities of its own to call). The page fits 1280x800 and a
phone's 390x844 without horizontal overflow. Screenshots go to the test's temporary
directory; with ``YUNNAO_UI_SCREENSHOTS=docs`` to ``docs/images/overview.png`` and
``overview-phone.png``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from tests.catalog_ui.test_fixes_browser import assert_fits
from tests.catalog_ui.test_ui_browser import link, sign_in
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.registry import db, usage_daily
from yunnao.registry.identity import tokens
from yunnao.registry.tables import UsageDaily, utcnow
from yunnao.registry.usage_daily import BUCKETS_MS

pytestmark = pytest.mark.slow

CITY, DISTRICT = "sd.qd", "sd.qd.shinan"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
FORECAST = f"{CITY}.traffic/flow-forecast"


@dataclass
class Federation:
    city: YunnaoProcess
    district: YunnaoProcess

    def auth(self, node: YunnaoProcess, node_id: str) -> dict[str, str]:
        key = tokens.load_or_create_key(node.cwd / "var" / "node_key.pem")
        token = tokens.issue(
            key, node_id=node_id, subject="tester", role="admin", scopes=[node_id],
            ttl=timedelta(hours=1),
        )  # fmt: skip
        return {"Authorization": f"Bearer {token}"}

    @property
    def city_db(self) -> str:
        return f"sqlite:///{(self.city.cwd / 'var' / 'registry.db').resolve()}"


def _district_rows(engine: sa.Engine) -> int:
    """The district's daily rows of the last 14 days, as its signed usage items leave
    them at the city; their calls."""
    rows, total = [], 0
    for i, day in enumerate(usage_daily.last_days(14)[:-1]):
        calls = 20 + (i * 7) % 30
        errors = i % 4
        hist = [0] * len(BUCKETS_MS)
        hist[BUCKETS_MS.index(50)] = calls - errors - 2
        hist[BUCKETS_MS.index(500)] = errors
        rows.append(
            {"node": DISTRICT, "day": day, "namespace": f"{DISTRICT}.traffic", "name": "flow",
             "calls": calls, "ok": calls - errors - 2, "errors": errors, "refused": 2,
             "invalid": 0, "same_department": calls // 2, "other_department": calls // 4,
             "other_node": calls - calls // 2 - calls // 4, "latency_hist": hist,
             "updated_at": utcnow()}
        )  # fmt: skip
        total += calls
    with engine.begin() as conn:
        conn.execute(sa.insert(UsageDaily.__table__), rows)  # type: ignore[attr-defined]
    return total


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("overview")
    city = YunnaoProcess(root / "city", "--node-id", CITY, "--publish-plugins")
    district = YunnaoProcess(root / "district", "--node-id", DISTRICT)
    city.start(timeout=180)
    try:
        district.start(timeout=120)
        try:
            fed = Federation(city, district)
            for node, node_id, zh, en in (
                (city, CITY, "青岛市", "Qingdao"),
                (district, DISTRICT, "市南区", "Shinan"),
            ):
                resp = httpx.patch(
                    f"{node.url}/v1/node", json={"title_zh": zh, "title_en": en},
                    headers=fed.auth(node, node_id),
                )  # fmt: skip
                assert resp.status_code == 200, resp.text
            resp = httpx.put(
                f"{district.url}/v1/namespaces/{DISTRICT}.traffic",
                json={"title_zh": "市南区交通运输局", "title_en": "Shinan Transport Bureau"},
                headers=fed.auth(district, DISTRICT),
            )
            assert resp.status_code in (200, 201), resp.text
            link(city, CITY, "add-child", DISTRICT, "--child-url", district.url)
            link(district, DISTRICT, "add-parent", CITY, "--parent-url", city.url)
            yield fed
        finally:
            district.stop()
    finally:
        city.stop()


def _calls(fed: Federation) -> int:
    """Calls of the city's flow forecast through its HTTP API; their number."""
    version = httpx.get(f"{fed.city.url}/v1/capabilities/{FORECAST}/versions/1.0.0").json()
    example = version["examples"][0]["input"]
    ok = 0
    for _ in range(6):
        resp = httpx.post(
            f"{fed.city.url}/v1/invoke/{FORECAST}", json={"input": example}, timeout=60
        )
        ok += resp.status_code == 200
    bad = httpx.post(f"{fed.city.url}/v1/invoke/{FORECAST}", json={"input": {}}, timeout=60)
    assert ok == 6 and bad.status_code == 422, bad.text
    return 6


def _until_named(page: Page, url: str, text: str, timeout: float = 60) -> None:
    """Reload ``url`` until it shows ``text`` (the district's titles come by the cascade)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if text in page.locator("table.tree").inner_text():
            return
        assert time.monotonic() < deadline, f"{text} not shown on {url}"
        time.sleep(2)


def _shot(page: Page, name: str, tmp_path: Path) -> Path:
    to_docs = os.environ.get("YUNNAO_UI_SCREENSHOTS") == "docs"
    path = (DOCS_IMAGES if to_docs else tmp_path) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_overview_shows_the_tree_calls_and_charts(
    federation: Federation, browser, tmp_path: Path
) -> None:
    made = _calls(federation)
    engine = db.create_engine(federation.city_db)
    try:
        # The city's own rows, as its periodic refresh writes them.
        deadline = time.monotonic() + 30
        while True:
            usage_daily.refresh(engine, CITY)
            today = usage_daily.last_days(1)[0]
            own = sum(r.calls for r in usage_daily.rows(engine, today, today, nodes=[CITY]))
            if own >= made or time.monotonic() > deadline:
                break
            time.sleep(1)  # usage records are written in batches, every second
        assert own >= made
        carried = _district_rows(engine)
        days = usage_daily.last_days(14)
        expected = sum(r.calls for r in usage_daily.rows(engine, days[0], days[-1]))
        assert expected >= carried + made
    finally:
        engine.dispose()

    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    try:
        # Anonymous: to the sign-in page.
        page.goto(f"{federation.city.url}/overview")
        assert "/signin" in page.url
        sign_in(page, federation.city.url, "admin")
        expect(page.locator("a.nav-overview")).to_have_text("概览")
        _until_named(page, f"{federation.city.url}/overview", "市南区")
        tree = page.locator("table.tree")
        expect(tree.locator(f'tr[data-node="{CITY}"]')).to_contain_text("青岛市")
        district = tree.locator(f'tr[data-node="{DISTRICT}"]')
        expect(district).to_contain_text("市南区")
        state = district.locator(".state").inner_text().strip()
        assert state in ("正常", "延迟", "不可达", "未知"), state
        assert district.get_attribute("data-state") in ("ok", "late", "down", "unknown")
        assert int(page.locator("#calls-total").inner_text()) == expected
        assert re.search(r"北京时间 \d{4}-\d\d-\d\d \d\d:\d\d", page.locator("h1").inner_text())
        # Real charts: calls per day with a legend, most called by title, error rates.
        expect(page.locator("#h-calls + svg.chart rect")).not_to_have_count(0)
        expect(page.locator("section[aria-labelledby=h-calls] ul.legend li")).to_have_count(3)
        expect(page.locator("section[aria-labelledby=h-top] svg")).to_contain_text("交通流量预测")
        expect(page.locator("section[aria-labelledby=h-errors] svg")).to_contain_text("市南区")
        assert_fits(page, "/overview at 1280x800")
        bottom = page.evaluate("document.querySelector('.ov').getBoundingClientRect().bottom")
        assert bottom <= 800, f"the overview is not one screen at 1280x800: {bottom}"
        _shot(page, "overview", tmp_path)

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{federation.city.url}/overview")
        expect(page.locator("table.tree")).to_contain_text("市南区")
        assert_fits(page, "/overview at 390x844")
        _shot(page, "overview-phone", tmp_path)

        page.goto(f"{federation.city.url}/lang/en?next=/overview")
        expect(page.locator("h1")).to_contain_text("Federation overview")
        expect(page.locator(f'tr[data-node="{DISTRICT}"]')).to_contain_text("Shinan")
    finally:
        context.close()
