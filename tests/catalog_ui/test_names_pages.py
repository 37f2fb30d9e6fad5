"""Names on the pages: titles with ids in small type on the facets, result cards, the
capability page and the operator page; English titles on the English switch, falling
back to the Chinese title, then the id; a capability's English texts on English pages."""

from __future__ import annotations

import re

from tests.catalog_ui.test_ui import _session
from tests.conftest import NODE_ID, Node

NS = f"{NODE_ID}.traffic"
OTHER = f"{NODE_ID}.water"


def _name(node: Node) -> None:
    admin = node.auth("admin", NODE_ID)
    resp = node.client.patch(
        "/v1/node", json={"title_zh": "青岛市", "title_en": "Qingdao"}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    resp = node.client.put(
        f"/v1/namespaces/{NS}",
        json={"title_zh": "青岛市交通运输局", "title_en": "Qingdao Transport Bureau"},
        headers=admin,
    )
    assert resp.status_code == 201, resp.text
    # A department with a Chinese title only.
    resp = node.client.put(f"/v1/namespaces/{OTHER}", json={"title_zh": "水务局"}, headers=admin)
    assert resp.status_code == 201, resp.text


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_pages_show_titles_with_ids_in_small_type(sqlite_node: Node) -> None:
    _name(sqlite_node)
    sqlite_node.publish(
        NS, "flow", title="客流预测", summary="预测客流", summary_en="Forecasts passengers",
        classification="public",
    )  # fmt: skip
    sqlite_node.publish(OTHER, "level", title="水位", classification="public")
    page = sqlite_node.client.get("/")
    assert page.status_code == 200
    html = page.text
    # Facets and cards: the title, the id beside it in small type.
    assert f'<span class="named">青岛市交通运输局</span> <small class="id">{NS}</small>' in html
    assert f'<span class="named">青岛市</span> <small class="id">{NODE_ID}</small>' in html
    assert f'<span class="named">水务局</span> <small class="id">{OTHER}</small>' in html
    assert "预测客流" in html and "Forecasts passengers" not in html
    assert "青岛市" in html.split("<title>")[1].split("</title>")[0]
    cap = sqlite_node.client.get(f"/c/{NS}/flow").text
    assert f'<span class="named">青岛市交通运输局</span> <small class="id">{NS}</small>' in cap
    assert "部门" in _text(cap)

    # The English switch: English titles, the Chinese one where there is no English.
    sqlite_node.client.get("/lang/en")
    html = sqlite_node.client.get("/").text
    assert (
        f'<span class="named">Qingdao Transport Bureau</span> <small class="id">{NS}</small>'
        in html
    )
    assert f'<span class="named">水务局</span> <small class="id">{OTHER}</small>' in html
    assert "Forecasts passengers" in html and "预测客流" not in html
    cap = sqlite_node.client.get(f"/c/{NS}/flow").text
    assert "Qingdao Transport Bureau" in cap and "Forecasts passengers" in cap


def test_an_untitled_department_shows_its_id(sqlite_node: Node) -> None:
    sqlite_node.publish(NS, "flow", title="客流预测", classification="public")
    html = sqlite_node.client.get("/").text
    assert f'<code class="id">{NS}</code>' in html
    assert '<span class="named">' not in html


def test_a_title_is_escaped(sqlite_node: Node) -> None:
    admin = sqlite_node.auth("admin", NODE_ID)
    sqlite_node.client.put(f"/v1/namespaces/{NS}", json={"title_zh": "<b>局</b>"}, headers=admin)
    sqlite_node.publish(NS, "flow", title="客流预测", classification="public")
    html = sqlite_node.client.get("/").text
    assert "<b>局</b>" not in html and "&lt;b&gt;局&lt;/b&gt;" in html


def test_the_operator_page_shows_the_node_s_title(sqlite_node: Node) -> None:
    _name(sqlite_node)
    _session(sqlite_node, "operator")
    page = sqlite_node.client.get("/ops")
    assert page.status_code == 200
    assert f'<span class="named">青岛市</span> <small class="id">{NODE_ID}</small>' in page.text


def test_english_description_on_english_pages(sqlite_node: Node) -> None:
    sqlite_node.publish(
        NS, "flow", title="客流预测", description="中文说明", description_en="English *text*",
        classification="public",
    )  # fmt: skip
    assert "中文说明" in sqlite_node.client.get(f"/c/{NS}/flow").text
    sqlite_node.client.get("/lang/en")
    cap = sqlite_node.client.get(f"/c/{NS}/flow").text
    assert "<em>text</em>" in cap and "中文说明" not in cap
    api = sqlite_node.client.get(f"/v1/capabilities/{NS}/flow").json()
    assert api["description_en"] == "English *text*" and api["summary_en"] == ""


def test_an_operator_names_the_node_and_its_departments_on_the_operator_page(
    sqlite_node: Node,
) -> None:
    _session(sqlite_node, "operator")
    page = sqlite_node.client.get("/ops")
    assert page.status_code == 200 and "中文名称" in page.text
    form = {"target": "node", "title_zh": "青岛市", "title_en": "Qingdao"}
    done = sqlite_node.client.post("/ops/titles", data=form, follow_redirects=False)
    assert done.status_code == 303, done.text
    form = {"target": NS, "title_zh": "交通运输局", "title_en": ""}
    assert sqlite_node.client.post("/ops/titles", data=form).status_code == 200
    page = sqlite_node.client.get("/ops").text
    assert f'<span class="named">青岛市</span> <small class="id">{NODE_ID}</small>' in page
    assert f'data-target="{NS}"' in page and 'value="交通运输局"' in page
    assert sqlite_node.client.get("/v1/node").json()["title_en"] == "Qingdao"

    # Problems are pages in the visitor's language; nothing changes.
    bad = {"target": "node", "title_zh": "a\u202eb", "title_en": ""}
    refused = sqlite_node.client.post("/ops/titles", data=bad)
    assert refused.status_code == 422 and "title_zh" in refused.text
    other = {"target": "sd.qd.shinan.traffic", "title_zh": "x", "title_en": ""}
    assert sqlite_node.client.post("/ops/titles", data=other).status_code == 403
    forged = sqlite_node.client.post(
        "/ops/titles", data=form, headers={"Origin": "https://elsewhere.example"}
    )
    assert forged.status_code == 403
    _session(sqlite_node, "author", NS)
    as_author = sqlite_node.client.post("/ops/titles", data={**form, "target": "node"})
    assert as_author.status_code == 403
    assert sqlite_node.client.get("/v1/node").json()["title_zh"] == "青岛市"
