"""A real MLflow tracking server process, keeping its artifacts in S3."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from . import ServerProcess, free_port

MLFLOW = str(Path(sys.executable).parent / "mlflow")


class MlflowServer(ServerProcess):
    """``mlflow server`` on SQLite, proxying artifacts to ``artifacts_destination`` (an
    ``s3://`` URI goes through Yunnao's MinIO-backed repository)."""

    def __init__(self, root: Path, artifacts_destination: str, env: dict[str, str]) -> None:
        self.root = root
        self.destination = artifacts_destination
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "mlflow-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            self.destination,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {timeout}s:\n{self.output()}")
