"""The sandbox runtime's attack scenario, shared by its test
(``tests/runtimes/test_runtime_sandbox.py``) and its benchmark
(``bench/sandbox_attacks.py``): a node data directory with the test capabilities of
``tests/data/sandboxplugin`` published to a real embedded MLflow, the attacks a
department's capability makes from inside its worker, and a watch that keeps calling
another department's capability throughout, timing each call."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import RuntimeDown
from yunnao.registry.models import ModelStore
from yunnao.runtimes.adapters.base import RuntimeContext, Target
from yunnao.runtimes.adapters.sandbox import SandboxRuntime

PLUGIN_DIR = Path(__file__).parent / "data" / "sandboxplugin"
EVIL, GOOD = "sd.qd.evil", "sd.qd.good"
CALL_TIMEOUT = 30.0  # generous: other test processes may share the two cores
RESTART_DEADLINE = 90.0  # for a replaced worker to answer
SPIN_TIMEOUT = 3.0  # the timeout of the call that loops forever


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

    def secrets(self, victim: Target) -> dict[str, Path]:
        """What no worker may read, by the attack's name: the node's files, another
        department's model, and the node's source tree."""
        models = self.data_dir / "sandbox" / "models"
        repo = Path(__file__).resolve().parent.parent
        return {
            "node key": self.data_dir / "node_key.pem",
            "store file": self.data_dir / "registry.db",
            "MLflow's database": self.data_dir / "mlflow" / "mlflow.db",
            "another namespace's model": models / victim.slug / "MLmodel",
            "the node's source tree": repo / "pyproject.toml",
        }


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


# ---------------------------------------------------------------- the watch


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


@dataclass
class Watch:
    """Calls ``target`` (another department's capability) over and over in a task of
    its own, ``pause`` seconds apart, timing each call under the current ``phase``;
    a call that fails or answers wrongly is kept in ``failures``."""

    rt: SandboxRuntime
    target: Target
    pause: float = 0.005
    phase: str = "before"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            phase, started = self.phase, time.perf_counter()
            try:
                answer = await call(self.rt, self.target, text="ok")
                if answer != "ok":
                    self.failures.append(f"{phase}: answered {answer!r}")
            except Exception as exc:  # recorded; the test asserts there were none
                self.failures.append(f"{phase}: {type(exc).__name__}: {exc}")
            self.latencies.setdefault(phase, []).append(time.perf_counter() - started)
            await asyncio.sleep(self.pause)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def calls(self, phase: str, count: int) -> None:
        """Wait until ``count`` calls were timed in ``phase``."""
        while len(self.latencies.get(phase, [])) < count:
            if self._task is not None and self._task.done():
                self._task.result()  # the loop died: say why
            await asyncio.sleep(0.05)

    def summary(self, phase: str) -> dict[str, float]:
        """Calls, p50 and p99 (milliseconds) of ``phase``."""
        values = self.latencies.get(phase, [])
        if not values:
            return {"calls": 0}
        return {
            "calls": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
        }


# ---------------------------------------------------------------- the attacks


@dataclass
class Outcome:
    """One attack: what the attacking capability answered, or the error its call
    raised (the gateway's error for it)."""

    answer: Any = None
    error: BaseException | None = None
    seconds: float = 0.0  # how long the call took

    def __str__(self) -> str:
        if self.error is not None:
            return f"{type(self.error).__name__}: {getattr(self.error, 'detail', self.error)}"
        return repr(self.answer)


async def attempt(rt: SandboxRuntime, target: Target, **inputs: Any) -> Outcome:
    started = time.perf_counter()
    try:
        answer = await call(rt, target, **inputs)
    except Exception as exc:  # the test asserts which
        return Outcome(error=exc, seconds=time.perf_counter() - started)
    return Outcome(answer=answer, seconds=time.perf_counter() - started)


async def run_attacks(
    rt: SandboxRuntime, node: Node, attack: Target, victim: Target, port: int
) -> dict[str, Outcome]:
    """Every attack, in order, by its name: read each of the node's secrets, connect to
    ``port`` on the node's loopback, allocate 8 GiB, fork a thousand processes, loop
    forever (its worker is then killed and replaced; ``"replaced"`` is the new worker's
    first answer). Nothing here asserts: the caller judges each outcome."""
    done: dict[str, Outcome] = {}
    for name, path in node.secrets(victim).items():
        done[f"read {name}"] = await attempt(rt, attack, kind="read", path=str(path))
    done["open a network socket"] = await attempt(rt, attack, kind="connect", port=port)
    done["allocate 8 GiB"] = await attempt(rt, attack, kind="allocate", count=8)
    done["still alive"] = await attempt(rt, attack, kind="whoami")
    done["fork 1000 processes"] = await attempt(rt, attack, kind="fork", count=1000)
    done["the node still forks"] = Outcome(subprocess.run(["true"]).returncode == 0)
    done["loop forever"] = await attempt(rt, attack, timeout=SPIN_TIMEOUT, kind="spin")
    started = time.perf_counter()
    try:
        done["replaced"] = Outcome(await until_answers(rt, attack, kind="whoami"))
    except Exception as exc:
        done["replaced"] = Outcome(error=exc)
    done["replaced"].seconds = time.perf_counter() - started
    return done
