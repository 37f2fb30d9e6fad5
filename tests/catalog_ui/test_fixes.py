"""Fixes found trying the pages (issue 18, item 6), in process: code snippets that work
as copied (no token for what anyone may call; for the rest a token from YUNNAO_TOKEN,
with a hint, and a readable stop when it is unset), and try-it's validation problems in
the page's language, naming the schema's limit (the API's problem unchanged)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node
from tests.runtime_support import NAMESPACE
from tests.runtimes.test_v2_outputs import FIXES, fixes_node
from yunnao.catalog_ui import i18n

INTERNAL = f"{NODE_ID}.traffic"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node with the fixes plugin's capabilities and the test plugin's ``greet``
    (public: anyone may call it), in a real (embedded) MLflow, run in process."""
    yield from fixes_node(tmp_path_factory.mktemp("fixes"), "greet")


def _page(node: Node, path: str, lang: str = "zh-CN") -> str:
    node.client.cookies.set(i18n.COOKIE, lang)
    page = node.client.get(path)
    assert page.status_code == 200, page.text
    return page.text


def snippets_of(page: str) -> dict[str, str]:
    """The snippets a capability page shows, by language, as the copy button copies them."""
    found = re.findall(r'<code id="snippet-([a-z]+)">(.*?)</code>', page, re.S)
    return {lang: html.unescape(code) for lang, code in found}


def _run_python(code: str, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a Python snippet as copied; its HTTP calls go to the app under test."""

    def post(url: str, **kwargs: Any) -> httpx.Response:
        kwargs.pop("timeout", None)  # the test client has no timeouts
        return client.post(url, **kwargs)

    monkeypatch.setattr(httpx, "post", post)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})


def test_a_public_entry_s_snippets_need_no_token(
    node: Node, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node.client.cookies.clear()
    page = _page(node, f"/c/{NAMESPACE}/greet")
    found = snippets_of(page)
    assert "Authorization" not in found["curl"] and "YUNNAO_TOKEN" not in found["python"]
    assert "任何人都可以调用此能力" in page
    # The Python snippet, run as copied without any token, calls and prints the output.
    monkeypatch.delenv("YUNNAO_TOKEN", raising=False)
    _run_python(found["python"], node.client, monkeypatch)
    assert capsys.readouterr().out.startswith("你好")


def test_other_entries_snippets_read_the_token_and_say_how_to_get_one(
    node: Node, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = {"type": "object", "properties": {"who": {"type": "string"}}}
    made = node.client.post(
        f"/v1/capabilities/{INTERNAL}/staff-only/versions",
        json={"version": "1.0.0", "title": "内部能力", "classification": "internal",
              "input_schema": schema, "examples": [{"input": {"who": "王芳"}}]},
        headers=node.auth("author", INTERNAL),
    )  # fmt: skip
    assert made.status_code in (200, 201), made.text
    node.client.cookies.clear()
    assert node.client.get(f"/c/{INTERNAL}/staff-only").status_code == 404
    from tests.catalog_ui.test_ui import _session

    _session(node)  # type: ignore[arg-type]
    page = _page(node, f"/c/{INTERNAL}/staff-only")
    found = snippets_of(page)
    assert "yunnao token create" in page and "YUNNAO_TOKEN" in page
    for code in found.values():
        assert "YUNNAO_TOKEN" in code and "yunnao key create" in code
    # Unset, the Python snippet stops with the hint, not a KeyError.
    monkeypatch.delenv("YUNNAO_TOKEN", raising=False)
    with pytest.raises(SystemExit) as stopped:
        _run_python(found["python"], node.client, monkeypatch)
    assert "Set YUNNAO_TOKEN to a token of this node" in str(stopped.value.code)
    # Set, it sends the token (this one may not see the entry: 404, not 401).
    monkeypatch.setenv("YUNNAO_TOKEN", node.token("consumer", NODE_ID))
    with pytest.raises(httpx.HTTPStatusError) as refused:
        _run_python(found["python"], node.client, monkeypatch)
    assert refused.value.response.status_code != 401
    # curl, unset: the shell stops before curl runs, with the hint.
    env = {k: v for k, v in os.environ.items() if k != "YUNNAO_TOKEN"}
    done = subprocess.run(
        ["bash", "-c", found["curl"]], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0 and "set YUNNAO_TOKEN to a token of this node" in done.stderr
    assert "curl:" not in done.stderr  # curl itself never ran


def _form_problem(node: Node, path: str, form: dict[str, str], lang: str) -> str:
    node.client.cookies.set(i18n.COOKIE, lang)
    answer = node.client.post(path, data=form, headers={"HX-Request": "true"})
    assert answer.status_code == 200
    return html.unescape(answer.text)


def test_validation_problems_name_the_limit_in_the_page_language(node: Node) -> None:
    node.client.cookies.clear()
    path = f"/c/{FIXES}/limits/try"
    form = {"counts": "[1, 2]", "hour": "30", "plate": "ab123456", "mode": '"tram"'}
    zh = _form_problem(node, path, form, "zh-CN")
    assert 'data-status="422"' in zh
    errors = dict(re.findall(r'<li data-field="([^"]+)"><code>[^<]*</code> ([^<]*)</li>', zh))
    assert errors["input.counts"] == "至少 24 项，当前 2 项"
    assert errors["input.hour"] == "不大于 23，当前为 30"
    assert errors["input.mode"] == '须为以下之一："car"、"bus"'
    assert "至多 7 个字符，当前 8 个" in errors["input.plate"]
    assert "须符合格式（正则表达式）^[A-Z]{2}[0-9]{5}$" in errors["input.plate"]
    assert "is too short" not in errors.values()
    en = _form_problem(node, path, form, "en")
    assert "At least 24 items; 2 given" in en and "At most 23; 30 given" in en
    # Left empty, a required field says so; the form's own errors are translated too.
    zh = _form_problem(node, path, {"counts": "[1,", "hour": ""}, "zh-CN")
    assert "不是有效的 JSON" in zh
    zh = _form_problem(node, path, {"counts": "[" + "1," * 23 + "1]", "hour": "x"}, "zh-CN")
    assert "不是整数" in zh
    zh = _form_problem(node, path, {"counts": "[" + "1," * 23 + "1]", "hour": ""}, "zh-CN")
    assert re.search(r'data-field="input.hour"><code>input.hour</code> 必填', zh)
    # The API's own problem stays as it was (English), and the page shows it as it is.
    api = node.client.post(
        f"/v1/invoke/{FIXES}/limits", json={"input": {"counts": [1, 2], "hour": 30}}
    )
    assert api.status_code == 422
    first = api.json()["errors"][0]
    assert first["field"] == "input.counts" and first["message"].isascii()
    assert "24" in first["message"]
    assert json.dumps(first["message"]) in _form_problem(node, path, form, "zh-CN")


def test_each_message_of_the_new_modules_is_translated() -> None:
    from yunnao.catalog_ui import problems_i18n

    zh = i18n.catalog("zh-CN")
    used = {
        *problems_i18n.TYPE_NAMES.values(),
        *problems_i18n.MESSAGES.values(),
        *(template for _, template in problems_i18n._FORM),
        *problems_i18n._PLAIN.values(),
        " or ",
        ", ",
        "; ",
        "{n} more rows in the raw JSON",
        "yes",
        "no",
    }
    assert not sorted(m for m in used if m not in zh)


def test_outputs_are_formatted_by_their_schema() -> None:
    from yunnao.catalog_ui import outputs

    _ = i18n.translator("zh-CN")
    assert outputs.number(1234567) == "1,234,567"
    assert outputs.number(0.123456789) == "0.123457"
    assert outputs.number(12345.678) == "12,345.7"
    assert outputs.number(3.0) == "3"
    assert outputs.number(2.0, integer=True) == "2"
    shown = str(
        outputs.render(
            {"hours": [1, 2], "counts": [10.5, 2000.25]},
            {"type": "object", "properties": {"hours": {"type": "array"}}},
            _,
        )
    )
    assert "<thead>" in shown and "2,000.25" in shown  # parallel lists: one table
    rows = str(outputs.render([{"a": "<b>", "ok": True}], {"type": "array"}, _))
    assert "&lt;b&gt;" in rows and "<td>是</td>" in rows and "<b>" not in rows
