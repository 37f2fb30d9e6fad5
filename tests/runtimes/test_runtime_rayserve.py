"""The rayserve runtime against a real Ray head (``ray start --head``): capabilities
published to a real MLflow run in Serve replicas, through handles and through Ray's own
HTTP proxy; failures mapped to the runtime errors; binding options reaching Serve; the
head killed and started again at the same address; a local Ray the runtime starts.

One head and one runtime serve the module's tests, in file order: the kill/restart test
comes after every test that needs the first head."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.realservers import free_port
from tests.realservers.ray import RayHead
from tests.runtime_support import RtModels, publish_rt_models
from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.runtimes.adapters.base import Runtime, RuntimeContext, Target
from yunnao.runtimes.adapters.rayserve import RayServeRuntime

pytestmark = pytest.mark.slow

T = TypeVar("T")
CALL_TIMEOUT = 30.0  # generous: other test processes may share the two cores
START_TIMEOUT = 90.0
DEADLINE = 120.0  # for the runtime to answer again after the head restarted
SMALL = 0.2  # CPUs per replica of the tests' extra deployments: they share two cores


@dataclass
class Cluster:
    """The module's Ray head, published models and runtime, on one event loop."""

    head: RayHead
    models: RtModels
    rt: RayServeRuntime
    runner: asyncio.Runner
    http_port: int

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def target(self, name: str, **config: Any) -> Target:
        return self.models.target(name, "rayserve", **config)


def context(models: RtModels, data_dir: Path) -> RuntimeContext:
    return RuntimeContext(
        node_id="sd.qd",
        data_dir=data_dir,
        tracking_uri=models.models.tracking_uri,
        registry_uri=models.models.registry_uri,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("rayserve")
    head = RayHead(root / "head").start(timeout=START_TIMEOUT)
    runner = asyncio.Runner()
    rt: RayServeRuntime | None = None
    try:
        models = publish_rt_models(root / "mlflow")
        port = free_port()
        config = {"address": head.address, "http_port": port, "connect_timeout": START_TIMEOUT}
        rt = RayServeRuntime(config, context(models, root / "node"))
        assert isinstance(rt, Runtime)
        yield Cluster(head, models, rt, runner, port)
    finally:
        if rt is not None:
            runner.run(rt.close())
        runner.close()
        head.stop()


async def call(rt: RayServeRuntime, t: Target, inputs: dict[str, Any]) -> Any:
    return await rt.invoke(t, inputs, timeout=CALL_TIMEOUT)


async def until_answers(rt: RayServeRuntime, t: Target, inputs: dict[str, Any]) -> Any:
    """Call until the runtime stops answering RuntimeDown (a restart under way)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await call(rt, t, inputs)
        except RuntimeDown:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_capabilities_run_in_serve_replicas(cluster: Cluster) -> None:
    rt = cluster.rt
    greet, double = cluster.target("greet"), cluster.target("double")
    pid = cluster.target("pid", num_cpus=SMALL)

    async def scenario() -> None:
        await asyncio.gather(rt.deploy(greet), rt.deploy(double))
        assert await call(rt, greet, {"name": "云脑", "excited": True}) == "你好, 云脑!"
        assert await call(rt, double, {"x": [1.0, 2.5, -3.0]}) == {"y": [2.0, 5.0, -6.0]}
        worker = await call(rt, pid, {})  # deployed on first call
        assert isinstance(worker, int) and worker != os.getpid()
        await rt.deploy(pid)  # idempotent: the same replica still answers
        assert await call(rt, pid, {}) == worker
        health = await rt.health()
        assert health.ok, health.detail

    cluster.run(scenario())
    described = rt.describe()
    assert described["type"] == "rayserve" and described["connected"]
    assert described["address"] == cluster.head.address
    assert described["proxy_url"] == f"http://127.0.0.1:{cluster.http_port}"
    assert set(described["apps"]) == {greet.slug, double.slug, pid.slug}
    app = described["apps"][greet.slug]
    assert app["target"] == greet.id and app["route"] == f"/{greet.slug}" and app["running"]
    assert app["options"] == {
        "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0},
        "num_replicas": 1,
    }


def test_rays_own_http_proxy_answers_too(cluster: Cluster) -> None:
    greet = cluster.target("greet")
    cluster.run(cluster.rt.deploy(greet))
    url = f"{cluster.rt.describe()['proxy_url']}/{greet.slug}"
    resp = httpx.post(url, json={"name": "Ray"}, timeout=CALL_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json() == "你好, Ray."
    resp = httpx.post(url, json={"name": ""}, timeout=CALL_TIMEOUT)
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["input.name"]


def test_a_raising_capability_is_a_capability_error(cluster: Cluster) -> None:
    rt, greet, boom = cluster.rt, cluster.target("greet"), cluster.target("boom", num_cpus=SMALL)

    async def scenario() -> None:
        with pytest.raises(CapabilityError) as err:
            await call(rt, boom, {"message": "kaput"})
        assert "secret internal detail: kaput" in err.value.detail
        assert await call(rt, greet, {"name": "still here"}) == "你好, still here."
        await rt.undeploy(boom)

    cluster.run(scenario())


def test_a_timeout_cancels_the_call_and_leaves_the_replica_serving(cluster: Cluster) -> None:
    rt, greet = cluster.rt, cluster.target("greet")
    sleepy = cluster.target("sleepy", num_cpus=SMALL)

    async def scenario() -> None:
        await rt.deploy(sleepy)
        started = time.monotonic()
        with pytest.raises(InvocationTimeout):
            await rt.invoke(sleepy, {"seconds": 5}, timeout=1)
        assert time.monotonic() - started < 4
        assert await call(rt, greet, {"name": "next"}) == "你好, next."
        assert await call(rt, sleepy, {"seconds": 0}) == 0
        await rt.undeploy(sleepy)

    cluster.run(scenario())


def test_binding_options_reach_serve(cluster: Cluster) -> None:
    rt = cluster.rt
    pid = cluster.target("pid", num_replicas=2, num_cpus=SMALL, max_ongoing_requests=3)

    async def scenario() -> None:
        await rt.deploy(pid)  # was deployed with one replica: now as bound
        app = (await rt.status())[pid.slug]
        assert app["status"] == "RUNNING"
        [deployment] = app["deployments"].values()
        assert deployment["replicas"] == {"RUNNING": 2}
        assert rt.describe()["apps"][pid.slug]["options"] == {
            "ray_actor_options": {"num_cpus": SMALL, "num_gpus": 0},
            "num_replicas": 2,
            "max_ongoing_requests": 3,
        }
        both = cluster.target("greet", num_replicas=2, autoscaling={"max_replicas": 2})
        with pytest.raises(NotDeployable, match="not both"):
            await rt.deploy(both)
        with pytest.raises(NotDeployable, match="replicas"):
            await rt.deploy(cluster.target("greet", replicas=2))
        with pytest.raises(NotDeployable, match="num_cpus"):
            await rt.deploy(cluster.target("greet", num_cpus=-1))

    cluster.run(scenario())


def test_a_restarted_node_takes_over_running_apps_untouched(cluster: Cluster) -> None:
    pid = cluster.target("pid", num_replicas=2, num_cpus=SMALL, max_ongoing_requests=3)
    config = {"address": cluster.head.address, "http_port": cluster.http_port}

    async def replicas(rt: RayServeRuntime) -> set[int]:
        """The pids answering, called until both replicas have (calls spread at random)."""
        seen: set[int] = set()
        for _ in range(200):
            seen.add(await call(rt, pid, {}))
            if len(seen) == 2:
                break
        return seen

    async def scenario() -> None:
        before = await replicas(cluster.rt)
        assert len(before) == 2
        # Another runtime on the same data dir, as after a restart of the node.
        other = RayServeRuntime(config, cluster.rt.context)
        try:
            await other.deploy(pid)
            assert await replicas(other) == before
        finally:
            await other.close()
        assert await call(cluster.rt, pid, {}) in before  # closing it left the app alone

    cluster.run(scenario())


def test_undeploy_removes_the_app(cluster: Cluster) -> None:
    rt = cluster.rt
    pid = cluster.target("pid", num_replicas=2, num_cpus=SMALL, max_ongoing_requests=3)

    async def scenario() -> None:
        await rt.deploy(pid)
        await rt.undeploy(pid)
        assert pid.slug not in await rt.status()
        assert pid.slug not in rt.describe()["apps"]
        await rt.undeploy(pid)  # idempotent

    cluster.run(scenario())
    resp = httpx.post(f"{rt.describe()['proxy_url']}/{pid.slug}", json={}, timeout=CALL_TIMEOUT)
    assert resp.status_code == 404


def test_a_killed_head_is_down_then_recovered_when_it_is_back(cluster: Cluster) -> None:
    rt, greet = cluster.rt, cluster.target("greet")

    async def scenario() -> None:
        await rt.deploy(greet)
        cluster.head.kill()
        started = time.monotonic()
        with pytest.raises(RuntimeDown) as down:
            await call(rt, greet, {"name": "anyone"})
        assert time.monotonic() - started < 15, "RuntimeDown should come promptly"
        assert down.value.retry_after > 0
        health = await rt.health()
        assert not health.ok and cluster.head.address.split(":")[1] in health.detail
        await asyncio.to_thread(cluster.head.start, START_TIMEOUT)
        assert await until_answers(rt, greet, {"name": "again"}) == "你好, again."
        health = await rt.health()
        assert health.ok, health.detail

    cluster.run(scenario())
    # Recovery redeployed the application, so Ray's proxy serves it again too.
    url = f"{rt.describe()['proxy_url']}/{greet.slug}"
    resp = httpx.post(url, json={"name": "proxy"}, timeout=CALL_TIMEOUT)
    assert resp.status_code == 200 and resp.json() == "你好, proxy.", resp.text


def gcs_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_local_cluster_lives_and_dies_with_the_runtime(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without it, Ray's ray.init() would write ~/.ray/auth_token, which turns token
    # authentication on for every later `ray start` of this user.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    greet = cluster.target("greet", num_cpus=SMALL)
    rt = RayServeRuntime({"num_cpus": 1, "http_port": 0}, context(cluster.models, tmp_path))

    async def scenario() -> str:
        try:
            assert await call(rt, greet, {"name": "local"}) == "你好, local."
            described = rt.describe()
            assert described["address"] == "local" and described["proxy_url"] is None
            return str(described["gcs_address"])
        finally:
            await rt.close()

    gcs = cluster.run(scenario())
    assert not gcs.endswith(f":{cluster.head.port}")
    deadline = time.monotonic() + 30
    while gcs_answers(gcs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not gcs_answers(gcs), "the local Ray should stop with the runtime"
