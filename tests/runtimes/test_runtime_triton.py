"""The triton runtime against a real ``tritonserver`` (CPU, Python backend): capabilities
published to a real MLflow run inside Triton through wrapper entries, a hand-written model
through a passthrough binding, failures mapped to the runtime errors, a server crash and
restart, and a server the runtime starts itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realservers.triton import TritonProcess
from tests.runtime_support import RtModels, publish_rt_models
from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.runtimes.adapters.base import Runtime, RuntimeContext
from yunnao.runtimes.adapters.loading import download_model
from yunnao.runtimes.adapters.triton import TritonRuntime, TritonServer, write_wrapper_entry

pytestmark = pytest.mark.slow

PASSTHROUGH_MODEL = Path(__file__).parents[1] / "data" / "triton" / "double_fp32"
CALL_TIMEOUT = 30.0  # generous: other test processes may share the two cores
START_TIMEOUT = 60.0
RESTART_DEADLINE = 90.0  # for a crashed server started again to answer
WRAPPED = ("greet", "double", "pid", "boom", "sleepy")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> RtModels:
    """The test capabilities, published to an embedded MLflow once for the module."""
    return publish_rt_models(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    """One tritonserver for the module, with the hand-written passthrough model in its
    repository (not loaded: explicit model control)."""
    srv = TritonProcess(tmp_path_factory.mktemp("triton"))
    srv.add_model(PASSTHROUGH_MODEL)
    srv.start(timeout=START_TIMEOUT)
    try:
        yield srv
    finally:
        srv.stop()


def context(models: RtModels, data_dir: Path) -> RuntimeContext:
    return RuntimeContext(
        node_id="sd.qd",
        data_dir=data_dir,
        tracking_uri=models.models.tracking_uri,
        registry_uri=models.models.registry_uri,
    )


def run(
    runtime: TritonRuntime,
    scenario: Callable[[TritonRuntime], Awaitable[None]],
    server: TritonServer | None = None,
) -> None:
    """Run ``scenario`` on its own event loop, closing the runtime after; a failure
    carries the end of the server's log."""

    async def main() -> None:
        assert isinstance(runtime, Runtime)
        try:
            await scenario(runtime)
        finally:
            await runtime.close()

    try:
        asyncio.run(main())
    except BaseException as exc:
        if server is not None:
            exc.add_note(f"tritonserver log (end):\n{server.output()}")
        raise


def adopting(server: TritonProcess, models: RtModels, tmp_path: Path) -> TritonRuntime:
    """A runtime for the module's server, given by URL and repository."""
    config = {"url": server.url, "repository": str(server.repository)}
    return TritonRuntime(config, context(models, tmp_path))


async def call(rt: TritonRuntime, models: RtModels, name: str, inputs: dict[str, Any]) -> Any:
    return await rt.invoke(models.target(name, "triton"), inputs, timeout=CALL_TIMEOUT)


async def until_answers(
    rt: TritonRuntime, models: RtModels, name: str, inputs: dict[str, Any]
) -> Any:
    """Call until the runtime stops answering RuntimeDown (a restart under way)."""
    deadline = time.monotonic() + RESTART_DEADLINE
    while True:
        try:
            return await call(rt, models, name, inputs)
        except RuntimeDown:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_wrapped_capabilities_run_inside_triton(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    async def scenario(rt: TritonRuntime) -> None:
        targets = [models.target(name, "triton") for name in WRAPPED]
        await asyncio.gather(*map(rt.deploy, targets))
        await rt.deploy(targets[0])  # idempotent
        assert await call(rt, models, "greet", {"name": "云脑", "excited": True}) == "你好, 云脑!"
        assert await call(rt, models, "double", {"x": [1.0, 2.5, -3.0]}) == {"y": [2.0, 5.0, -6.0]}
        worker = await call(rt, models, "pid", {})
        assert isinstance(worker, int) and worker != os.getpid()
        assert (await rt.health()).ok
        described = rt.describe()
        assert described["type"] == "triton" and described["url"] == server.url
        assert described["repository"] == str(server.repository)
        assert described["deployed"] == sorted(t.slug for t in targets)
        entry = server.repository / targets[0].slug
        config = (entry / "config.pbtxt").read_text()
        assert "kind: KIND_CPU" in config and "count: 1" in config
        assert (entry / "1" / "model.py").exists() and (entry / "1" / "capability").is_dir()

    run(adopting(server, models, tmp_path), scenario, server)


def test_a_capability_error_carries_its_message_and_the_model_keeps_serving(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    async def scenario(rt: TritonRuntime) -> None:
        for _ in range(2):
            with pytest.raises(CapabilityError) as err:
                await call(rt, models, "boom", {"message": "kaboom"})
            assert "secret internal detail: kaboom" in err.value.detail
            assert await call(rt, models, "greet", {"name": "Yunnao"}) == "你好, Yunnao."

    run(adopting(server, models, tmp_path), scenario, server)


def test_a_slow_call_times_out_without_wedging_the_server(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    async def scenario(rt: TritonRuntime) -> None:
        sleepy = models.target("sleepy", "triton")
        await rt.deploy(sleepy)
        started = time.monotonic()
        with pytest.raises(InvocationTimeout):
            await rt.invoke(sleepy, {"seconds": 5}, timeout=1)
        assert time.monotonic() - started < 4
        assert await call(rt, models, "greet", {"name": "again"}) == "你好, again."

    run(adopting(server, models, tmp_path), scenario, server)


def test_passthrough_maps_tensor_fields_to_an_existing_model(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    entry = server.repository / PASSTHROUGH_MODEL.name
    before = _files(entry)

    async def scenario(rt: TritonRuntime) -> None:
        target = models.target("double", "triton", model=PASSTHROUGH_MODEL.name)
        await rt.deploy(target)
        answer = await rt.invoke(target, {"x": [0.5, 1.0, 4.0]}, timeout=CALL_TIMEOUT)
        assert answer == {"y": [1.0, 2.0, 8.0]}
        assert rt.describe()["models"] == {target.slug: PASSTHROUGH_MODEL.name}
        with pytest.raises(NotDeployable, match="non-tensor fields"):
            await rt.deploy(models.target("greet", "triton", model=PASSTHROUGH_MODEL.name))
        with pytest.raises(NotDeployable, match="apply to wrapper entries only"):
            await rt.deploy(models.target("double", "triton", model="double_fp32", instances=2))

    run(adopting(server, models, tmp_path), scenario, server)
    assert _files(entry) == before  # the node never writes a passthrough model


def _files(root: Path) -> dict[str, tuple[float, bytes]]:
    """Modification time and content of the files under ``root`` (but Python's bytecode
    cache, which the Python backend writes when it imports model.py)."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_a_gpu_binding_writes_gpu_instances(models: RtModels, tmp_path: Path) -> None:
    files = Path(download_model(models.uris["greet"], models.models.tracking_uri))
    cases = [
        ({"gpus": 1}, ["kind: KIND_GPU", "gpus: [ 0 ]", "count: 1"]),
        ({"gpus": 2, "instances": 3}, ["kind: KIND_GPU", "gpus: [ 0, 1 ]", "count: 3"]),
        ({"kind": "gpu"}, ["kind: KIND_GPU"]),
        ({"instances": 2}, ["kind: KIND_CPU", "count: 2"]),
    ]
    for binding, expected in cases:
        entry = write_wrapper_entry(tmp_path, models.target("greet", "triton", **binding), files)
        config = (entry / "config.pbtxt").read_text()
        for line in expected:
            assert line in config, (binding, config)
        assert ("gpus:" in config) == ("gpus" in binding), config
    for bad in ({"gpus": 1, "kind": "cpu"}, {"instances": 0}, {"kind": "tpu"}, {"replicas": 2}):
        rt = TritonRuntime(
            {"url": "127.0.0.1:1", "repository": str(tmp_path)}, context(models, tmp_path)
        )
        with pytest.raises(NotDeployable):
            asyncio.run(rt.deploy(models.target("greet", "triton", **bad)))


def test_a_killed_server_is_down_then_serves_again_after_a_restart(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    async def scenario(rt: TritonRuntime) -> None:
        greet = models.target("greet", "triton")
        double = models.target("double", "triton", model=PASSTHROUGH_MODEL.name)
        await asyncio.gather(rt.deploy(greet), rt.deploy(double))
        assert await rt.invoke(greet, {"name": "before"}, timeout=CALL_TIMEOUT) == "你好, before."
        await asyncio.to_thread(server.kill)
        started = time.monotonic()
        with pytest.raises(RuntimeDown) as down:
            await rt.invoke(greet, {"name": "down"}, timeout=CALL_TIMEOUT)
        assert time.monotonic() - started < 5, "a dead server must fail fast, not hang"
        assert down.value.retry_after > 0
        assert not (await rt.health()).ok
        await asyncio.to_thread(server.start, START_TIMEOUT)
        # The restarted server has nothing loaded: the runtime loads what it needs again.
        assert await rt.invoke(greet, {"name": "after"}, timeout=CALL_TIMEOUT) == "你好, after."
        answer = await rt.invoke(double, {"x": [3.0]}, timeout=CALL_TIMEOUT)
        assert answer == {"y": [6.0]}
        assert (await rt.health()).ok

    try:
        run(adopting(server, models, tmp_path), scenario, server)
    finally:
        if not server.running:  # leave the module's server up for the tests after this one
            server.start(timeout=START_TIMEOUT)


def test_undeploy_unloads_the_model_and_removes_its_entry(
    server: TritonProcess, models: RtModels, tmp_path: Path
) -> None:
    async def scenario(rt: TritonRuntime) -> None:
        import tritonclient.http.aio as triton_http

        greet = models.target("greet", "triton")
        await rt.deploy(greet)
        client = triton_http.InferenceServerClient(server.url)
        try:
            assert await client.is_model_ready(greet.slug)
            await rt.undeploy(greet)
            assert not await client.is_model_ready(greet.slug)
        finally:
            await client.close()
        assert not (server.repository / greet.slug).exists()
        assert greet.slug not in rt.describe()["deployed"]
        await rt.undeploy(greet)  # idempotent

    run(adopting(server, models, tmp_path), scenario, server)


def test_a_runtime_without_url_starts_its_own_server_restarts_and_stops_it(
    models: RtModels, tmp_path: Path
) -> None:
    rt = TritonRuntime({"start_timeout": START_TIMEOUT}, context(models, tmp_path))
    pids: list[int] = []

    async def scenario(rt: TritonRuntime) -> None:
        assert (await rt.health()).ok  # nothing started before first use
        assert rt.describe()["pid"] is None
        assert await call(rt, models, "greet", {"name": "own"}) == "你好, own."
        described = rt.describe()
        assert described["started_here"] and described["pid"]
        assert Path(described["repository"]).is_relative_to(tmp_path / "triton")
        assert (await rt.health()).ok
        os.kill(described["pid"], signal.SIGKILL)  # a crash: calls start it again
        assert await until_answers(rt, models, "greet", {"name": "again"}) == "你好, again."
        pids.append(rt.describe()["pid"])
        assert pids[0] != described["pid"]

    run(rt, scenario, rt.server)
    assert not Path(f"/proc/{pids[0]}").exists()  # stopped and reaped
    assert rt.describe()["pid"] is None and rt.describe()["deployed"] == []
