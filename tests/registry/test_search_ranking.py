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
