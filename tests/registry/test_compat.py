"""Compatibility of versions within a major: a table of breaking and compatible schema
changes, the version each is compared with, and the publish refused (409 naming each
break, nothing written) or accepted; the compare endpoint shows the differences."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.registry import compat

NS = f"{NODE_ID}.traffic"


def obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


NUM, INT, STR = {"type": "number"}, {"type": "integer"}, {"type": "string"}
CARS = {"type": "array", "items": obj(None, plate=STR, colour=STR)}
BASE_IN = obj(["speed"], speed=NUM, mode={"type": "string", "enum": ["a", "b"]}, tag=STR, cars=CARS)
BASE_OUT = obj(["count"], count=INT, label={"type": "string", "enum": ["x", "y"]},
               items={"type": "array", "items": obj(["id"], id=STR, score=NUM)})  # fmt: skip
BASE_EXAMPLES = [{"title": "one car", "input": {"speed": 40}, "output": {"count": 1}}]


def case(inp: dict | None = None, out: dict | None = None, examples: list | None = None) -> dict:
    return {
        "input_schema": inp if inp is not None else BASE_IN,
        "output_schema": out if out is not None else BASE_OUT,
        "examples": examples if examples is not None else BASE_EXAMPLES,
    }


def with_in(**changes: Any) -> dict:
    props = {**BASE_IN["properties"], **changes}
    return obj(BASE_IN["required"], **{k: v for k, v in props.items() if v is not None})


def with_out(**changes: Any) -> dict:
    props = {**BASE_OUT["properties"], **changes}
    return obj(BASE_OUT["required"], **{k: v for k, v in props.items() if v is not None})


ITEM = BASE_OUT["properties"]["items"]

# (what changed, the new version's schemas, the fields named as breaks: [] = compatible)
TABLE: list[tuple[str, dict, list[str]]] = [
    # input: the new version must accept every request the old one accepted
    (
        "new required input",
        case(inp={**with_in(zone=STR), "required": ["speed", "zone"]}),
        ["input.zone"],
    ),
    (
        "optional input made required",
        case(inp={**BASE_IN, "required": ["speed", "tag"]}),
        ["input.tag"],
    ),
    ("input number narrowed to integer", case(inp=with_in(speed=INT)), ["input.speed"]),
    ("input type taken from a union", case(inp=with_in(tag={"type": ["string", "null"]})), []),
    ("input union narrowed", case(inp=with_in(tag={"type": "null"})), ["input.tag"]),
    (
        "input enum narrowed",
        case(inp=with_in(mode={"type": "string", "enum": ["a"]})),
        ["input.mode"],
    ),
    (
        "input enum set where there was none",
        case(inp=with_in(tag={"type": "string", "enum": ["p"]})),
        ["input.tag"],
    ),
    (
        "input minimum raised",
        case(inp=with_in(speed={"type": "number", "minimum": 5})),
        ["input.speed"],
    ),
    (
        "input maxLength lowered",
        case(inp=with_in(tag={"type": "string", "maxLength": 3})),
        ["input.tag"],
    ),
    (
        "input pattern added",
        case(inp=with_in(tag={"type": "string", "pattern": "^[a-z]+$"})),
        ["input.tag"],
    ),
    (
        "undeclared input fields now refused",
        case(inp={**BASE_IN, "additionalProperties": False}),
        ["input"],
    ),
    (
        "input array item field newly required",
        case(inp=with_in(cars={"type": "array", "items": obj(["plate"], plate=STR, colour=STR)})),
        ["input.cars[].plate"],
    ),
    (
        "input array item field narrowed",
        case(inp=with_in(cars={"type": "array", "items": obj(None, plate=INT, colour=STR)})),
        ["input.cars[].plate"],
    ),
    (
        "input array limited in length",
        case(inp=with_in(cars={**CARS, "maxItems": 10})),
        ["input.cars"],
    ),
    (
        "input array item field added",
        case(
            inp=with_in(cars={"type": "array", "items": obj(None, plate=STR, colour=STR, make=STR)})
        ),
        [],
    ),
    ("input anyOf changed", case(inp=with_in(tag={"anyOf": [STR, INT]})), ["input.tag"]),
    # input, compatible
    ("new optional input", case(inp=with_in(zone=STR)), []),
    ("input integer widened to number (old: integer)", case(inp=with_in(speed=NUM)), []),
    ("input enum widened", case(inp=with_in(mode={"type": "string", "enum": ["a", "b", "c"]})), []),
    ("required input made optional", case(inp={**BASE_IN, "required": []}), []),
    ("input described", case(inp=with_in(speed={"type": "number", "description": "km/h"})), []),
    # output: every answer of the new version must be one the old could give
    ("output field removed", case(out=with_out(label=None)), ["output.label"]),
    ("output field retyped", case(out=with_out(count=STR)), ["output.count"]),
    ("output integer widened to number", case(out=with_out(count=NUM)), ["output.count"]),
    (
        "output enum widened",
        case(out=with_out(label={"type": "string", "enum": ["x", "y", "z"]})),
        ["output.label"],
    ),
    ("output no longer always returned", case(out={**BASE_OUT, "required": []}), ["output.count"]),
    (
        "output array item field removed",
        case(out=with_out(items={"type": "array", "items": obj(["id"], id=STR)})),
        ["output.items[].score"],
    ),
    (
        "output array item retyped",
        case(out=with_out(items={"type": "array", "items": obj(["id"], id=INT, score=NUM)})),
        ["output.items[].id"],
    ),
    # output, compatible
    ("new output field", case(out=with_out(extra=STR)), []),
    (
        "output number narrowed to integer",
        case(out=with_out(items={"type": "array", "items": obj(["id"], id=STR, score=INT)})),
        [],
    ),
    ("output enum narrowed", case(out=with_out(label={"type": "string", "enum": ["x"]})), []),
    ("output made always returned", case(out={**BASE_OUT, "required": ["count", "label"]}), []),
    # examples
    ("example removed", case(examples=[]), ["examples[0]"]),
    (
        "example added",
        case(examples=[*BASE_EXAMPLES, {"title": "two", "input": {"speed": 80}}]),
        [],
    ),
    ("example retitled", case(examples=[{"title": "一辆车", "input": {"speed": 40}}]), []),
    ("nothing changed", case(), []),
]
BASE = case()


@pytest.mark.parametrize(("what", "new", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_breaking_and_compatible_changes(what: str, new: dict, expected: list[str]) -> None:
    found = compat.breaks(BASE, new)
    assert sorted({b.field for b in found}) == sorted(expected), (what, found)
    for b in found:
        assert b.message  # each break says what it is
    # The diff view marks exactly the breaking fields' rule changes as breaking.
    marked = {c.field.split(" ")[0] for c in compat.changes(BASE, new) if c.breaking}
    assert marked <= {*expected, "examples"}, (what, marked)
    if expected and not any(f.startswith("examples") for f in expected):
        assert marked, (what, compat.changes(BASE, new))


def test_an_input_that_was_integer_may_become_number_but_not_back() -> None:
    old = case(inp=with_in(speed=INT))
    assert compat.breaks(old, case(inp=with_in(speed=NUM))) == []
    assert [b.field for b in compat.breaks(case(inp=with_in(speed=NUM)), old)] == ["input.speed"]


@pytest.mark.parametrize(
    ("new", "existing", "expected"),
    [
        ("1.4.0", [("1.0.0", "published"), ("1.3.0", "deprecated"), ("2.0.0", "published")],
         "1.3.0"),
        ("1.2.1", [("1.2.0", "published"), ("1.3.0", "published")], "1.2.0"),  # a backport
        ("1.4.0", [("1.3.0", "draft"), ("1.2.0", "retired")], "1.2.0"),  # drafts never called
        ("2.0.0", [("1.9.0", "published")], None),  # a new major may break
        ("0.3.0", [("0.2.0", "published")], None),  # major 0: a minor starts a line
        ("0.2.1", [("0.2.0", "published")], "0.2.0"),
        ("1.0.0", [], None),
    ],
)  # fmt: skip
def test_the_version_a_new_one_is_compared_with(new: str, existing: list, expected) -> None:
    assert compat.baseline(new, existing) == expected
    if expected is None and existing:
        assert compat.next_line(existing[0][0]) <= new or new.startswith("0.")


def test_a_breaking_minor_is_refused_naming_each_break_and_a_major_is_not(node: Node) -> None:
    body = {"input_schema": BASE_IN, "output_schema": BASE_OUT, "examples": BASE_EXAMPLES}
    assert node.publish(NS, "flow", "1.0.0", **body).status_code == 201
    breaking = {**body, "input_schema": {**with_in(zone=STR), "required": ["speed", "zone"]},
                "output_schema": with_out(label=None)}  # fmt: skip
    problem = assert_problem(
        node.publish(NS, "flow", "1.1.0", **breaking), 409,
        field="input.zone", slug="breaking-change",
    )  # fmt: skip
    assert {e["field"] for e in problem["errors"]} == {"input.zone", "output.label"}
    assert "2.0.0" in problem["detail"] and "1.0.0" in problem["detail"]
    author = node.auth("author")
    versions = node.client.get(f"/v1/capabilities/{NS}/flow/versions", headers=author).json()
    versions = versions["items"]
    assert [v["version"] for v in versions] == ["1.0.0"]  # nothing written

    assert node.publish(NS, "flow", "2.0.0", **breaking).status_code == 201
    compatible = {**body, "input_schema": with_in(zone=STR), "output_schema": with_out(extra=STR)}
    assert node.publish(NS, "flow", "1.1.0", **compatible).status_code == 201

    def compare(query: str) -> httpx.Response:
        return node.client.get(f"/v1/capabilities/{NS}/flow/compare?{query}", headers=author)

    diff = compare("from=1.0.0&to=2.0.0")
    assert diff.status_code == 200, diff.text
    got = diff.json()
    assert (got["from"], got["to"], got["compatible"]) == ("1.0.0", "2.0.0", False)
    assert got["checked_on_publish"] is False  # a new major may break
    assert {b["field"] for b in got["breaks"]} == {"input.zone", "output.label"}
    assert {"field": "input.zone required", "kind": "added", "old": None, "new": True,
            "breaking": True} in got["changes"]  # fmt: skip
    minor = compare("from=1.0.0&to=1.1.0").json()
    assert minor["compatible"] and minor["checked_on_publish"] and minor["breaks"] == []
    assert any(c["field"] == "output.extra type" and c["kind"] == "added" for c in minor["changes"])

    assert_problem(compare("from=1.0.0&to=9.0.0"), 404)
    assert_problem(compare("from=x&to=1.0.0"), 400, field="from")


def test_nobody_compares_what_they_may_not_see(sqlite_node: Node) -> None:
    node = sqlite_node
    secret = {"classification": "restricted", "input_schema": BASE_IN, "output_schema": BASE_OUT}
    assert node.publish(NS, "secret", "1.0.0", **secret).status_code == 201
    assert node.publish(NS, "secret", "1.0.1", **secret).status_code == 201
    url = f"/v1/capabilities/{NS}/secret/compare?from=1.0.0&to=1.0.1"
    assert_problem(node.client.get(url), 404)
    water = f"{NODE_ID}.water"
    other = {"Authorization": f"Bearer {node.token('consumer', water, department=water)}"}
    assert_problem(node.client.get(url, headers=other), 404)
    assert node.client.get(url, headers=node.auth("admin")).status_code == 200
