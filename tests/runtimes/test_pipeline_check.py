"""The pipeline declaration's check at publish (runtimes/adapters/pipeline.check): the
derived schemas, and each way a declaration can fail to chain, named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from yunnao.plugins.errors import NotFound, ValidationFailed
from yunnao.runtimes.adapters.pipeline import build, check, fits

IMAGE = {"type": "string", "contentEncoding": "base64", "x-image": {"formats": ["jpeg"]}}
BOXES = {"type": "array", "items": {"$ref": "#/$defs/Box"}}
STEPS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sd.qd.a.urban/detect": (
        {"type": "object", "properties": {"frame": IMAGE, "k": {"type": "number", "maximum": 10}},
         "required": ["frame"]},
        {"type": "object", "properties": {"count": {"type": "integer"},
                                          "boxes": BOXES,
                                          "picture": IMAGE},
         "$defs": {"Box": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
    ),
    "sd.qd.urban/score": (
        {"type": "object", "properties": {"people": {"type": "number"},
                                          "label": {"type": "string"}},
         "required": ["people"]},
        {"type": "object", "properties": {"risk": {"type": "string"}}},
    ),
}  # fmt: skip


async def _describe(namespace: str, name: str, name_ref: str) -> tuple[dict, dict]:
    key = f"{namespace}/{name}"
    if key not in STEPS:
        raise NotFound(f"no capability {key}")
    return STEPS[key]


def _check(steps: list[dict[str, Any]], output: dict[str, Any]) -> tuple[dict, dict]:
    config = {"steps": steps, "output": output}
    return asyncio.run(check("sd.qd.urban", "report", config, _describe))


DETECT = {"id": "d", "call": "sd.qd.a.urban/detect", "input": {"frame": "$input.frame"}}


def test_schemas_are_derived_from_the_steps() -> None:
    score = {"id": "s", "call": "sd.qd.urban/score", "input": {"people": "$d.count", "label": "x"}}
    inputs, outputs = _check([DETECT, score], {"n": "$d.count", "boxes": "$d.boxes", "r": "$s.risk",
                                               "tag": "v1"})  # fmt: skip
    assert inputs["properties"] == {"frame": IMAGE} and inputs["required"] == ["frame"]
    assert inputs["additionalProperties"] is False
    props = outputs["properties"]
    assert props["n"] == {"type": "integer"} and props["tag"] == {"type": "string"}
    # A $ref into the step's $defs is inlined: the pipeline's schema stands alone.
    assert props["boxes"]["items"] == {"type": "object", "properties": {"x": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("steps", "output", "field", "words"),
    [
        ([DETECT, {"id": "s", "call": "sd.qd.urban/nope", "input": {}}], {"a": "$s"},
         "runtime.config.steps[1].call", "not visible"),
        ([DETECT, {"id": "s", "call": "sd.qd.urban/score", "input": {"people": "$d.picture"}}],
         {"a": "$s"}, "runtime.config.steps[1].input.people", "a file does not fit a number"),
        ([DETECT, {"id": "s", "call": "sd.qd.urban/score", "input": {"people": "$d.nope"}}],
         {"a": "$s"}, "runtime.config.steps[1].input.people", "answers no 'nope'"),
        ([DETECT, {"id": "s", "call": "sd.qd.urban/score", "input": {}}], {"a": "$s"},
         "runtime.config.steps[1].input", "requires people"),
        ([{**DETECT, "input": {"frame": "$s.x"}},
          {"id": "s", "call": "sd.qd.urban/score", "input": {"people": 1}}], {"a": "$s"},
         "runtime.config.steps[0].input.frame", "only earlier steps"),
        ([DETECT, {"id": "d", "call": "sd.qd.urban/score", "input": {"people": 1}}], {"a": "$d"},
         "runtime.config.steps[1].id", "taken"),
        ([{"id": "me", "call": "sd.qd.urban/report", "input": {}}], {"a": "$me"},
         "runtime.config.steps[0].call", "does not call itself"),
        ([{**DETECT, "input": {"frame": "$input.frame", "k": "ten"}}], {"a": "$d"},
         "runtime.config.steps[0].input.k", "a string does not fit a number"),
        ([DETECT], {"a": "$input.other"}, "runtime.config.output.a", "no step reads it"),
        ([{**DETECT, "call": "sd.qd.a.urban/detect@prod"}], {"a": "$d"},
         "runtime.config.steps[0].call", "not an alias"),
    ],
)  # fmt: skip
def test_a_declaration_that_does_not_chain_is_refused(
    steps: list[dict[str, Any]], output: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _check(steps, output)
    assert caught.value.errors[0].field == field
    assert words in caught.value.errors[0].message


def test_values_and_fits() -> None:
    scope = {"input": {"frame": "F"}, "d": {"count": 3, "boxes": [1]}}
    assert build({"a": "$d.count", "b": ["$input.frame", 2], "c": "$d", "d": "$x-y z"}, scope) == {
        "a": 3, "b": ["F", 2], "c": {"count": 3, "boxes": [1]}, "d": "$x-y z",
    }  # fmt: skip
    assert fits({"type": "integer"}, {"type": "number"}) is None
    assert fits({"type": "number"}, {"type": "integer"}) == "a number does not fit a integer"
    assert fits(IMAGE, IMAGE) is None and fits({}, {"type": "string"}) is None
