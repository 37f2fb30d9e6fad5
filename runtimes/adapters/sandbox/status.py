"""What an operator needs to know about the sandbox at a glance, for ``/readyz``'s
details and the operator page: whether bubblewrap is there (path, version), whether
it is enforced (and the warning when uploaded code would run unsandboxed), the sandboxed
workers (running, restarting, failures) and the environment cache (count, size)."""

from __future__ import annotations

import functools
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from yunnao.registry.packages import sandbox
from yunnao.registry.packages.environments import Environments

from ..manager import Runtimes
from .settings import SandboxSettings

UNSANDBOXED = "uploaded code runs unsandboxed: bubblewrap (bwrap) is missing and enforce is off"
REFUSED = (
    "uploaded code cannot run: bubblewrap (bwrap) is missing and enforce is on "
    "(install the Debian package `bubblewrap`)"
)
CACHE_TTL = 60.0  # seconds the environment cache's size is reused (walking it costs)


@functools.cache
def bwrap_version(path: str) -> str | None:
    """``bwrap --version``'s answer (``bubblewrap 0.8.0``), or None when it gives none."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def enforced(runtimes: Runtimes) -> bool:
    """The sandbox runtime's ``enforce`` setting (true unless configured otherwise)."""
    config = runtimes.configs.get("sandbox", {})
    try:
        return SandboxSettings.parse("sandbox", config).enforce
    except ValueError:  # an invalid configuration is the runtime's to report
        return bool(config.get("enforce", True))


class EnvironmentUsage:
    """The environment cache's count and size, measured at most every ``ttl`` seconds."""

    def __init__(self, root: Path, ttl: float = CACHE_TTL) -> None:
        self.environments = Environments(root, index_url="")
        self.ttl = ttl
        self._measured: tuple[float, int, int] | None = None

    def measure(self) -> tuple[int, int]:
        now = time.monotonic()
        if self._measured is not None and now - self._measured[0] < self.ttl:
            return self._measured[1], self._measured[2]
        count, size = self.environments.usage()
        self._measured = (now, count, size)
        return count, size


def workers(runtimes: Runtimes) -> dict[str, int]:
    """The sandboxed workers: running, restarting (a slot waiting for its worker) and
    failures in a row, summed over every deployed version."""
    described = runtimes.describe()["started"].get("sandbox") or {}
    slots = [s for slots in (described.get("workers") or {}).values() for s in slots]
    return {
        "versions": len(described.get("deployed") or ()),
        "running": sum(1 for s in slots if s.get("pid") is not None),
        "restarting": sum(1 for s in slots if s.get("pid") is None),
        "failures": sum(int(s.get("failures") or 0) for s in slots),
    }


async def sandbox_status(runtimes: Runtimes, usage: EnvironmentUsage) -> dict[str, Any]:
    """The sandbox's state, as ``/readyz`` shows it under ``details.sandbox``."""
    path = sandbox.bwrap()
    version = await anyio.to_thread.run_sync(bwrap_version, path) if path else None
    enforce = enforced(runtimes)
    count, size = await anyio.to_thread.run_sync(usage.measure)
    status: dict[str, Any] = {
        "bwrap": {"path": path, "version": version} if path else None,
        "enforce": enforce,
        "sandboxed": path is not None,
        "workers": workers(runtimes),
        "environments": {"count": count, "bytes": size},
    }
    if path is None:
        status["warning"] = REFUSED if enforce else UNSANDBOXED
    return status
