"""Relevance ranking of full-text search, on SQLite and on PostgreSQL: where a word occurs
decides the order, ties keep a stable order across pages, totals and facets are those of
every match."""

from __future__ import annotations

import pytest

from tests.conftest import Node

# name, title, summary, tags, description
ENTRIES = [
    ("tide-table", "潮汐表", "Tide tables", ["ocean"], "Tide tables for the harbour 港口."),
    ("berth-plan", "泊位计划", "Plans harbour berths", ["ocean"], "Berth planning."),
    ("harbour-map", "港口地图", "Map of the port", ["maps"], "A map."),
    ("crane-plan", "吊机计划", "Plans cranes", ["harbour"], "Crane planning."),
]


@pytest.fixture
def port(node: Node) -> Node:
    for name, title, summary, tags, description in ENTRIES:
        resp = node.publish(
            "sd.qd.port",
            name,
            title=title,
            summary=summary,
            tags=tags,
            description=description,
            domain="economy",
            kind="model",
            runtime={"type": "inprocess"},
            classification="public",
        )
        assert resp.status_code == 201, resp.text
    return node


def search(node: Node, **params) -> dict:
    resp = node.client.get("/v1/capabilities", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def names(body: dict) -> list[str]:
    return [item["name"] for item in body["items"]]


def test_a_word_in_the_name_ranks_above_summary_and_tags_and_those_above_description(
    port: Node,
) -> None:
    for q in ("harbour", "harb"):  # a whole word, and the same word while typing
        got = names(search(port, q=q))
        assert got[0] == "harbour-map"
        assert set(got[1:3]) == {"berth-plan", "crane-plan"}
        assert got[3] == "tide-table"


def test_every_word_must_match_in_some_field(port: Node) -> None:
    # "harbour" only in tide-table's description, "tide" in its name: still a match
    assert names(search(port, q="harbour tide")) == ["tide-table"]
    assert names(search(port, q="harbour cranes")) == ["crane-plan"]
    assert names(search(port, q="港口 地图")) == ["harbour-map"]
    assert names(search(port, q="港口")) == ["harbour-map", "tide-table"]  # title first


def test_totals_and_facets_count_every_match(port: Node) -> None:
    body = search(port, q="plan", per_page=1)
    assert body["total"] == 2 and len(body["items"]) == 1
    assert body["facets"]["tag"] == {"ocean": 1, "harbour": 1}
    assert body["facets"]["namespace"] == {"sd.qd.port": 2}


def test_equal_scores_keep_one_order_across_pages(node: Node) -> None:
    published = [f"gauge-{i:02d}" for i in range(7)]
    for name in published:
        resp = node.publish(
            "sd.qd.water",
            name,
            title="水位",
            summary="Reads a river gauge",
            domain="livelihood",
            classification="public",
        )
        assert resp.status_code == 201, resp.text
    whole = names(search(node, q="river", per_page=50))
    assert sorted(whole) == published
    paged: list[str] = []
    for page in (1, 2, 3, 4):
        paged += names(search(node, q="river", per_page=2, page=page))
    assert paged == whole
    assert whole == published  # equal scores: first published first


def test_facet_counts_of_a_word_equal_those_counted_by_hand(node: Node) -> None:
    # Entries with zero to three tags in two namespaces; some hold the word, some not.
    published = []
    for i in range(12):
        namespace = "sd.qd.water" if i % 3 else "sd.qd.port"
        tags = ["gauge", "river", "iot"][: i % 4]
        summary = "Reads a river gauge" if i % 2 else "Plans cranes"
        resp = node.publish(
            namespace,
            f"entry-{i:02d}",
            title="条目",
            summary=summary,
            tags=tags,
            domain="livelihood",
            classification="public",
        )
        assert resp.status_code == 201, resp.text
        # tags are searched too
        published.append((namespace, tags, "gauge" in summary.lower() or "gauge" in tags))

    def counted(namespace: str | None, tag: str | None) -> tuple[dict, dict]:
        # each facet's counts ignore that facet's own filter
        by_tag: dict[str, int] = {}
        by_ns: dict[str, int] = {}
        for ns, tags, holds in published:
            if not holds:
                continue
            if namespace is None or ns == namespace:
                for t in tags:
                    by_tag[t] = by_tag.get(t, 0) + 1
            if tag is None or tag in tags:
                by_ns[ns] = by_ns.get(ns, 0) + 1
        return by_tag, by_ns

    for namespace, tag in (
        (None, None),
        ("sd.qd.water", None),
        (None, "iot"),
        ("sd.qd.port", "river"),
    ):
        params = {"q": "gauge"}
        if namespace:
            params["namespace"] = namespace
        if tag:
            params["tag"] = tag
        body = search(node, **params)
        by_tag, by_ns = counted(namespace, tag)
        assert body["facets"]["tag"] == by_tag
        assert body["facets"]["namespace"] == by_ns
