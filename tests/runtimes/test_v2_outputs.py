"""V2 calls of a capability whose outputs V2 cannot express (a list of records) are
refused with a problem naming the output, before it runs, instead of answering
``outputs: []``; the capability's page offers a tritonclient snippet only where V2 can
carry both its inputs and its outputs (the test of :func:`v2_callable`)."""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node, assert_problem
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.plugins.capability import Capability
from yunnao.settings import Settings

FIXES_DIR = Path(__file__).resolve().parents[1] / "data" / "fixesplugin"
FIXES = f"{NODE_ID}.fixes"


def fixes_capabilities() -> dict[str, Capability]:
    """The capabilities of ``tests/data/fixesplugin``, imported from its directory."""
    if str(FIXES_DIR) not in sys.path:
        sys.path.insert(0, str(FIXES_DIR))
    import yunnao_fixes

    return {c.name: c for c in yunnao_fixes.yunnao_capabilities()}


def fixes_node(tmp: Path, *rt: str) -> Iterator[Node]:
    """A node (in-process runtime, embedded MLflow) with the fixes plugin's capabilities
    in ``<node>.fixes`` and the test plugin's ``rt`` ones in its namespace."""
    settings = Settings(node_id=NODE_ID, data_dir=tmp, plugins=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        publisher = app.state.catalog.publisher
        for cap in fixes_capabilities().values():
            publisher.publish(cap, namespace=FIXES)
        for name in rt:
            publisher.publish(rt_capabilities()[name], namespace=NAMESPACE)
        yield Node(client=client, settings=settings)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from fixes_node(tmp_path_factory.mktemp("v2out"), "double")


def _infer(node: Node, model: str) -> Any:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [0.1, 0.7, 0.9]}]}
    return node.client.post(f"/v2/models/{model}/infer", json=body)


def test_a_v2_call_whose_outputs_v2_cannot_express_is_refused(node: Node) -> None:
    answer = _infer(node, f"{FIXES}.bands")
    body = assert_problem(answer, 400, field="outputs.bands", slug="bad-request")
    assert "bands" in body["detail"] and "POST /v1/invoke" in body["detail"]
    assert body["error"]  # the member V2 clients read
    assert [e["field"] for e in body["errors"]] == ["outputs.bands"]  # total is an INT64
    # Its metadata and readiness say the same (no model with outputs missing).
    assert_problem(node.client.get(f"/v2/models/{FIXES}.bands"), 400, field="outputs.bands")
    assert_problem(node.client.get(f"/v2/models/{FIXES}.bands/ready"), 400)
    # Through /v1/invoke it answers, records and all.
    done = node.client.post(f"/v1/invoke/{FIXES}/bands", json={"input": {"x": [0.1, 0.7, 0.9]}})
    assert done.status_code == 200, done.text
    assert [b["name"] for b in done.json()["output"]["bands"]] == ["low", "high"]
    # A tensor capability is still served.
    ok = _infer(node, f"{NAMESPACE}.double")
    assert ok.status_code == 200 and ok.json()["outputs"][0]["name"] == "y"


def test_the_test_of_expressibility() -> None:
    from yunnao.runtimes.gateway.v2 import unexpressible_outputs, v2_callable

    caps = {**fixes_capabilities(), **rt_capabilities()}
    bands, double = caps["bands"], caps["double"]
    assert unexpressible_outputs(bands.output_schema) == ["bands"]
    assert not v2_callable(bands.input_schema, bands.output_schema)
    assert v2_callable(double.input_schema, double.output_schema)
    assert v2_callable(caps["greet"].input_schema, caps["greet"].output_schema)
    limits = caps["limits"]  # list inputs: no V2 model at all
    assert not v2_callable(limits.input_schema, limits.output_schema)
    assert unexpressible_outputs({"type": "array", "items": {"type": "object"}}) == ["output"]


def _snippets(node: Node, path: str) -> set[str]:
    page = node.client.get(path)
    assert page.status_code == 200, page.text
    return set(re.findall(r'<code id="snippet-([a-z]+)">', html.unescape(page.text)))


def test_the_page_offers_tritonclient_only_where_v2_works(node: Node) -> None:
    assert _snippets(node, f"/c/{FIXES}/bands") == {"curl", "python"}
    assert _snippets(node, f"/c/{NAMESPACE}/double") == {"curl", "python", "tritonclient"}
