"""The assessment page (``/assessment``, 考核评价) in a real browser, on the city and
district of :mod:`tests.catalog_ui.test_overview_browser`: the ranking table with the
district's title, ranked by a chosen figure, the charts, the CSV and XLSX downloads
(the XLSX opens with openpyxl and holds the table's rows), at 1280x800 and 390x844
without horizontal overflow; consumers are refused. With
``YUNNAO_UI_SCREENSHOTS=docs`` the screenshot goes to ``docs/images/assessment.png``."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from tests.catalog_ui.test_fixes_browser import assert_fits
from tests.catalog_ui.test_overview_browser import (  # noqa: F401 (the fixture)
    CITY,
    DISTRICT,
    Federation,
    _district_rows,
    _shot,
    federation,
)
from tests.catalog_ui.test_ui_browser import sign_in
from tests.realservers.yunnao_node import YUNNAO
from yunnao.registry import assessment, db, usage_daily

pytestmark = pytest.mark.slow


def test_assessment_ranks_charts_and_exports(
    federation: Federation,  # noqa: F811
    browser,
    tmp_path: Path,
) -> None:
    engine = db.create_engine(federation.city_db)
    try:
        carried = _district_rows(engine)
        days = usage_daily.last_days(14)
        report = assessment.compute(engine, CITY, days[0], days[-1], "district")
    finally:
        engine.dispose()
    (row,) = [r for r in report.rows if r.id == DISTRICT]
    assert row.calls == carried

    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN", accept_downloads=True
    )
    page = context.new_page()
    try:
        base = federation.city.url
        sign_in(page, base, "consumer", subject="李雷")
        response = page.goto(f"{base}/assessment")
        assert response is not None and response.status == 403
        sign_in(page, base, "auditor", subject="审计员")
        query = f"from={days[0]}&to={days[-1]}&by=district"
        page.goto(f"{base}/assessment?{query}")
        table = page.locator("#ranking")
        expect(table.locator(f'tr[data-id="{DISTRICT}"]')).to_contain_text(str(carried))
        expect(table.locator("tbody tr").first).to_have_attribute("data-id", DISTRICT)
        expect(page.locator("th[aria-sort=descending]")).to_contain_text("调用")
        expect(page.locator(".as-charts svg")).to_have_count(2)
        assert_fits(page, "/assessment at 1280x800")
        _shot(page, "assessment", tmp_path)

        # Ranked by p50, ascending: from the header's link.
        page.get_by_role("link", name="P50 ms", exact=True).click()
        page.get_by_role("link", name="P50 ms ▼").click()
        expect(page.locator("th[aria-sort=ascending]")).to_contain_text("P50")

        with page.expect_download() as got:
            page.get_by_role("link", name="XLSX").click()
        sheet = load_workbook(io.BytesIO(Path(got.value.path()).read_bytes())).active
        assert sheet is not None
        cells = [list(r) for r in sheet.iter_rows(values_only=True)]
        assert cells[0] == assessment.header()
        ids = [c[0] for c in cells[1:]]
        assert DISTRICT in ids and CITY in ids
        shown = page.locator("#ranking tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
        assert ids[:-1] == shown  # the same rows in the same order, then the total

        # The same rows from the command line, with an admin token.
        target = tmp_path / "assessment.xlsx"
        token = federation.auth(federation.city, CITY)["Authorization"].split()[1]
        done = subprocess.run(
            [YUNNAO, "assessment", "--url", base, "--token", token, "--from", days[0],
             "--to", days[-1], "--sort", "-p50_ms", "--format", "xlsx", "-o", str(target)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        from_cli = load_workbook(target).active
        assert from_cli is not None
        assert [list(r) for r in from_cli.iter_rows(values_only=True)] == cells
        table_out = subprocess.run(
            [YUNNAO, "assessment", "--url", base, "--token", token, "--from", days[0],
             "--to", days[-1]],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "HOME": str(tmp_path), "COLUMNS": "200"},
        )  # fmt: skip
        assert table_out.returncode == 0 and "市南区" in table_out.stdout, table_out.stderr

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{base}/assessment?{query}")
        assert_fits(page, "/assessment at 390x844")
    finally:
        context.close()
