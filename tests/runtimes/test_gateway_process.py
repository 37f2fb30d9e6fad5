"""The gateway as users run it: a real ``yunnao serve`` process, called by an unmodified
``tritonclient.http`` over the V2 protocol, and restarted while jobs are queued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.realservers.yunnao_node import YunnaoProcess
from tests.runtime_support import RT_PLUGIN_DIR

pytestmark = pytest.mark.slow

NAMESPACE = "sd.qd.yunnao-rt"  # <node>.<plugin>, the plugin package's _ as -
PLUGIN = str(RT_PLUGIN_DIR / "yunnao_rt")


def _node(cwd: Path, **env: str) -> YunnaoProcess:
    base = {"YUNNAO_NODE_ID": "sd.qd", "YUNNAO_PLUGINS": "false"}
    return YunnaoProcess(cwd, "--plugin", PLUGIN, "--publish-plugins", env={**base, **env})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunnaoProcess]:
    proc = _node(tmp_path_factory.mktemp("v2")).start(timeout=120)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(node: YunnaoProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{node.port}")
    try:
        yield c
    finally:
        c.close()


def test_tritonclient_calls_a_tensor_capability_unchanged(
    client: triton.InferenceServerClient,
) -> None:
    model = f"{NAMESPACE}.double"
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1]}]
    x = np.array([1.0, 2.5, -3.0], dtype=np.float32)
    for binary in (True, False):  # the binary tensor extension (the default) and JSON
        tensor = triton.InferInput("x", [3], "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = [triton.InferRequestedOutput("y", binary_data=binary)]
        result = client.infer(model, [tensor], outputs=wanted, model_version="1.0.0")
        np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    result = client.infer(model, [tensor])  # no outputs named: all of them
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_strings_and_scalars_map_to_bytes_and_bool(client: triton.InferenceServerClient) -> None:
    name = triton.InferInput("name", [1], "BYTES")
    name.set_data_from_numpy(np.array(["王芳".encode()], dtype=object))
    excited = triton.InferInput("excited", [1], "BOOL")
    excited.set_data_from_numpy(np.array([True]))
    result = client.infer(f"{NAMESPACE}.greet", [name, excited])
    assert result.as_numpy("output")[0].decode() == "你好, 王芳!"


def test_v2_errors_reach_tritonclient_as_messages(client: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("x", [2], "FP64")
    wrong.set_data_from_numpy(np.array([1.0, 2.0]))
    with pytest.raises(InferenceServerException, match="expected FP32"):
        client.infer(f"{NAMESPACE}.double", [wrong])
    with pytest.raises(InferenceServerException, match="no capability"):
        client.get_model_metadata(f"{NAMESPACE}.nothing")
    text = triton.InferInput("message", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException, match="error id"):
        client.infer(f"{NAMESPACE}.boom", [text])


def test_v2_errors_are_problem_documents(node: YunnaoProcess) -> None:
    resp = httpx.post(f"{node.url}/v2/models/{NAMESPACE}.double/infer", json={"inputs": "x"})
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["errors"][0]["field"] == "inputs" and body["error"]


def _jobs(url: str, count: int, seconds: float) -> list[str]:
    ids = []
    for _ in range(count):
        resp = httpx.post(
            f"{url}/v1/invoke/{NAMESPACE}/sleepy",
            json={"input": {"seconds": seconds}, "timeout": 3},
            headers={"Prefer": "respond-async"},
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


def _job(url: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/jobs/{job_id}").json()


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_queued_jobs_survive_a_crash_and_a_restart(tmp_path: Path) -> None:
    node = _node(tmp_path, YUNNAO_JOB_WORKERS="1", YUNNAO_JOB_LEASE_GRACE="1")
    node.start(timeout=120)
    try:
        ids = _jobs(node.url, 5, 0.5)
        _until(lambda: _job(node.url, ids[0])["status"] != "queued", 30, "the first job to start")
        assert node.proc is not None
        node.proc.kill()  # no goodbye: the running job's lease must run out
        node.proc.wait()
        node.start(timeout=120)
        ids += _jobs(node.url, 3, 0.5)
        _until(lambda: _job(node.url, ids[5])["status"] != "queued", 30, "a job after restart")
        assert node.stop()  # a clean stop hands running jobs back
        node.start(timeout=120)
        _until(
            lambda: all(_job(node.url, i)["status"] == "succeeded" for i in ids),
            90,
            "every job to succeed",
        )
        jobs = [_job(node.url, i) for i in ids]
        assert all(j["output"] == 0.5 for j in jobs)
        assert all(j["attempts"] >= 1 for j in jobs)
    finally:
        node.stop()


def _cli(node: YunnaoProcess, *args: str) -> Any:
    import subprocess
    import sys

    yunnao = str(Path(sys.executable).parent / "yunnao")
    return subprocess.run(
        [yunnao, *args, "--url", node.url], capture_output=True, text=True, timeout=120
    )


def test_the_cli_invokes_sync_and_async_and_explains_errors(node: YunnaoProcess) -> None:
    done = _cli(node, "invoke", f"{NAMESPACE}/greet", "-i", "name=李雷")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "你好, 李雷."
    done = _cli(node, "invoke", f"{NAMESPACE}/double@1.0.0", '{"x": [1, 2]}', "--async", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"y": [2.0, 4.0]}
    done = _cli(node, "invoke", f"{NAMESPACE}/greet", "-i", "nom=x")
    assert done.returncode == 1
    assert "422" in done.stderr and "input.name" in done.stderr and "input.nom" in done.stderr
    done = _cli(node, "runtime", "status")
    assert done.returncode == 0 and "inprocess" in done.stdout and "up" in done.stdout


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "_"]}]},
         {}, 400),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}, {}, 422),
        ({"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 422),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                         "parameters": {"binary_data_size": 3}}]},
            {"Inference-Header-Content-Length": "HEADER"},
            400,
        ),
    ],
)  # fmt: skip
def test_malformed_v2_tensors_are_4xx_problems(
    node: YunnaoProcess, body: dict, headers: dict, status: int
) -> None:
    head = json.dumps(body).encode()
    if headers.get("Inference-Header-Content-Length") == "HEADER":
        headers = {"Inference-Header-Content-Length": str(len(head))}
        head += b"abc"  # three bytes are not one FP32
    resp = httpx.post(
        f"{node.url}/v2/models/{NAMESPACE}.double/infer",
        content=head,
        headers={"Content-Type": "application/json", **headers},
    )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["error"]
