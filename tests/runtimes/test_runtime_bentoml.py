"""The bentoml runtime against real ``bentoml serve`` processes: a service it adopts by
URL, and one it starts, watches and restarts itself. Also reading a service's APIs as
capability specs."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.realservers.bentoml import BentoMLServer
from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.registry import names
from yunnao.registry.schemas import PublishRequest
from yunnao.runtimes.adapters.base import Runtime, RuntimeContext, Target
from yunnao.runtimes.adapters.bentoml import BentoMLRuntime
from yunnao.runtimes.adapters.bentoml.services import service_capabilities

pytestmark = pytest.mark.slow

SVC_DIR = Path(__file__).parents[1] / "data" / "bento_svc"
EXAMPLE_DIR = Path(__file__).parents[2] / "examples" / "bento"
SERVICE = "service:Greeter"
CALL_TIMEOUT = 30.0  # generous: other test processes may share the two cores
DEADLINE = 90.0  # for a restarted service to answer again


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoMLServer]:
    """The test service under ``bentoml serve``, for the runtime to adopt by URL."""
    srv = BentoMLServer(SERVICE, SVC_DIR, tmp_path_factory.mktemp("bentoml")).start(timeout=60)
    try:
        yield srv
    finally:
        srv.stop()


def target(name: str, **config: Any) -> Target:
    return Target(
        namespace="sd.qd.test", name=name, version="1.0.0", runtime="bentoml", config=config
    )


def run(tmp_path: Path, scenario: Callable[[BentoMLRuntime], Awaitable[None]]) -> None:
    """Run ``scenario`` with a fresh runtime on its own event loop, closing it after."""

    async def main() -> None:
        runtime = BentoMLRuntime({}, RuntimeContext(node_id="sd.qd", data_dir=tmp_path))
        assert isinstance(runtime, Runtime)
        try:
            await scenario(runtime)
        finally:
            await runtime.close()

    asyncio.run(main())


async def call(runtime: BentoMLRuntime, t: Target, inputs: dict[str, Any], **kw: Any) -> Any:
    return await runtime.invoke(t, inputs, timeout=kw.get("timeout", CALL_TIMEOUT))


async def until_answers(runtime: BentoMLRuntime, t: Target, inputs: dict[str, Any]) -> Any:
    """Call until the runtime stops answering RuntimeDown (a restart under way)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await call(runtime, t, inputs)
        except RuntimeDown:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# ------------------------------------------------------------ adopted by URL


def test_an_adopted_service_answers_from_its_own_process(
    server: BentoMLServer, tmp_path: Path
) -> None:
    greet, pid = target("greet", url=server.url), target("pid", url=server.url + "/")

    async def scenario(rt: BentoMLRuntime) -> None:
        await rt.deploy(greet)
        await rt.deploy(greet)  # idempotent
        assert await call(rt, greet, {"name": "Yunnao"}) == "Hello, Yunnao!"
        worker = await call(rt, pid, {})  # deployed on first call
        assert isinstance(worker, int) and worker != os.getpid()
        assert (await rt.health()).ok
        described = rt.describe()
        assert described["type"] == "bentoml"
        [svc] = described["services"]  # one service for both targets (trailing / or not)
        assert svc["url"] == server.url and svc["pid"] is None
        assert svc["targets"] == [greet.id, pid.id]
        await rt.undeploy(greet)
        await rt.undeploy(pid)
        await rt.undeploy(pid)  # idempotent
        assert rt.describe()["services"] == []

    run(tmp_path, scenario)


def test_a_raising_api_is_a_capability_error_and_the_service_goes_on(
    server: BentoMLServer, tmp_path: Path
) -> None:
    boom, greet = target("boom", url=server.url), target("greet", url=server.url)

    async def scenario(rt: BentoMLRuntime) -> None:
        with pytest.raises(CapabilityError) as raised:
            await call(rt, boom, {"message": "kaboom 42"})
        detail = raised.value.detail
        assert "500" in detail and "unexpected error" in detail, detail
        # BentoML answers an exception with a generic 500; its request id finds the
        # exception in the server's log, where the message is.
        request_id = detail.split("request id ")[1].rstrip(")")
        logged = [line for line in server.output().splitlines() if f"span={request_id}" in line]
        assert any("Exception on /boom" in line for line in logged), server.output()
        assert "ValueError: kaboom 42" in server.output()
        assert await call(rt, greet, {"name": "again"}) == "Hello, again!"
        # BentoML's own validation refusal carries its message.
        with pytest.raises(CapabilityError) as refused:
            await call(rt, greet, {"nom": "x"})
        assert "400" in refused.value.detail and "name: Field required" in refused.value.detail

    run(tmp_path, scenario)


def test_a_slow_call_times_out_and_the_service_still_answers(
    server: BentoMLServer, tmp_path: Path
) -> None:
    sleepy, greet = target("sleepy", url=server.url), target("greet", url=server.url)

    async def scenario(rt: BentoMLRuntime) -> None:
        await rt.deploy(sleepy)
        started = time.monotonic()
        with pytest.raises(InvocationTimeout):
            await call(rt, sleepy, {"seconds": 5}, timeout=1)
        assert time.monotonic() - started < 4
        assert await call(rt, greet, {"name": "after"}) == "Hello, after!"

    run(tmp_path, scenario)


def test_bindings_it_cannot_serve_are_refused(server: BentoMLServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_timout"):
        BentoMLRuntime({"start_timout": 5}, RuntimeContext(node_id="sd.qd", data_dir=tmp_path))

    async def scenario(rt: BentoMLRuntime) -> None:
        for config, words in [
            ({}, "exactly one of"),
            ({"url": server.url, "service": SERVICE}, "exactly one of"),
            ({"url": server.url, "model": "x"}, "unknown bentoml binding keys ['model']"),
            ({"url": "ftp://host"}, "not http"),
            ({"url": server.url, "api": "nope"}, "has no API 'nope' (it has boom, greet, pid"),
        ]:
            with pytest.raises(NotDeployable, match=re.escape(words)):
                await rt.deploy(target("greet", **config))
        assert rt.describe()["services"] == []
        # A service that cannot be imported: bentoml serve exits, and its log says why.
        broken = target("greet", service="no_such_module:Svc", working_dir=str(SVC_DIR))
        with pytest.raises(NotDeployable, match="no_such_module"):
            await rt.deploy(broken)
        assert rt.describe()["services"] == []

    run(tmp_path, scenario)


def test_a_killed_server_is_runtime_down_until_it_is_back(
    server: BentoMLServer, tmp_path: Path
) -> None:
    greet = target("greet", url=server.url)

    async def scenario(rt: BentoMLRuntime) -> None:
        assert await call(rt, greet, {"name": "before"}) == "Hello, before!"
        server.kill()
        started = time.monotonic()
        with pytest.raises(RuntimeDown) as down:
            await call(rt, greet, {"name": "during"})
        assert time.monotonic() - started < 5
        assert down.value.retry_after > 0 and server.url in down.value.detail
        health = await rt.health()
        assert not health.ok and server.url in health.detail
        await asyncio.to_thread(server.start, 60)
        assert await call(rt, greet, {"name": "after"}) == "Hello, after!"
        assert (await rt.health()).ok

    run(tmp_path, scenario)


# ------------------------------------------------------------ started by the runtime


def test_the_runtime_starts_watches_and_restarts_a_service(tmp_path: Path) -> None:
    specs = {s["name"]: s for s in service_capabilities(SERVICE, SVC_DIR)}
    greet = target("greet", **specs["greet"]["runtime"]["config"])
    pid = target("pid", **specs["pid"]["runtime"]["config"])
    boom = target("boom", **specs["boom"]["runtime"]["config"])

    async def scenario(rt: BentoMLRuntime) -> None:
        await asyncio.gather(rt.deploy(greet), rt.deploy(pid))
        [svc] = rt.describe()["services"]  # one process for both
        assert svc["targets"] == sorted([greet.id, pid.id]) and svc["starts"] == 1
        assert Path(svc["log"]).is_relative_to(tmp_path / "bentoml")
        arbiter = svc["pid"]
        assert await call(rt, greet, {"name": "node"}) == "Hello, node!"
        first_worker = await call(rt, pid, {})
        assert first_worker != os.getpid()
        # The runtime reads the exception a started service logged for the failed call.
        with pytest.raises(CapabilityError, match="ValueError: kaboom 7"):
            await call(rt, boom, {"message": "kaboom 7"})

        os.kill(arbiter, signal.SIGKILL)  # the bentoml serve process only: its worker lives on
        # Until all its threads have exited, a killed process shows as a zombie yet cannot
        # be reaped, so the runtime sees it gone a moment later than /proc does.
        deadline = time.monotonic() + DEADLINE
        while (await rt.health()).ok and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not (await rt.health()).ok
        with pytest.raises(RuntimeDown, match=r"exited|restarting"):
            await call(rt, greet, {"name": "during"})
        assert await until_answers(rt, greet, {"name": "back"}) == "Hello, back!"
        [svc] = rt.describe()["services"]
        assert svc["state"] == "running" and svc["starts"] == 2 and svc["pid"] != arbiter
        assert await call(rt, pid, {}) != first_worker
        assert gone(first_worker)  # the orphaned worker of the killed server was stopped
        assert (await rt.health()).ok

        await rt.undeploy(pid)  # greet and boom still use the service
        assert await call(rt, greet, {"name": "still"}) == "Hello, still!"
        running, url = rt.describe()["services"][0]["pid"], rt.describe()["services"][0]["url"]
        await rt.undeploy(greet)
        await rt.undeploy(boom)  # the last one: the service stops
        assert gone(running) and rt.describe()["services"] == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/readyz", timeout=2)

    run(tmp_path, scenario)


# ------------------------------------------------------------ service_capabilities


def check_specs(specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every spec has a registry name and a body the registry accepts."""
    for spec in specs:
        assert names.is_name(spec["name"]), spec["name"]
        body = {k: v for k, v in spec.items() if k != "name"}
        PublishRequest(version="1.0.0", **body)  # schemas valid, no unknown fields
        Draft202012Validator.check_schema(spec["input_schema"])
        Draft202012Validator.check_schema(spec["output_schema"])
    return {s["name"]: s for s in specs}


def valid(schema: dict[str, Any], value: Any) -> bool:
    return Draft202012Validator(schema).is_valid(value)


def test_the_test_service_reads_as_four_capabilities() -> None:
    specs = check_specs(service_capabilities(SERVICE, SVC_DIR))
    assert sorted(specs) == ["boom", "greet", "pid", "sleepy"]
    greet = specs["greet"]
    assert greet["title"] == "Greet" and greet["summary"] == "Greet someone by name."
    assert "Returns a friendly sentence." in greet["description"]
    assert greet["runtime"] == {
        "type": "bentoml",
        "config": {"service": SERVICE, "api": "greet", "working_dir": str(SVC_DIR.resolve())},
    }
    samples = {  # name: (valid input, invalid input, valid output, invalid output)
        "greet": ({"name": "x"}, {"name": 3}, "Hello, x!", 3),
        "sleepy": ({"seconds": 0.5}, {"seconds": "long"}, 0.5, "long"),
        "boom": ({"message": "m"}, {}, "m", None),
        "pid": ({}, [], 1234, "1234"),
    }
    for name, (good_in, bad_in, good_out, bad_out) in samples.items():
        spec = specs[name]
        assert valid(spec["input_schema"], good_in) and not valid(spec["input_schema"], bad_in)
        assert valid(spec["output_schema"], good_out)
        assert not valid(spec["output_schema"], bad_out)
    assert specs["pid"]["output_schema"]["type"] == "integer"  # a scalar, not BentoML's root


def test_the_example_service_reads_as_capabilities() -> None:
    specs = check_specs(service_capabilities("service:NoiseService", EXAMPLE_DIR))
    assert sorted(specs) == ["classify-zone", "noise-level"]
    level, zone = specs["noise-level"], specs["classify-zone"]
    assert level["runtime"]["config"]["api"] == "noise_level"
    assert zone["runtime"]["config"]["api"] == "classify_zone"
    assert valid(level["input_schema"], {"readings": [55.0, 61.5]})
    assert not valid(level["input_schema"], {"readings": "loud"})
    assert level["output_schema"]["type"] == "object" and level["summary"]
    assert valid(zone["input_schema"], {"zone": "1", "day_db": 56.0, "night_db": 44.0})
    assert not valid(zone["input_schema"], {"zone": "9", "day_db": 56.0, "night_db": 44.0})


def test_tensors_and_frames_become_standard_schemas_and_non_json_apis_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="yunnao.runtimes.bentoml_services"):
        specs = check_specs(service_capabilities("kinds:Kinds", SVC_DIR))
    assert sorted(specs) == ["moved", "scale", "table"]
    left_out = "\n".join(caplog.messages)
    for api, why in [
        ("batch_job", "task"),
        ("echo_text", "positional-only"),
        ("tokens", "streaming"),
        ("upload", "file"),
    ]:
        assert f"API {api} of kinds:Kinds left out" in left_out and why in left_out
    scale = specs["scale"]
    version = Target(
        namespace="sd.qd.test",
        name="scale",
        version="1.0.0",
        runtime="bentoml",
        input_schema=scale["input_schema"],
        output_schema=scale["output_schema"],
    )
    assert version.tensors("input") == {"points": {"datatype": "FP32", "shape": [-1, 3]}}
    assert scale["input_schema"]["properties"]["points"]["title"] == "Points"
    assert scale["output_schema"]["x-tensor"] == {"datatype": "INT64", "shape": [-1, 3]}
    assert valid(scale["input_schema"], {"points": [[1, 2, 3], [4, 5, 6]]})
    assert not valid(scale["input_schema"], {"points": [[1, 2]]})
    assert valid(scale["output_schema"], [[2, 4, 6]])
    assert not valid(scale["output_schema"], [[2.5, 4, 6]])
    assert valid(specs["table"]["input_schema"], {"rows": [{"x": 1, "y": 2}]})
    assert specs["moved"]["input_schema"]["title"] == "Point"  # not BentoML's wrapper name


def test_the_runtime_calls_every_api_kind_it_reads(tmp_path: Path) -> None:
    specs = {s["name"]: s for s in service_capabilities("kinds:Kinds", SVC_DIR)}
    config = specs["scale"]["runtime"]["config"]

    async def scenario(rt: BentoMLRuntime) -> None:
        for name, inputs, output in [
            ("scale", {"points": [[1, 2, 3]], "factor": 3}, [[3, 6, 9]]),
            ("table", {"rows": [{"x": 1, "y": 2}]}, [{"x": 1.0, "y": 2.0}]),
            ("moved", {"x": 1, "y": 2}, {"x": 2.0, "y": 2.0}),
        ]:
            t = target(name, **specs[name]["runtime"]["config"])
            answer = await call(rt, t, inputs)
            assert answer == output and valid(specs[name]["output_schema"], answer)
        for api, why in [("tokens", "streams"), ("batch_job", "is a task")]:
            with pytest.raises(NotDeployable, match=why):
                await rt.deploy(target(api.replace("_", "-"), **{**config, "api": api}))
        [svc] = rt.describe()["services"]
        assert len(svc["targets"]) == 3
        await rt.close()
        assert gone(svc["pid"])
        with pytest.raises(httpx.ConnectError):
            httpx.get(svc["url"] + "/readyz", timeout=2)

    run(tmp_path, scenario)


def test_an_unknown_service_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no_such_module"):
        service_capabilities("no_such_module:Svc", SVC_DIR)
