"""A real ``bentoml serve`` process on a loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from . import ServerProcess, free_port

BENTOML = str(Path(sys.executable).parent / "bentoml")
MARKER = "YUNNAO_TEST_BENTOML_SERVER"


class BentoMLServer(ServerProcess):
    """``bentoml serve <service>`` from ``working_dir``, with BENTOML_HOME under ``root``.

    BentoML's workers run in sessions of their own and outlive a killed ``bentoml serve``,
    still serving its port, so each start marks its processes' environment and
    :meth:`kill` kills every marked process. :meth:`start` after :meth:`kill` or
    :meth:`stop` brings the server back on the same port."""

    def __init__(self, service: str, working_dir: Path, root: Path) -> None:
        self.service = service
        self.working_dir = working_dir
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"bentoml-{self.port}.log"
        self.env = {
            **os.environ,
            "BENTOML_HOME": str(root / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
            "PYTHONUNBUFFERED": "1",
            MARKER: uuid.uuid4().hex,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> BentoMLServer:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [BENTOML, "serve", self.service, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.working_dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"bentoml serve exited:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"bentoml serve not ready after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash would."""
        if self.proc is None:
            return
        deadline = time.monotonic() + 10
        while (pids := self._processes()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.proc.wait()

    def _processes(self) -> list[int]:
        needle = f"{MARKER}={self.env[MARKER]}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """SIGTERM the server, waiting up to 20 s before killing what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # bentoml serve stops its workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.kill()
