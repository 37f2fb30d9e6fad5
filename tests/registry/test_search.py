"""Full-text search, facets, sorting and pagination, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import Node, assert_problem

ENTRIES = [
    # namespace, name, title, summary, domain, tags, runtime, kind
    (
        "sd.qd.traffic",
        "flow-forecast",
        "交通流量预测",
        "Traffic flow forecast per intersection",
        "governance",
        ["traffic", "forecast"],
        "inprocess",
        "model",
    ),
    (
        "sd.qd.traffic",
        "signal-timing",
        "信号灯配时优化",
        "Optimises traffic signal timing",
        "governance",
        ["traffic", "optimisation"],
        "rayserve",
        "algorithm",
    ),
    (
        "sd.qd.env",
        "air-anomaly",
        "空气质量异常检测",
        "Detects air quality anomalies at stations",
        "livelihood",
        ["air", "anomaly"],
        "inprocess",
        "model",
    ),
    (
        "sd.qd.env",
        "noise-map",
        "噪声地图",
        "City noise map from sensor readings",
        "livelihood",
        ["noise", "sensor"],
        "bentoml",
        "algorithm",
    ),
    (
        "sd.qd.urban",
        "face-count",
        "人流量统计",
        "Counts people in camera frames (traffic of pedestrians)",
        "economy",
        ["vision", "crowd"],
        "triton",
        "model",
    ),
]


@pytest.fixture
def catalog(node: Node) -> Node:
    for ns, name, title, summary, domain, tags, runtime, kind in ENTRIES:
        resp = node.publish(
            ns,
            name,
            title=title,
            summary=summary,
            domain=domain,
            tags=tags,
            kind=kind,
            runtime={"type": runtime},
            classification="public",
        )
        assert resp.status_code == 201, resp.text
    return node


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["name"] for item in resp.json()["items"]]


def search(node: Node, **params) -> list[str]:
    return ids(node.client.get("/v1/capabilities", params=params))


def test_english_words_match_title_summary_and_tags(catalog: Node) -> None:
    assert set(search(catalog, q="traffic")) == {"flow-forecast", "signal-timing", "face-count"}
    assert search(catalog, q="anomalies stations") == ["air-anomaly"]
    assert search(catalog, q="sensor") == ["noise-map"]


def test_ranking_prefers_name_and_title_hits(catalog: Node) -> None:
    # "traffic" is a tag of the first two and only in face-count's summary
    assert search(catalog, q="traffic")[-1] == "face-count"


def test_prefix_of_last_word_matches_while_typing(catalog: Node) -> None:
    assert set(search(catalog, q="traf")) == {"flow-forecast", "signal-timing", "face-count"}
    assert search(catalog, q="optimis") == ["signal-timing"]


def test_chinese_words_match_without_a_dictionary(catalog: Node) -> None:
    assert search(catalog, q="交通") == ["flow-forecast"]
    assert search(catalog, q="异常") == ["air-anomaly"]
    assert search(catalog, q="质量 检测") == ["air-anomaly"]
    assert search(catalog, q="通交") == []  # characters must be adjacent and in order


def test_query_syntax_is_not_interpreted(catalog: Node) -> None:
    for q in ['"', "traffic OR", "NEAR(", "a:b*", "-", "'", "&|!", "*"]:
        resp = catalog.client.get("/v1/capabilities", params={"q": q})
        assert resp.status_code == 200, (q, resp.text)


def test_facet_filters_and_counts(catalog: Node) -> None:
    body = catalog.client.get("/v1/capabilities", params={"domain": "governance"}).json()
    assert {i["name"] for i in body["items"]} == {"flow-forecast", "signal-timing"}
    # a facet's own filter is lifted for its counts, so alternatives stay visible ...
    assert body["facets"]["domain"] == {"governance": 2, "livelihood": 2, "economy": 1}
    # ... while other facets count only within the filter
    assert body["facets"]["runtime"] == {"inprocess": 1, "rayserve": 1}
    assert body["facets"]["namespace"] == {"sd.qd.traffic": 2}
    assert body["facets"]["tag"]["traffic"] == 2
    assert body["facets"]["node"] == {"sd.qd": 2}
    assert body["total"] == 2


def test_values_of_one_facet_or_and_different_facets_and(catalog: Node) -> None:
    both = search(catalog, domain=["governance", "economy"])
    assert set(both) == {"flow-forecast", "signal-timing", "face-count"}
    assert search(catalog, domain=["governance", "economy"], kind="model", sort="name") == [
        "face-count",
        "flow-forecast",
    ]
    assert search(catalog, runtime="triton") == ["face-count"]
    assert search(catalog, namespace="sd.qd.env", sort="name") == ["air-anomaly", "noise-map"]


def test_tag_filters_require_every_tag(catalog: Node) -> None:
    assert set(search(catalog, tag="traffic")) == {"flow-forecast", "signal-timing"}
    assert search(catalog, tag=["traffic", "forecast"]) == ["flow-forecast"]
    assert search(catalog, tag=["traffic", "air"]) == []


def test_text_and_facets_combine(catalog: Node) -> None:
    body = catalog.client.get("/v1/capabilities", params={"q": "traffic", "runtime": "rayserve"})
    assert ids(body) == ["signal-timing"]
    assert body.json()["facets"]["runtime"] == {"inprocess": 1, "rayserve": 1, "triton": 1}


def test_sorting(catalog: Node) -> None:
    names = sorted(e[1] for e in ENTRIES)
    assert search(catalog, sort="name") == names
    assert search(catalog, sort="-name") == names[::-1]
    assert search(catalog) == [e[1] for e in ENTRIES][::-1]  # newest first without a query
    assert search(catalog, sort="updated")[0] == ENTRIES[0][1]


def test_pagination_with_totals_and_link_header(catalog: Node) -> None:
    seen: list[str] = []
    page, url = 1, None
    while True:
        resp = catalog.client.get(
            url or "/v1/capabilities", params=None if url else {"per_page": 2, "sort": "name"}
        )
        body = resp.json()
        assert body["total"] == 5 and body["per_page"] == 2 and body["page"] == page
        seen += [i["name"] for i in body["items"]]
        links = dict(
            (part.split('rel="')[1].rstrip('"'), part.split(">")[0].lstrip("<"))
            for part in resp.headers["link"].split(", ")
        )
        assert "first" in links and "last" in links
        if "next" not in links:
            break
        url, page = links["next"], page + 1
    assert seen == sorted(e[1] for e in ENTRIES) and page == 3


def test_bad_search_parameters_are_named(catalog: Node) -> None:
    cases = [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"page": "two"}, "page"),
        ({"domain": "sports"}, "domain[0]"),
        ({"sort": "random"}, "sort"),
        ({"colour": "red"}, "colour"),
    ]
    for params, field in cases:
        resp = catalog.client.get("/v1/capabilities", params=params)
        assert_problem(resp, 400, field=field)
