"""The city demo's nodes (``yunnao demo``): three ``yunnao serve`` processes on embedded
defaults, each in its own directory with its log: their plan (ids, titles, ports), the
check that the ports are free, start and wait until ready, watch, stop (SIGTERM, then a
kill after a grace) and removal of their state. :mod:`yunnao.cli.demo` links them and
prints the walkthrough."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click
import httpx
from rich.console import Console
from rich.progress import Progress, TaskID

CITY = ("sd.qd", "青岛市")
DISTRICTS = (("sd.qd.shinan", "市南区"), ("sd.qd.laoshan", "崂山区"))
# English titles of the nodes, and the departments' titles by the last part of their
# namespace (the example plugins' entry-point names), prefixed with the district's title.
TITLES_EN = {
    "sd.qd": "Qingdao",
    "sd.qd.shinan": "Shinan District",
    "sd.qd.laoshan": "Laoshan District",
}
DEPARTMENTS = {
    "traffic": ("交通运输局", "Transport Bureau"),
    "env": ("生态环境局", "Ecology and Environment Bureau"),
    "urban": ("城市管理局", "Urban Management Bureau"),
}
STOP_GRACE = 20.0  # seconds a node may take to shut down before it is killed
LOG_TAIL = 40  # lines of a failed node's log that are shown


class DemoFailed(Exception):
    """A step failed; ``node`` is the node whose log tells why."""

    def __init__(self, node: DemoNode, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


@dataclass(eq=False)
class DemoNode:
    """One ``yunnao serve`` process of the demo and its directory."""

    node_id: str
    title: str
    role: str  # city | district
    host: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)
    _terminated: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """Where clients (and the other nodes) reach it."""
        return f"http://{connect_host(self.host)}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "yunnao",
            "serve",
            "--node-id",
            self.node_id,
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        env = {**os.environ, "YUNNAO_NODE_TITLE": self.title}
        if self.role == "district":
            args.append("--publish-plugins")
        else:
            env["YUNNAO_PLUGINS"] = "false"  # the city only holds what its districts send
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        # Its own session: Ctrl-C in the terminal reaches only the demo, which stops
        # the nodes in order (and a kill takes the node's own child processes too).
        self.proc = subprocess.Popen(
            args,
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask the node to shut down (SIGTERM: uvicorn finishes its requests first)."""
        if self.proc is not None and self.proc.poll() is None:
            self._terminated = True
            self.proc.terminate()

    def stop(self, deadline: float) -> str:
        """Wait until ``deadline`` for the node to exit after :meth:`terminate`, then
        kill it; says how it ended."""
        proc = self.proc
        if proc is None:
            return "not started"
        if not self._terminated:
            how = f"had exited with status {proc.wait()}"
        else:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                how = "stopped"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                how = f"killed (not stopped within {STOP_GRACE:.0f} s)"
        if self._log is not None:
            self._log.close()
        return how


def connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def plan_nodes(root: Path, host: str, port: int) -> list[DemoNode]:
    city_id, city_title = CITY
    nodes = [DemoNode(city_id, city_title, "city", host, port, root / city_id)]
    for offset, (node_id, title) in enumerate(DISTRICTS, start=1):
        nodes.append(DemoNode(node_id, title, "district", host, port + offset, root / node_id))
    return nodes


def check_ports(nodes: list[DemoNode]) -> None:
    for node in nodes:
        family = socket.AF_INET6 if ":" in node.host else socket.AF_INET
        with socket.socket(family) as sock:
            # As uvicorn binds: a port in TIME_WAIT from the last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((node.host, node.port))
            except OSError as exc:
                raise click.UsageError(
                    f"cannot listen on {node.host}:{node.port} for {node.node_id} "
                    f"({exc.strerror}): is a demo still running? Stop it, or pass --port "
                    "(the demo takes that port and the next two)"
                ) from None


def start_nodes(nodes: list[DemoNode], progress: Progress, timeout: float) -> None:
    """Start every node and wait until each answers ``/readyz`` (a district publishes
    its plugins before it is ready)."""
    tasks: dict[DemoNode, TaskID] = {}
    for node in nodes:
        what = "publishing examples" if node.role == "district" else "the city, no plugins"
        tasks[node] = progress.add_task(f"starting {node.node_id}, {what}", total=1, note=node.url)
        node.start()
    pending = list(nodes)
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while pending:
            for node in list(pending):
                code = node.exited()
                if code is not None:
                    raise DemoFailed(node, f"yunnao serve exited with status {code} on start")
                try:
                    ready = client.get(f"{node.url}/readyz").status_code == 200
                except httpx.HTTPError:
                    ready = False
                if ready:
                    pending.remove(node)
                    progress.update(tasks[node], completed=1)
            if pending and time.monotonic() > deadline:
                raise DemoFailed(pending[0], f"not ready after {timeout:.0f} s")
            time.sleep(0.2)


def watch_nodes(nodes: list[DemoNode]) -> None:
    """Return never: raise if a node exits on its own."""
    while True:
        for node in nodes:
            code = node.exited()
            if code is not None:
                raise DemoFailed(node, f"yunnao serve exited with status {code}")
        time.sleep(0.5)


def stop_nodes(console: Console, nodes: list[DemoNode]) -> None:
    running = [n for n in nodes if n.proc is not None]
    if not running:
        return
    console.print(f"stopping {', '.join(n.node_id for n in running)} …")
    for node in running:
        node.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for node in running:
        console.print(f"  {node.node_id}: {node.stop(deadline)}")


def remove_state(nodes: list[DemoNode]) -> None:
    # Only the nodes' own directories: --dir may hold anything else.
    for node in nodes:
        if node.data_dir.exists():
            shutil.rmtree(node.data_dir)
