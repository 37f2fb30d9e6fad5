"""An uploaded package on Ray Serve and on Triton, as an operator grants it: a real
``yunnao serve`` node beside a real Ray head and a real ``tritonserver``. An author
uploads a package that needs a distribution the node's environment does not have;
only a token of the node's operators may bind its version ``trusted`` to those
runtimes (their workers run as the node's user), and then each serves it on the
package's own environment, never installed into the node's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_problem
from tests.end_to_end.test_upload import author_upload, token_for
from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from tests.registry.test_packages import DEP_MODULE, dept_wheel, index  # noqa: F401

pytestmark = pytest.mark.slow

NS = "sd.qd.hello"
VERSION = f"/v1/capabilities/{NS}/greet/versions/1.0.0"
GREETING = {"text": "hello, 市南区", "polite": True}


def operator_token(node_dir: Path) -> str:
    out = subprocess.run(
        [YUNNAO, "token", "create", "--node-id", "sd.qd", "--role", "operator",
         "--namespace", "sd.qd"],
        cwd=node_dir, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from tests.realservers.ray import RayHead
    from tests.realservers.triton import TritonProcess

    head = RayHead(tmp_path_factory.mktemp("ray")).start()
    triton = TritonProcess(tmp_path_factory.mktemp("triton"))
    try:
        triton.start()
        yield head, triton
    finally:
        triton.stop()
        head.stop()


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory,
    index: str,  # noqa: F811
    servers: tuple[Any, Any],
) -> Iterator[tuple[YunnaoProcess, Path]]:
    head, triton = servers
    cwd = tmp_path_factory.mktemp("upload-runtimes-node")
    runtimes = {
        "rayserve": {"address": head.address},
        "triton": {"url": triton.url, "repository": str(triton.repository)},
    }
    env = {
        "YUNNAO_PACKAGE_INDEX": index,
        "YUNNAO_PLUGINS": "false",
        "YUNNAO_RUNTIMES": json.dumps(runtimes),
        "RAY_AUTH_MODE": "disabled",
    }
    proc = YunnaoProcess(cwd, "--node-id", "sd.qd", env=env).start(timeout=120)
    try:
        job = author_upload(proc, token_for(cwd, NS), dept_wheel(cwd / "dist"))
        assert job["status"] == "succeeded", job
        yield proc, cwd
    finally:
        proc.stop()


def rebind(proc: YunnaoProcess, token: str, binding: dict[str, Any]) -> httpx.Response:
    return httpx.put(
        f"{proc.url}{VERSION}/runtime",
        json=binding,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def greet(proc: YunnaoProcess, token: str) -> httpx.Response:
    return httpx.post(
        f"{proc.url}/v1/invoke/{NS}/greet@1.0.0",
        json={"input": {"name": "市南区"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
    )


def test_an_author_cannot_trust_their_own_package(node) -> None:
    proc, cwd = node
    for rtype in ("rayserve", "triton"):
        resp = rebind(proc, token_for(cwd, NS), {"type": rtype, "config": {"trusted": True}})
        assert_problem(resp, 403, field="config.trusted")


@pytest.mark.parametrize(
    "binding",
    [
        {"type": "rayserve", "config": {"trusted": True, "num_cpus": 0.2}},
        {"type": "triton", "config": {"trusted": True}},
    ],
    ids=["rayserve", "triton"],
)
def test_an_operator_trusts_it_on_a_runtime_and_it_answers(node, binding) -> None:
    proc, cwd = node
    assert importlib.util.find_spec(DEP_MODULE) is None  # never installed into the node
    assert rebind(proc, operator_token(cwd), binding).status_code == 200
    answer = greet(proc, token_for(cwd, NS))
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == GREETING
    assert importlib.util.find_spec(DEP_MODULE) is None
