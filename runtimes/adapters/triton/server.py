"""The ``tritonserver`` process a node starts for itself (when its settings give no
``url``): :class:`TritonServer` runs in the node process and starts, watches and
stops the server (the binary of the ``nvidia-pytriton`` wheel) and its Python
backend's stub processes."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path

import httpx

from ..base import free_port

HOST = "127.0.0.1"


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")  # not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "tritonserver comes from the nvidia-pytriton wheel: "
            "pip install --no-deps nvidia-pytriton (or give the runtime the `url` of a server)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def stub_site_dirs() -> list[str]:
    """This interpreter's site-packages directories, for Triton's Python stub to import
    what the node imports (numpy, pydantic, yunnao and the capabilities' dependencies)."""
    dirs = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


class TritonServer:
    """A ``tritonserver`` process from the nvidia-pytriton wheel, serving ``repository`` on a
    loopback HTTP port with explicit model control, its Python backend assembled under
    ``root/backends``. :meth:`start` after :meth:`stop` or :meth:`kill` brings it back on
    the same port and repository (with no model loaded)."""

    def __init__(
        self,
        root: Path,
        *,
        repository: Path | None = None,
        http_port: int | None = None,
        stop_timeout: float = 10,
    ) -> None:
        self.root = Path(root).resolve()
        self.repository = Path(repository).resolve() if repository else self.root / "models"
        self.backends = self.root / "backends"
        self.http_port = http_port or free_port(HOST)
        self.stop_timeout = stop_timeout
        self.log = self.root / "tritonserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Names this server's Python-backend shared memory regions, so that those of
        # stubs that died with it (which they leave behind) can be removed.
        self.shm_prefix = f"yunnao_triton_{uuid.uuid4().hex[:12]}_"

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint, as tritonclient takes it."""
        return f"{HOST}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> TritonServer:
        """Start the server and wait until it answers ``/v2/health/ready``."""
        if self.running:
            return self
        self._remove_shared_memory()
        pytriton = _pytriton_dir()
        server_dir = pytriton / "tritonserver"
        self._assemble_python_backend(server_dir)
        self.repository.mkdir(parents=True, exist_ok=True)
        args = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backends}",
            "--model-control-mode=explicit",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            # Its default is one thread per core, and each load request holds one.
            "--http-thread-count=16",
            # One model that fails to load must not make the whole server "not ready".
            "--strict-readiness=false",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout) - 1)}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        libs = str(pytriton.parent / "nvidia_pytriton.libs")
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (libs, os.environ.get("LD_LIBRARY_PATH")) if p
            ),
            # The stub does not apply PYTHONPATH itself; hand-written Python models may
            # (site.addsitedir) to import what the node imports.
            "PYTHONPATH": os.pathsep.join(stub_site_dirs()),
        }
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own, with its stub processes
            )
        # Reap the server as soon as it exits: its stub processes watch for their parent
        # and, while it is an unreaped zombie, live on holding copies of its client
        # connections open, so calls on them would hang instead of failing.
        threading.Thread(target=self.proc.wait, name="tritonserver-reaper", daemon=True).start()
        ready = f"http://{self.url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.proc.returncode}:\n{self.output()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready, timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self._kill_group()
        raise RuntimeError(f"tritonserver not ready after {timeout:g} s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM (models unload, stubs exit) and wait; after ``stop_timeout``, SIGKILL
        the server and whatever stub processes it left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=self.stop_timeout)
        self._kill_group()

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would (its stubs exit by themselves
        once they see it gone)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self._remove_shared_memory()

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        # Unlinking a region that a dying stub still maps is harmless: it goes when unmapped.
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def output(self, size: int = 4000) -> str:
        """The end of the server's log, for error messages."""
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(max(0, self.log.stat().st_size - size))
            return f.read().decode(errors="replace")

    def _assemble_python_backend(self, server_dir: Path) -> None:
        """``backends/python``: the wheel's Python backend plus the stub for this Python
        (the backend looks for its stub next to itself)."""
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = server_dir / "python_backend_stubs" / py / "triton_python_backend_stub"
        if not stub.exists():
            raise RuntimeError(f"nvidia-pytriton has no Triton Python backend stub for Python {py}")
        dst = self.backends / "python"
        dst.mkdir(parents=True, exist_ok=True)
        sources = [p for p in (server_dir / "backends" / "python").iterdir() if p.is_file()]
        for src in [*sources, stub]:
            target = dst / src.name
            if not target.exists() or target.stat().st_size != src.stat().st_size:
                shutil.copy2(src, target)
