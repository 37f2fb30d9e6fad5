"""The sandbox runtime with real bubblewrap workers: capabilities published to a real
(embedded) MLflow in a node data directory, deployed in sandboxed workers and called;
then a department's capability that attacks the node from inside its worker (reads the
node key, the store, MLflow's files and another version's model; opens a socket to a
listener of the node's; allocates 8 GiB; forks a thousand processes; loops forever;
exits), while another department's capability keeps answering throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import (
    CapabilityError,
    InvocationTimeout,
    NotDeployable,
    RuntimeDown,
    ValidationFailed,
)
from yunnao.registry.models import ModelStore
from yunnao.registry.packages import environments, sandbox
from yunnao.runtimes.adapters.base import Runtime, RuntimeContext, Target
from yunnao.runtimes.adapters.sandbox import SandboxRuntime

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap (bwrap) is not installed"),
]

PLUGIN_DIR = Path(__file__).parents[1] / "data" / "sandboxplugin"
EVIL, GOOD = "sd.qd.evil", "sd.qd.good"
CALL_TIMEOUT = 30.0  # generous: other test processes may share the two cores
RESTART_DEADLINE = 90.0  # for a replaced worker to answer


def capabilities() -> dict[str, Capability]:
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    import yunnao_sbx

    caps = {c.name: c for c in yunnao_sbx.yunnao_capabilities()}
    if os.getuid() == 0:  # it imports only as root (and never in a sandbox)
        from yunnao_sbx.fragile import fragile

        caps["fragile"] = fragile
    return caps


class Node:
    """A node's data directory: its key and store (fakes, to be stolen), its embedded
    MLflow with the test capabilities published, and the targets to deploy."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "node_key.pem").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
        (data_dir / "registry.db").write_bytes(b"SQLite format 3\0secret")
        self.models = ModelStore.embedded(data_dir)
        self.uris: dict[tuple[str, str], str] = {}
        caps = capabilities()
        published = [(EVIL, "echo"), (EVIL, "boom"), (EVIL, "attack"), (EVIL, "depends")]
        published.append((GOOD, "echo"))
        if "fragile" in caps:
            published.append((EVIL, "fragile"))
        for namespace, name in published:
            logged = self.models.log(caps[name], namespace=namespace, node="sd.qd")
            self.uris[namespace, name] = logged.model_uri

    def target(self, namespace: str, name: str, **config: Any) -> Target:
        cap = capabilities()[name]
        return Target(
            namespace=namespace,
            name=name,
            version=cap.version,
            runtime="sandbox",
            config=config,
            model_uri=self.uris[namespace, name],
            input_schema=cap.input_schema,
            output_schema=cap.output_schema,
        )

    def runtime(self, **settings: Any) -> SandboxRuntime:
        context = RuntimeContext(
            node_id="sd.qd",
            data_dir=self.data_dir,
            tracking_uri=self.models.tracking_uri,
            registry_uri=self.models.registry_uri,
        )
        return SandboxRuntime(settings, context)


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


async def call(
    rt: SandboxRuntime, target: Target, timeout: float = CALL_TIMEOUT, **inputs: Any
) -> Any:
    return await rt.invoke(target, inputs, timeout=timeout)


async def until_answers(rt: SandboxRuntime, target: Target, **inputs: Any) -> Any:
    """Call until the worker, being replaced, answers (RuntimeDown meanwhile)."""
    deadline = time.monotonic() + RESTART_DEADLINE
    while True:
        try:
            return await call(rt, target, **inputs)
        except RuntimeDown:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


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
    node: Node, listener: socket.socket
) -> None:
    attack, victim = node.target(EVIL, "attack"), node.target(GOOD, "echo")
    models = node.data_dir / "sandbox" / "models"

    async def scenario(rt: SandboxRuntime) -> None:
        async def victim_answers() -> None:
            assert await call(rt, victim, text="ok") == "ok"

        await asyncio.gather(rt.deploy(attack), rt.deploy(victim))
        await victim_answers()

        # Its own model files it reads (so the refusals below are not the reader's fault).
        own = await call(rt, attack, kind="read", path=str(models / attack.slug / "MLmodel"))
        assert "read" in own, own
        secrets = [
            node.data_dir / "node_key.pem",
            node.data_dir / "registry.db",
            node.data_dir / "mlflow" / "mlflow.db",
            models / victim.slug / "MLmodel",
            Path("/work/main/pyproject.toml") if Path("/work/main").is_dir() else Path("/root"),
        ]
        for secret in secrets:
            assert secret.exists()
            answer = await call(rt, attack, kind="read", path=str(secret))
            assert answer == {"error": "FileNotFoundError: No such file or directory"}, secret
            await victim_answers()

        answer = await call(rt, attack, kind="connect", port=listener.getsockname()[1])
        assert "error" in answer and "connected" not in answer, answer
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached it
        await victim_answers()

        with pytest.raises(CapabilityError) as hog:
            await call(rt, attack, kind="allocate", count=8)
        assert "MemoryError" in hog.value.detail
        await victim_answers()
        assert "uid" in await call(rt, attack, kind="whoami")  # its worker lived on

        bomb = await call(rt, attack, kind="fork", count=1000)
        assert bomb["forked"] < 1000 and "BlockingIOError" in bomb["error"], bomb
        await victim_answers()
        assert subprocess.run(["true"], check=False).returncode == 0  # the node still forks

        before = rt.describe()["workers"][attack.slug][0]["pid"]
        spin = asyncio.ensure_future(call(rt, attack, timeout=3.0, kind="spin"))
        answered = 0
        while not spin.done():  # the other department's calls go on meanwhile
            await victim_answers()
            answered += 1
            await asyncio.sleep(0.05)
        assert answered > 0
        with pytest.raises(InvocationTimeout):
            await spin
        await victim_answers()
        assert "uid" in await until_answers(rt, attack, kind="whoami")
        worker = rt.describe()["workers"][attack.slug][0]
        assert worker["pid"] not in (None, before) and worker["failures"] == 0  # a new one
        assert (await rt.health()).ok

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
