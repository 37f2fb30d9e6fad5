"""The page comparing two versions: the capability page links it, it names the breaking
changes (in Chinese by default) and every other change, and a version that does not
exist is a page saying so, not a stack trace."""

from __future__ import annotations

from tests.conftest import NODE_ID, Node
from yunnao.catalog_ui import i18n
from yunnao.registry import compat

NS = f"{NODE_ID}.traffic"
OLD_OUT = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
NEW_OUT = {
    "type": "object",
    "properties": {"count": {"type": "number"}, "lanes": {"type": "integer"}},
}


def test_the_compare_page_names_breaking_and_other_changes(sqlite_node: Node) -> None:
    node = sqlite_node
    common = {"classification": "public", "title": "路口车流量"}
    assert node.publish(NS, "flow", "1.0.0", output_schema=OLD_OUT, **common).status_code == 201
    refused = node.publish(NS, "flow", "1.1.0", output_schema=NEW_OUT, **common)
    assert refused.status_code == 409, refused.text
    assert node.publish(NS, "flow", "2.0.0", output_schema=NEW_OUT, **common).status_code == 201

    page = node.client.get(f"/c/{NS}/flow")
    assert page.status_code == 200 and f'href="/c/{NS}/flow/compare"' in page.text
    assert "版本对比" in page.text

    diff = node.client.get(f"/c/{NS}/flow/compare")  # the two newest by default
    assert diff.status_code == 200, diff.text
    text = diff.text
    assert "不兼容" in text and "2 处破坏性变更" in text and "是新的主版本" in text
    assert "<code>output.count</code>：类型由 integer 改为 number" in text
    assert "<code>output.count</code>：不再保证返回" in text
    assert "output.lanes type" in text  # a compatible change is listed too
    assert "<option selected>1.0.0</option>" in text and "<option selected>2.0.0</option>" in text

    same = node.client.get(f"/c/{NS}/flow/compare?from=2.0.0&to=2.0.0")
    assert same.status_code == 200 and "兼容：" in same.text and "结构和示例相同" in same.text

    missing = node.client.get(f"/c/{NS}/flow/compare?from=1.0.0&to=3.0.0")
    assert missing.status_code == 400 and "text/html" in missing.headers["content-type"]
    assert "3.0.0" in missing.text and "Traceback" not in missing.text
    node.client.cookies.set(i18n.COOKIE, "en")
    english = node.client.get(f"/c/{NS}/flow/compare")
    assert "Not compatible: 2 breaking changes" in english.text
    assert "<code>output.count</code>: type changed from integer to number" in english.text


def test_every_kind_of_break_is_said_in_both_languages() -> None:
    for lang in ("zh-CN", "en"):
        said = i18n.catalog(lang)
        assert not [c for c in compat.MESSAGES if f"break:{c}" not in said], lang
