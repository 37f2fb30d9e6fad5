"""A real Ray head node (GCS, raylet, workers) started with this venv's ``ray`` CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ServerProcess, free_port

RAY = str(Path(sys.executable).parent / "ray")
READY = "Ray runtime started"


class RayHead(ServerProcess):
    """``ray start --head --block`` on a free GCS port, as a separate process.

    Every port Ray would otherwise take by default (client server 10001, dashboard 8265,
    agents, worker ports 10002-19999) is given explicitly, so heads of concurrent test
    processes do not collide. The head runs in a session of its own, which its GCS,
    raylet and workers (each in a process group of its own) all share: :meth:`kill`
    SIGKILLs that session, as a crash of the machine's Ray would, and :meth:`stop`
    terminates it — never ``ray stop``, which would also stop other processes' clusters.
    :meth:`start` after either brings a new head up at the same address."""

    def __init__(self, root: Path, num_cpus: float = 2) -> None:
        self.root = root
        self.num_cpus = num_cpus
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "ray-head.log"
        self.starts = 0
        # Ray puts unix sockets under its temp dir; a pytest tmp path can exceed their
        # 107-byte limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="yray", dir="/tmp"))
        # Ray turns token authentication on for a head when ~/.ray/auth_token exists
        # (any local ray.init() writes one), while drivers connecting by address only
        # use it when told to: the tests' heads say explicitly that they need none.
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
        }
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        """The GCS address drivers connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> RayHead:
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log = self.root / f"ray-head-{self.starts}.log"
        ports = {
            "--ray-client-server-port": free_port(),
            "--dashboard-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
        }
        args = [
            RAY,
            "start",
            "--head",
            "--block",
            "--port",
            str(self.port),
            "--num-cpus",
            str(self.num_cpus),
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--temp-dir",
            str(self.temp_dir),
            "--object-store-memory",
            str(256 * 1024 * 1024),
            # 0: workers take any free port rather than the default 10002-19999 range.
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            *(str(x) for pair in ports.items() for x in pair),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.output()}")
            if READY in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"Ray head not ready after {timeout}s:\n{self.output()}")

    def pids(self) -> list[int]:
        """Every live process of the head's session (GCS, raylet, agents, workers)."""
        if self.proc is None:
            return []
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            # fields[0] is the state, fields[3] the session id.
            if fields[3] == str(self.proc.pid) and fields[0] != "Z":
                out.append(int(entry.name))
        return out

    def kill(self) -> None:
        """SIGKILL the whole head at once, as a crash would."""
        self._signal_all(signal.SIGKILL)
        self._reap()

    def stop(self, grace: float = 5) -> None:
        """SIGTERM every process of the head, SIGKILL what is left after ``grace``
        seconds (``ray start --block``, the GCS and Serve's actors drain for half a
        minute or more), and remove Ray's temp dir with its session logs."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
