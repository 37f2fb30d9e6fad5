"""The author's pages in a real browser: Playwright driving Debian's Chromium against a
real ``yunnao serve`` process whose package index is a real one. An author signs in,
uploads the test wheel from the publish page, watches the job succeed, deprecates a
version after confirming and edits the title; a package whose example fails shows its
problem. Screenshots go to the test's temporary directory (``YUNNAO_UI_SHOTS=DIR``
copies them to ``DIR``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.realservers.yunnao_node import YunnaoProcess
from tests.registry.test_packages import dept_wheel, index, plugin_source  # noqa: F401

pytestmark = pytest.mark.slow

NODE = "sd.qd"
NS = f"{NODE}.hello"
JOB_SECONDS = 240  # a publish job builds an environment: tens of seconds


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, index: str) -> Iterator[YunnaoProcess]:  # noqa: F811
    cwd = tmp_path_factory.mktemp("author-ui")
    env = {"YUNNAO_PACKAGE_INDEX": index, "YUNNAO_PLUGINS": "false"}
    proc = YunnaoProcess(cwd, "--node-id", NODE, env=env).start(timeout=120)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest):
    copy_to = os.environ.get("YUNNAO_UI_SHOTS")

    def save(page: Page, suffix: str) -> Path:
        path = tmp_path / f"{request.node.name.removeprefix('test_')}-{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        if copy_to:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy_to)
        return path

    return save


def sign_in(page: Page, base: str, scope: str, subject: str = "王芳") -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("姓名").fill(subject)
    page.get_by_label("角色").select_option("author")
    page.locator("#s-scope").fill(scope)
    page.get_by_role("button", name="登录").click()
    expect(page.locator(".who")).to_contain_text(subject)


def test_an_author_uploads_follows_the_job_deprecates_and_edits(
    node: YunnaoProcess, page: Page, shot, tmp_path: Path
) -> None:
    sign_in(page, node.url, NS)
    page.get_by_role("link", name="发布", exact=True).click()
    expect(page.locator("h1")).to_have_text("上传发布")
    expect(page.locator("#p-namespace")).to_have_value(NS)
    page.locator("#p-file").set_input_files(str(dept_wheel(tmp_path)))
    shot(page, "publish")
    page.get_by_role("button", name="上传并发布").click()
    expect(page.locator("h1")).to_contain_text("发布任务")
    # The page refreshes itself until the job is done.
    status = page.locator("#job-status")
    expect(status).to_have_attribute("data-status", "succeeded", timeout=JOB_SECONDS * 1000)
    expect(status).to_have_text("成功")
    expect(page.locator("table.log")).to_contain_text("published")
    expect(page.locator("ul.published li")).to_have_count(2)
    shot(page, "job")

    page.get_by_role("link", name="问候").click()
    expect(page.locator("h1")).to_have_text("问候")
    row = page.locator('tr[data-version="1.0.0"]')
    row.get_by_role("link", name="弃用").click()
    expect(page.locator(".consequence")).to_contain_text("仍可调用")
    shot(page, "confirm")
    page.locator("#confirm").click()
    expect(page.locator('tr[data-version="1.0.0"] .version-status')).to_have_text("已弃用")
    expect(page.locator('tr[data-version="1.0.0"] a[data-move="retired"]')).to_have_text("下线")

    page.locator("#edit").click()
    page.get_by_label("标题").fill("问候（新版）")
    page.get_by_label("标签").fill("问候, 示例")
    shot(page, "edit")
    page.get_by_role("button", name="保存").click()
    expect(page.locator("h1")).to_have_text("问候（新版）")
    expect(page.locator(".tags")).to_contain_text("示例")
    shot(page, "capability")


def test_a_failing_example_is_shown_on_the_job_page(
    node: YunnaoProcess, page: Page, shot, tmp_path: Path
) -> None:
    # An author of the whole node names a department that has nothing yet.
    sign_in(page, node.url, NODE, subject="李雷")
    page.goto(f"{node.url}/publish")
    page.locator("#p-other").fill(f"{NODE}.broken")
    wheel = dept_wheel(
        tmp_path, name="dept-broken", module="dept_broken", source=plugin_source(broken=".upper()")
    )
    page.locator("#p-file").set_input_files(str(wheel))
    page.get_by_role("button", name="上传并发布").click()
    status = page.locator("#job-status")
    expect(status).to_have_attribute("data-status", "failed", timeout=JOB_SECONDS * 1000)
    expect(page.locator(".job-error")).to_contain_text("capabilities.greet.examples[0].output.text")
    shot(page, "failed")
    # The job is listed on the publish page, failed.
    page.goto(f"{node.url}/publish")
    expect(page.locator("table.jobs .job-status.failed").first).to_have_text("失败")
