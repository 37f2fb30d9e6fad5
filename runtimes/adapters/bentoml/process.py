"""One BentoML service as the node knows it (:class:`Service`: adopted by URL, or
started here), and the node's dealings with the ``bentoml serve`` processes it starts:
finding a start's processes by the marker in their environment, signalling their
process group, and reading a failed call's exception back from the service's log.
Runs in the node process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Marks the processes of one start of a service (see marked_processes).
RUN_MARKER = "YUNNAO_BENTOML_RUN"
# BentoML's log records start with an ISO timestamp; a traceback's lines do not.
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_LOG_TAIL_BYTES = 256 * 1024
# The exception is logged just before the 500 goes out, by another process.
_LOG_WAIT_S = 1.0


@dataclass
class Service:
    """One BentoML service, adopted (``url`` given) or started here (``ref`` given)."""

    key: str
    url: str | None
    ref: str | None = None
    working_dir: Path | None = None
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    run_id: str = ""  # in the environment of the processes of the current start
    targets: set[str] = field(default_factory=set)
    deploying: int = 0  # deploys under way, which keep the service while it has no targets
    starts: int = 0
    restarting: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def started(self) -> bool:
        return self.ref is not None

    def died(self) -> int | None:
        """The exit status of a started service's process that has exited, else None."""
        if self.proc is None:
            return None
        return self.proc.poll()

    @property
    def alive(self) -> bool:
        """Started here and running; an adopted service is taken as alive (calls tell)."""
        return not self.started or (
            self.proc is not None and self.died() is None and self.restarting is None
        )

    @property
    def in_use(self) -> bool:
        return bool(self.targets) or self.deploying > 0


async def logged_exception(log_path: Path, request_id: str) -> str:
    """The last line of the traceback BentoML logged for ``request_id`` (its span id)."""
    deadline = time.monotonic() + _LOG_WAIT_S
    while True:
        found = _exception_in_log(log_path, request_id)
        if found or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.05)


def _exception_in_log(log_path: Path, request_id: str) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    marker = f"span={request_id}"
    for i in range(len(lines) - 1, -1, -1):
        if marker in lines[i] and "Exception on" in lines[i]:
            block = []
            for line in lines[i + 1 :]:
                if _LOG_RECORD.match(line):
                    break
                block.append(line)
            last = [line for line in block if line.strip() and not line.startswith(" ")]
            return last[-1].strip()[:500] if last else ""
    return ""


def log_tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def marked_processes(run_id: str) -> list[int]:
    """Live processes with ``run_id`` in their environment: a started service's arbiter
    and its workers, which BentoML (circus) puts in sessions of their own and which
    outlive a killed arbiter, still serving its port. Linux (/proc) only."""
    if not run_id:
        return []
    needle = f"{RUN_MARKER}={run_id}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def default_executable() -> str:
    beside = Path(sys.executable).parent / "bentoml"
    if beside.exists():
        return str(beside)
    return shutil.which("bentoml") or "bentoml"
