"""The sandbox runtime with real bubblewrap workers: capabilities published to a real
(embedded) MLflow in a node data directory, deployed in sandboxed workers and called;
then a department's capability that attacks the node from inside its worker (reads the
node key, the store, MLflow's files and another version's model; opens a socket to a
listener of the node's; allocates 8 GiB; forks a thousand processes; loops forever;
exits), while another department's capability, called over and over, keeps answering
throughout (its latency before and during the attacks is reported, not asserted). The
node, the attacks and the watch are ``tests/sandbox_support.py``'s, shared with
``bench/sandbox_attacks.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.sandbox_support import (
    EVIL,
    GOOD,
    Node,
    Watch,
    call,
    run_attacks,
    until_answers,
)
from yunnao.plugins.errors import (
    CapabilityError,
    InvocationTimeout,
    NotDeployable,
    RuntimeDown,
    ValidationFailed,
)
from yunnao.registry.packages import environments, sandbox
from yunnao.runtimes.adapters.base import Runtime
from yunnao.runtimes.adapters.sandbox import SandboxRuntime

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap (bwrap) is not installed"),
]

# Calls of another department's capability timed before the attacks start.
CALLS_BEFORE = 200


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    """The test capabilities, published once for the module (about 3 s each)."""
    return Node(tmp_path_factory.mktemp("node") / "data")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real socket listening on the node's loopback, which no worker may reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def run(runtime: SandboxRuntime, scenario: Callable[[SandboxRuntime], Awaitable[None]]) -> None:
    async def main() -> None:
        assert isinstance(runtime, Runtime)
        try:
            await scenario(runtime)
        finally:
            await runtime.close()

    asyncio.run(main())


def test_a_sandboxed_worker_answers_validates_and_reports_failures(node: Node) -> None:
    echo, boom = node.target(EVIL, "echo"), node.target(EVIL, "boom")
    attack = node.target(EVIL, "attack")

    async def scenario(rt: SandboxRuntime) -> None:
        await asyncio.gather(rt.deploy(echo), rt.deploy(boom), rt.deploy(attack))
        await rt.deploy(echo)  # idempotent
        assert await call(rt, echo, text="云脑", times=2) == "云脑云脑"
        answers = await asyncio.gather(*(call(rt, echo, text=str(i)) for i in range(20)))
        assert answers == [str(i) for i in range(20)]
        with pytest.raises(ValidationFailed) as invalid:
            await call(rt, echo, text="")
        assert invalid.value.status == 422
        assert [e.field for e in invalid.value.errors] == ["input.text"]
        with pytest.raises(CapabilityError) as failed:
            await call(rt, boom, message="kaboom")
        assert "RuntimeError: secret internal detail: kaboom" in failed.value.detail
        assert await call(rt, echo, text="still") == "still"  # one failure, no harm
        ids = await call(rt, attack, kind="whoami")
        assert (
            ids["uid"] == sandbox.Sandbox(rt.sandbox_key(attack)).uid and ids["uid"] != os.getuid()
        )
        assert ids["pid"] != os.getpid()
        health = await rt.health()
        assert health.ok and "bubblewrap" in health.detail and "3/3 worker(s) up" in health.detail
        described = rt.describe()
        assert described["type"] == "sandbox" and described["enforce"] is True
        assert described["deployed"] == sorted(t.slug for t in (echo, boom, attack))
        model_dir = node.data_dir / "sandbox" / "models" / echo.slug
        assert (model_dir / "MLmodel").is_file()
        assert (
            model_dir.stat().st_uid == sandbox.Sandbox(rt.sandbox_key(echo)).uid
        )  # its worker's alone
        await rt.undeploy(echo)
        assert not model_dir.exists() and echo.slug not in rt.describe()["deployed"]
        assert await call(rt, echo, text="again") == "again"  # deployed again on use

    run(node.runtime(), scenario)
    assert not (node.data_dir / "sandbox" / "models" / echo.slug).exists()  # closed


def test_a_capability_cannot_reach_the_node_other_models_or_its_resources(
    node: Node, listener: socket.socket, record_property: Callable[[str, object], None]
) -> None:
    """Each attack fails or gets its worker killed, the node stays ready, and another
    department's capability, called over and over from before the attacks to after the
    last, answers every call: the p50 and p99 of its calls before and during the
    attacks are printed and recorded as the test's properties (never asserted:
    ``bench/sandbox_attacks.py`` reports them in docs/benchmarks.md)."""
    attack, victim = node.target(EVIL, "attack"), node.target(GOOD, "echo")
    models = node.data_dir / "sandbox" / "models"

    async def scenario(rt: SandboxRuntime) -> None:
        await asyncio.gather(rt.deploy(attack), rt.deploy(victim))
        # Its own model files it reads (so the refusals below are not the reader's fault).
        own = await call(rt, attack, kind="read", path=str(models / attack.slug / "MLmodel"))
        assert "read" in own, own
        for secret in node.secrets(victim).values():
            assert secret.exists(), secret
        before = rt.describe()["workers"][attack.slug][0]["pid"]

        watch = Watch(rt, victim)
        watch.start()
        try:
            await watch.calls("before", CALLS_BEFORE)
            watch.phase = "during"
            outcomes = await run_attacks(rt, node, attack, victim, listener.getsockname()[1])
            await watch.calls("during", 1)
        finally:
            await watch.stop()
        assert watch.failures == []  # every call of the other department's answered
        for phase in ("before", "during"):
            figures = watch.summary(phase)
            print(
                f"{GOOD}/echo {phase} the attacks: p50 {figures['p50_ms']:.2f} ms, "
                f"p99 {figures['p99_ms']:.2f} ms over {figures['calls']:.0f} calls"
            )
            for key, value in figures.items():
                record_property(f"victim_{phase}_{key}", round(value, 3))

        for name, outcome in outcomes.items():
            if name.startswith("read "):
                assert outcome.answer == {
                    "error": "FileNotFoundError: No such file or directory"
                }, (name, outcome)
        connect = outcomes["open a network socket"].answer
        assert "error" in connect and "connected" not in connect, connect
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached it
        hog = outcomes["allocate 8 GiB"].error
        assert isinstance(hog, CapabilityError) and "MemoryError" in hog.detail, hog
        assert "uid" in outcomes["still alive"].answer  # its worker lived on
        bomb = outcomes["fork 1000 processes"].answer
        assert bomb["forked"] < 1000 and "BlockingIOError" in bomb["error"], bomb
        assert outcomes["the node still forks"].answer is True
        assert isinstance(outcomes["loop forever"].error, InvocationTimeout)
        assert "uid" in outcomes["replaced"].answer
        worker = rt.describe()["workers"][attack.slug][0]
        assert worker["pid"] not in (None, before) and worker["failures"] == 0  # a new one
        assert (await rt.health()).ok
        assert await call(rt, victim, text="after") == "after"

    run(node.runtime(), scenario)


def test_a_worker_that_dies_is_replaced_with_backoff(node: Node) -> None:
    attack, victim = node.target(EVIL, "attack"), node.target(GOOD, "echo")

    async def scenario(rt: SandboxRuntime) -> None:
        await asyncio.gather(rt.deploy(attack), rt.deploy(victim))
        for crash in (1, 2):
            with pytest.raises(CapabilityError) as died:
                await call(rt, attack, kind="exit")
            assert "died" in died.value.detail and "status 3" in died.value.detail
            assert await call(rt, victim, text="fine") == "fine"
            if crash == 2:  # the second failure in a row waits restart_backoff (2 s)
                with pytest.raises(RuntimeDown) as down:
                    await call(rt, attack, kind="whoami")
                assert down.value.retry_after >= 1
            assert "uid" in await until_answers(rt, attack, kind="whoami")

    run(node.runtime(restart_backoff=2.0), scenario)


def test_bindings_narrow_the_node_limits_and_never_widen_them(node: Node) -> None:
    async def scenario(rt: SandboxRuntime) -> None:
        refused = {
            "network": node.target(EVIL, "echo", network=True),
            "memory_mb": node.target(EVIL, "echo", memory_mb=4096),
            "workers": node.target(EVIL, "echo", workers=3),
            "unknown": node.target(EVIL, "echo", path="/"),
        }
        for key, target in refused.items():
            with pytest.raises(NotDeployable) as err:
                await rt.deploy(target)
            assert key in err.value.detail
        other = node.target(EVIL, "echo")  # with another version's model
        other = dataclasses.replace(other, model_uri=node.uris[GOOD, "echo"])
        with pytest.raises(NotDeployable, match="not a version of this node's own model"):
            await rt.deploy(other)
        assert rt.describe()["deployed"] == []
        narrow = node.target(EVIL, "attack", memory_mb=512, processes=16, workers=2)
        await rt.deploy(narrow)
        assert len(rt.describe()["workers"][narrow.slug]) == 2
        bomb = await call(rt, narrow, kind="fork", count=100)
        assert bomb["forked"] < 16, bomb
        with pytest.raises(CapabilityError) as hog:
            await call(rt, narrow, kind="allocate", count=1)
        assert "MemoryError" in hog.value.detail
        filled = await call(rt, narrow, kind="fill", count=1)  # /tmp is memory too
        assert filled["written"] <= 512 * 1024**2 and "No space left" in filled["error"], filled

    run(node.runtime(memory_mb=1024, workers_per_version=2), scenario)


def test_without_bubblewrap_department_code_is_refused_unless_trusted(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap", lambda: None)
    echo = node.target(EVIL, "echo")

    async def refused(rt: SandboxRuntime) -> None:
        with pytest.raises(NotDeployable) as err:
            await rt.deploy(echo)
        assert "bubblewrap (bwrap) is not installed" in err.value.detail
        assert "enforce" in err.value.detail
        health = await rt.health()
        assert not health.ok and "not installed" in health.detail

    async def trusted(rt: SandboxRuntime) -> None:
        assert await call(rt, echo, text="unsandboxed") == "unsandboxed"
        health = await rt.health()
        assert health.ok and "UNSANDBOXED" in health.detail

    run(node.runtime(), refused)
    run(node.runtime(enforce=False), trusted)


@pytest.mark.skipif(os.getuid() != 0, reason="the test capability imports only as root")
def test_a_model_that_does_not_load_is_not_deployable_and_says_why(node: Node) -> None:
    fragile, echo = node.target(EVIL, "fragile"), node.target(EVIL, "echo")

    async def scenario(rt: SandboxRuntime) -> None:
        with pytest.raises(NotDeployable) as err:
            await rt.deploy(fragile)
        assert "did not load" in err.value.detail
        assert "ImportError: this module only imports as root" in err.value.detail
        assert fragile.slug not in rt.describe()["deployed"]
        assert not (node.data_dir / "sandbox" / "models" / fragile.slug).exists()
        assert await call(rt, echo, text="fine") == "fine"

    run(node.runtime(), scenario)


def build_environment(root: Path) -> Path:
    """An environment as the node builds one for an uploaded package (see
    registry/packages/environments.py), holding a module the node's own lacks."""
    key = environments.env_key(["sbx-testdep==1.0"])
    env = root / key
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    dirs = "; ".join(f"site.addsitedir({p!r})" for p in environments.node_site_packages())
    (site / environments.PTH).write_text(f"import site; {dirs}\n")
    (site / "sbx_testdep.py").write_text('GREETING = "hello from the environment"\n')
    (env / environments.MARKER).write_text(json.dumps({"installed": ["sbx-testdep==1.0"]}))
    return env


def test_a_version_runs_on_its_package_environment(node: Node) -> None:
    env = build_environment(node.data_dir / "packages" / "envs")
    bound = node.target(EVIL, "depends", environment=env.name)

    async def scenario(rt: SandboxRuntime) -> None:
        answer = await call(rt, bound)
        assert answer == {"greeting": "hello from the environment", "prefix": str(env)}
        with pytest.raises(CapabilityError, match="ModuleNotFoundError"):
            await call(rt, node.target(EVIL, "depends"))  # on the node's Python: not there
        missing = node.target(EVIL, "depends", environment="0" * 64)
        with pytest.raises(NotDeployable, match="not built at this node"):
            await rt.deploy(missing)
        with pytest.raises(NotDeployable, match="environment"):
            await rt.deploy(node.target(EVIL, "depends", environment="../../etc"))

    try:
        run(node.runtime(), scenario)
    finally:
        shutil.rmtree(env)
