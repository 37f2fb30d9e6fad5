"""Launchers for the real servers the tests and benchmarks run against (never mocks)."""

import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A loopback port free right now (the server binds it moments later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """What every launcher shares: a child process writing to a log file."""

    proc: subprocess.Popen[bytes] | None = None
    log: Path

    def output(self) -> str:
        """The end of the server's log, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
