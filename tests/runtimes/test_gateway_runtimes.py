"""The gateway in front of each external runtime, as users run it: a real
``yunnao serve`` process whose versions are bound to a real server (``bentoml serve``,
``tritonserver``, a Ray cluster), called over HTTP. The runtime adapters' own tests
(tests/runtimes/test_runtime_*.py) cover each adapter in depth; these check what a caller sees:
answers, 503 with Retry-After while a server is down, and recovery once it is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_problem
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
YUNNAO = str(Path(sys.executable).parent / "yunnao")


def _invoke(node: YunnaoProcess, ref: str, data: dict[str, Any], **body: Any) -> httpx.Response:
    return httpx.post(f"{node.url}/v1/invoke/{ref}", json={"input": data, **body}, timeout=120)


def _until_ok(node: YunnaoProcess, ref: str, data: dict[str, Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        resp = _invoke(node, ref, data)
        if resp.status_code == 200 or time.monotonic() > deadline:
            return resp
        # Down (503), or still loading when the call's time ran out (504): never a 500.
        assert resp.status_code in (503, 504), resp.text
        time.sleep(1)


def _processes_running(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


# ---------------------------------------------------------------- BentoML


@pytest.fixture(scope="module")
def bento_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunnaoProcess]:
    """The example noise service published with `yunnao publish --bentoml`: the node
    starts `bentoml serve` for it on first call."""
    cwd = tmp_path_factory.mktemp("bento-node")
    env = {**os.environ, "YUNNAO_NODE_ID": "sd.qd", "YUNNAO_DATA_DIR": str(cwd / "var")}
    done = subprocess.run(
        [YUNNAO, "publish", "--bentoml", "service:NoiseService",
         "--working-dir", str(ROOT / "examples" / "bento"),
         "--namespace", "sd.qd.env", "--version", "1.0.0", "--classification", "public"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sd.qd.env/noise-level@1.0.0" in done.stderr
    node = YunnaoProcess(cwd, env={"YUNNAO_NODE_ID": "sd.qd", "YUNNAO_PLUGINS": "false"})
    node.start(timeout=120)
    try:
        yield node
    finally:
        node.stop()
        for pid in _processes_running("service:NoiseService"):
            os.kill(pid, signal.SIGKILL)


def test_a_bentoml_service_answers_through_the_gateway(bento_node: YunnaoProcess) -> None:
    resp = _until_ok(bento_node, "sd.qd.env/noise-level", {"readings": [58.5, 61, 72.4]}, 120)
    assert resp.status_code == 200, resp.text
    out = resp.json()["output"]
    assert out["count"] == 3 and out["lmax"] == 72.4
    shown = httpx.get(f"{bento_node.url}/v1/capabilities/sd.qd.env/noise-level/versions/1.0.0")
    assert shown.json()["runtime"]["type"] == "bentoml"
    # The gateway checks the input against the schema read from the API's signature.
    assert_problem(_invoke(bento_node, "sd.qd.env/noise-level", {}), 422, field="input.readings")


def test_a_killed_bentoml_service_is_503_then_serves_again(bento_node: YunnaoProcess) -> None:
    ref, data = "sd.qd.env/classify-zone", {"zone": "1", "day_db": 54, "night_db": 48.5}
    assert _until_ok(bento_node, ref, data, 120).status_code == 200
    pids = _processes_running("service:NoiseService")
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    down = _invoke(bento_node, ref, data)
    body = assert_problem(down, 503, slug="runtime-unavailable")
    assert int(down.headers["retry-after"]) > 0 and body["detail"]
    back = _until_ok(bento_node, ref, data, 120)  # the node restarts the service itself
    assert back.status_code == 200, back.text
    assert back.json()["output"]["compliant"] is False


def test_a_bentoml_service_under_traffic_fails_cleanly_and_recovers(tmp_path: Path) -> None:
    """The test service (greet, sleepy, boom) run by its department and adopted by URL:
    errors and timeouts are problems, and calls in flight while it is killed end as 503,
    never as a hang or a 500."""
    from tests.realservers.bentoml import BentoMLServer

    server = BentoMLServer("service:Greeter", ROOT / "tests" / "data" / "bento_svc", tmp_path)
    server.start(timeout=90)
    env = {**os.environ, "YUNNAO_NODE_ID": "sd.qd", "YUNNAO_DATA_DIR": str(tmp_path / "var")}
    done = subprocess.run(
        [YUNNAO, "publish", "--bentoml", "service:Greeter",
         "--working-dir", str(ROOT / "tests" / "data" / "bento_svc"), "--service-url",
         server.url, "--namespace", "sd.qd.bento", "--version", "1.0.0",
         "--classification", "public"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    node = YunnaoProcess(tmp_path, env={"YUNNAO_NODE_ID": "sd.qd", "YUNNAO_PLUGINS": "false"})
    node.start(timeout=120)
    try:
        assert _invoke(node, "sd.qd.bento/greet", {"name": "a"}).json()["output"] == "Hello, a!"
        failed = assert_problem(_invoke(node, "sd.qd.bento/boom", {"message": "x"}), 500)
        assert failed["error_id"]
        assert_problem(_invoke(node, "sd.qd.bento/sleepy", {"seconds": 5}, timeout=1), 504)
        assert _invoke(node, "sd.qd.bento/greet", {"name": "b"}).status_code == 200

        statuses: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    statuses.append(client.post(
                        f"{node.url}/v1/invoke/sd.qd.bento/greet",
                        json={"input": {"name": "t"}, "timeout": 10},
                    ).status_code)  # fmt: skip

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(1)
        server.kill()
        time.sleep(2)
        server.start(timeout=90)
        back = _until_ok(node, "sd.qd.bento/greet", {"name": "c"}, 60)
        stop.set()
        for w in workers:
            w.join(timeout=60)
        assert back.status_code == 200
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    finally:
        node.stop()
        server.stop()


# ---------------------------------------------------------------- Ray Serve and Triton

RT = "sd.qd.yunnao-rt"  # the test plugin's capabilities, published by the node on start


def _rt_node(cwd: Path, runtimes: str, **env: str) -> YunnaoProcess:
    from tests.runtime_support import RT_PLUGIN_DIR

    node_env = {"YUNNAO_NODE_ID": "sd.qd", "YUNNAO_PLUGINS": "false",
                "YUNNAO_RUNTIMES": runtimes, **env}  # fmt: skip
    args = ("--plugin", str(RT_PLUGIN_DIR / "yunnao_rt"), "--publish-plugins")
    return YunnaoProcess(cwd, *args, env=node_env).start(timeout=120)


def _bind(node: YunnaoProcess, name: str, rtype: str, **config: Any) -> None:
    """Rebind a version as an operator does: `yunnao runtime set`."""
    env = {**os.environ, "YUNNAO_NODE_ID": "sd.qd", "YUNNAO_DATA_DIR": str(node.cwd / "var")}
    token = subprocess.run(
        [YUNNAO, "token", "create", "--role", "operator", "--namespace", RT],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.strip()  # fmt: skip
    options = [x for k, v in config.items() for x in ("-c", f"{k}={json.dumps(v)}")]
    done = subprocess.run(
        [YUNNAO, "runtime", "set", f"{RT}/{name}@1.0.0", rtype, *options,
         "--url", node.url, "--token", token],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _down_then_back(node: YunnaoProcess, server: Any, ref: str, data: dict[str, Any]) -> None:
    server.kill()
    deadline = time.monotonic() + 60
    while True:  # calls in flight may still be answered; then the node notices
        down = _invoke(node, ref, data, timeout=10)
        if down.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    body = assert_problem(down, 503, slug="runtime-unavailable")
    assert int(down.headers["retry-after"]) > 0 and body["detail"]
    server.start()
    back = _until_ok(node, ref, data, 180)
    assert back.status_code == 200, back.text


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.realservers.ray import RayHead

    head = RayHead(tmp_path_factory.mktemp("ray")).start()
    try:
        yield head
    finally:
        head.stop()


def test_ray_serve_behind_the_gateway(ray_head: Any, tmp_path: Path) -> None:
    config = json.dumps({"rayserve": {"address": ray_head.address}})
    node = _rt_node(tmp_path, config, RAY_AUTH_MODE="disabled")
    try:
        for name in ("pid", "boom", "sleepy"):
            _bind(node, name, "rayserve", num_cpus=0.2)
        resp = _invoke(node, f"{RT}/pid", {})
        assert resp.status_code == 200, resp.text
        assert node.proc is not None and resp.json()["output"] != node.proc.pid  # a replica ran it
        failed = assert_problem(_invoke(node, f"{RT}/boom", {"message": "m"}), 500)
        assert failed["error_id"] and "secret" not in str(failed)
        assert_problem(_invoke(node, f"{RT}/sleepy", {"seconds": 5}, timeout=1), 504)
        assert _invoke(node, f"{RT}/pid", {}).status_code == 200  # not wedged
        _down_then_back(node, ray_head, f"{RT}/pid", {})
    finally:
        node.stop()


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.realservers.triton import TritonProcess

    server = TritonProcess(tmp_path_factory.mktemp("triton")).start()
    try:
        yield server
    finally:
        server.stop()


def test_triton_behind_the_gateway(triton_server: Any, tmp_path: Path) -> None:
    config = json.dumps(
        {"triton": {"url": triton_server.url, "repository": str(triton_server.repository)}}
    )
    node = _rt_node(tmp_path, config)
    try:
        for name in ("double", "sleepy", "boom"):
            _bind(node, name, "triton")
        resp = _invoke(node, f"{RT}/double", {"x": [1.5, -2]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["output"] == {"y": [3.0, -4.0]}
        assert_problem(_invoke(node, f"{RT}/sleepy", {"seconds": 5}, timeout=1), 504)
        assert _invoke(node, f"{RT}/double", {"x": [1]}).status_code == 200
        failed = assert_problem(_invoke(node, f"{RT}/boom", {"message": "m"}), 500)
        assert failed["error_id"] and "secret" not in str(failed)
        assert _invoke(node, f"{RT}/double", {"x": [1]}).status_code == 200
        _down_then_back(node, triton_server, f"{RT}/double", {"x": [2]})
    finally:
        node.stop()
