"""An uploaded package's code runs in the sandbox, whoever rebinds its version.

Its author may rebind a version to ``inprocess`` or ``rayserve`` (no key of those
needs an operator), and a new version may name the same model. Both runtimes run code
as the node's user, outside any sandbox (in process: beside the node's key and store),
so the node refuses to deploy the model of an uploaded package there: 409 naming the
sandbox and what to ask an operator for, before any of its code is imported and before
Ray is even asked. A real node (in this process) publishes a real upload first."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node, assert_problem
from tests.registry.test_packages import dept_wheel, index  # noqa: F401
from yunnao.app import create_app
from yunnao.settings import Settings

pytestmark = pytest.mark.slow

NS = f"{NODE_ID}.hello"
VERSION = f"/v1/capabilities/{NS}/greet/versions/1.0.0"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, index: str) -> Iterator[Node]:  # noqa: F811
    root = tmp_path_factory.mktemp("uploaded-bindings")
    settings = Settings(
        node_id=NODE_ID,
        data_dir=root / "node",
        database_url=f"sqlite:///{root / 'registry.db'}",
        package_index=index,
        plugins=False,
        # A cluster nobody runs: the refusal must come before the node reaches for it.
        runtimes={"rayserve": {"address": "127.0.0.1:9", "retry_after": 1}},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        node = Node(client=client, settings=settings)
        wheel = dept_wheel(root / "dist")
        resp = client.post(
            f"/v1/namespaces/{NS}/packages",
            params={"filename": wheel.name},
            content=wheel.read_bytes(),
            headers={"Content-Type": "application/octet-stream", **node.auth("author", NS)},
        )
        assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + 300
        job = resp.json()
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = client.get(resp.headers["location"], headers=node.auth("author", NS)).json()
        assert job["status"] == "succeeded", job
        yield node


def rebind(node: Node, binding: dict, role: str = "author") -> None:
    resp = node.client.put(f"{VERSION}/runtime", json=binding, headers=node.auth(role, NS))
    assert resp.status_code == 200, resp.text


def invoke(node: Node):
    return node.client.post(
        f"/v1/invoke/{NS}/greet@1.0.0",
        json={"input": {"name": "a"}},
        headers=node.auth("author", NS),
    )


def test_it_runs_in_the_sandbox_as_published(node: Node) -> None:
    resp = invoke(node)
    assert resp.status_code == 200, resp.text
    assert resp.json()["output"]["text"] == "hello, a"


def test_an_author_rebinding_it_in_process_cannot_run_it(node: Node) -> None:
    rebind(node, {"type": "inprocess"})
    try:
        problem = assert_problem(invoke(node), 409)
        assert "uploaded package" in problem["detail"] and "sandbox" in problem["detail"]
    finally:
        rebind(node, {"type": "sandbox"})
    assert invoke(node).status_code == 200  # the refusal cost nothing else


def test_an_author_rebinding_it_to_ray_serve_cannot_run_it(node: Node) -> None:
    rebind(node, {"type": "rayserve", "config": {"num_cpus": 0.1}})
    try:
        problem = assert_problem(invoke(node), 409)
        assert "uploaded package" in problem["detail"] and "trusted: true" in problem["detail"]
    finally:
        rebind(node, {"type": "sandbox"})


def test_only_an_operator_may_trust_it_outside_the_sandbox(node: Node) -> None:
    for rtype in ("rayserve", "triton"):
        binding = {"type": rtype, "config": {"trusted": True}}
        resp = node.client.put(f"{VERSION}/runtime", json=binding, headers=node.auth("author", NS))
        problem = assert_problem(resp, 403, field="config.trusted")
        assert "outside the sandbox" in problem["detail"]
    shown = node.client.get(VERSION, headers=node.auth("author", NS)).json()
    assert shown["runtime"]["type"] == "sandbox"


def test_a_binding_cannot_move_it_to_another_environment(node: Node) -> None:
    """The sandbox takes the environment the node wrote into the model, not the
    author-settable binding key."""
    other = "0" * 64
    rebind(node, {"type": "sandbox", "config": {"environment": other}})
    try:
        problem = assert_problem(invoke(node), 409)
        assert "environment" in problem["detail"]
    finally:
        rebind(node, {"type": "sandbox"})
    assert invoke(node).status_code == 200
