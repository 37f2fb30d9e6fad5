"""Uploaded Bentos, served inside the bubblewrap sandbox (in the node process:
:class:`UploadedBentos`, which :class:`~.runtime.BentoMLRuntime` hands every version bound
with ``{"bento": "<sha256>", "api": ...}``).

A Bento an author uploaded is untrusted code, so it is never served by a ``bentoml serve``
of the node's: the node starts BentoML's own HTTP worker
(``python -m _bentoml_impl.worker.service <bento dir> --fd N``, what ``bentoml serve``
runs under its arbiter) inside the sandbox of :mod:`yunnao.registry.packages.sandbox`:
the unpacked Bento and its environment read-only, a private ``/tmp`` (its
``BENTOML_HOME``), no network (its own network namespace), its own PID namespace and
uid, and limits sized for BentoML (4 GiB of address space, 128 processes and threads,
1024 open files). It cannot open a port the node could reach, so the node listens for
it: it binds a Unix socket in a folder of its own (mode 0700) and passes the listening
socket's descriptor into the sandbox, where uvicorn accepts on it. Nothing in the
sandbox is writable from outside and no path of the node's is mounted in. The node
calls it with httpx over that socket (``AsyncHTTPTransport(uds=...)``).

One sandboxed process serves all the versions bound to the same Bento. Deploying
checks the node's record of the Bento (``<data_dir>/packages/code/<sha256>/
record.json``, written when it was published): it must have been uploaded to the
version's own namespace, so a binding cannot name another department's Bento. A
process that dies is started again in the background, with back-off (1 s doubling to
30 s); meanwhile calls get 503. A call that overruns its timeout gets 504 and leaves the
process running (BentoML answers its other calls meanwhile). Without bubblewrap an
uploaded Bento is not served at all (NotDeployable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from yunnao.plugins.errors import InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.registry.packages import bento as bentos
from yunnao.registry.packages import sandbox
from yunnao.registry.packages.environments import KEY_RE

from ..base import Target
from .binding import parse_binding
from .process import Service, log_tail

log = logging.getLogger("yunnao.runtimes.bentoml")

WORKER_MODULE = "_bentoml_impl.worker.service"
BASE = "http://bento"  # the host name on calls over the Unix socket (any would do)
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
MAX_LOG_BYTES = 16 * 1024 * 1024  # a log past this is started afresh on the next start
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(eq=False)
class Bento:
    """One uploaded Bento as the node serves it."""

    sha: str
    home: Path  # <data_dir>/packages/code/<sha>
    namespace: str  # the namespace it was uploaded to
    environment: Path | None  # its environment's folder, None: the node's Python
    view: Service  # url and log, for answers and the runtime's description
    proc: subprocess.Popen[bytes] | None = None
    sock_dir: Path | None = None
    client: httpx.AsyncClient | None = None
    routes: dict[str, str] = field(default_factory=dict)  # target id -> route
    starts: int = 0
    restarting: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.restarting is None


def serves(target: Target) -> bool:
    """Whether ``target`` is bound to an uploaded Bento."""
    return bool(target.config.get("bento"))


class UploadedBentos:
    """The uploaded Bentos this node serves, each in its own sandboxed process."""

    def __init__(
        self, data_dir: Path, *, start_timeout: float, stop_timeout: float, retry_after: int
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.retry_after = retry_after
        self.log_dir = self.data_dir / "bentoml" / "logs"
        self._bentos: dict[str, Bento] = {}  # by sha256
        self._targets: dict[str, str] = {}  # target id -> sha256
        self._closed = False

    # ------------------------------------------------------------ the runtime's calls

    async def deploy(self, target: Target) -> None:
        """Start (or reuse) the Bento's sandboxed process and find the API's route."""
        binding = parse_binding(target)
        assert binding.bento is not None
        if self._closed:
            raise RuntimeDown("the bentoml runtime is shut down", retry_after=self.retry_after)
        if sandbox.bwrap() is None:
            raise NotDeployable(
                f"{target.id}: an uploaded Bento runs only in the bubblewrap sandbox, and "
                "bubblewrap (bwrap) is not installed on this node"
            )
        bento = self._bentos.get(binding.bento) or self._known(binding.bento, target)
        if bento.namespace != target.namespace:
            raise NotDeployable(
                f"{target.id}: Bento {binding.bento[:12]} was uploaded to another namespace"
            )
        self._bentos[bento.sha] = bento
        try:
            async with bento.lock:
                if bento.restarting is None and not bento.alive:
                    await self._kill(bento)
                    await self._start(bento, first=bento.starts == 0)
            if not bento.alive:
                raise RuntimeDown(
                    f"{target.id}: its Bento's sandboxed service is restarting",
                    retry_after=self.retry_after,
                )
            assert bento.client is not None
            bento.routes[target.id] = await route_of(
                bento.client, BASE, binding.api, target.id, self.retry_after
            )
            self._targets[target.id] = bento.sha
        finally:
            if not bento.routes:
                await self._drop(bento)

    async def undeploy(self, target: Target) -> None:
        sha = self._targets.pop(target.id, None)
        bento = self._bentos.get(sha or "")
        if bento is None:
            return
        bento.routes.pop(target.id, None)
        if not bento.routes:
            await self._drop(bento)

    async def post(
        self, target: Target, inputs: dict[str, Any], *, timeout: float
    ) -> tuple[httpx.Response, Service]:
        """POST ``inputs`` to the target's API: the response, and the Bento as a
        :class:`Service` (its socket and log) for the runtime to read the answer."""
        sha = self._targets.get(target.id)
        if sha is None or sha not in self._bentos:
            await self.deploy(target)
            sha = self._targets[target.id]
        bento = self._bentos[sha]
        if not bento.alive:
            self._restart_soon(bento)
            raise RuntimeDown(
                f"{target.id}: its Bento's sandboxed service is down; restarting it",
                retry_after=self.retry_after,
            )
        assert bento.client is not None
        try:
            async with asyncio.timeout(timeout):
                resp = await bento.client.post(
                    bento.routes[target.id],
                    content=json.dumps(inputs).encode(),
                    headers=_JSON_HEADERS,
                    timeout=timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise InvocationTimeout(f"{target.id} did not answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            if not bento.alive:
                self._restart_soon(bento)
            raise RuntimeDown(
                f"{target.id}: its Bento's sandboxed service is unreachable "
                f"({type(exc).__name__}: {exc})",
                retry_after=self.retry_after,
            ) from None
        return resp, bento.view

    async def health(self) -> list[str]:
        """What is wrong with the Bentos in use (empty when all answer ``/readyz``)."""
        problems = []
        for bento in list(self._bentos.values()):
            name = f"uploaded Bento {bento.sha[:12]}"
            if not bento.alive:
                self._restart_soon(bento)
                problems.append(f"{name}: down, restarting")
                continue
            assert bento.client is not None
            try:
                resp = await bento.client.get("/readyz", timeout=5)
            except httpx.HTTPError as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if resp.status_code != 200:
                problems.append(f"{name}: /readyz answered {resp.status_code}")
        return problems

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "bento": b.sha,
                "namespace": b.namespace,
                "sandboxed": True,
                "pid": b.proc.pid if b.proc is not None and b.alive else None,
                "state": "restarting" if b.restarting else "running" if b.alive else "exited",
                "starts": b.starts,
                "log": str(b.view.log_path),
                "targets": sorted(b.routes),
            }
            for b in self._bentos.values()
        ]

    async def close(self) -> None:
        self._closed = True
        for bento in list(self._bentos.values()):
            await self._drop(bento)
        self._targets.clear()

    # ------------------------------------------------------------ processes

    def _known(self, sha: str, target: Target) -> Bento:
        """The Bento ``sha`` as the node recorded it when it published it."""
        try:
            home = bentos.bento_home(self.data_dir / "packages", sha)
        except ValueError:
            why = "bentoml `bento` must be an uploaded Bento's sha256"
            raise NotDeployable(f"{target.id}: {why}") from None
        record = bentos.read_record(home)
        if record is None or not (home / "bento").is_dir():
            raise NotDeployable(f"{target.id}: no uploaded Bento {sha[:12]} on this node")
        env = record.get("environment")
        environment = None
        if env:
            if not (isinstance(env, str) and KEY_RE.match(env)):
                raise NotDeployable(f"{target.id}: Bento {sha[:12]} has a bad environment")
            environment = self.data_dir / "packages" / "envs" / env
            if not (environment / "bin" / "python").exists():
                raise NotDeployable(f"{target.id}: the environment of Bento {sha[:12]} is gone")
        log_path = self.log_dir / f"bento-{sha[:16]}.log"
        view = Service(key=f"bento:{sha}", url=None, log_path=log_path)
        return Bento(sha, home, str(record.get("namespace", "")), environment, view)

    async def _start(self, bento: Bento, *, first: bool) -> None:
        """Start the Bento's sandboxed worker and wait until it answers ``/readyz``. A
        first start that exits is NotDeployable (with the log's end); else RuntimeDown."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = bento.view.log_path
        assert log_path is not None
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > MAX_LOG_BYTES:
                log_path.unlink()
        bento.sock_dir = Path(tempfile.mkdtemp(prefix="yunnao-bento-"))
        path = bento.sock_dir / "http.sock"
        read_only = [bento.home / "bento"]
        python = sys.executable
        if bento.environment is not None:
            read_only.append(bento.environment)
            python = str(bento.environment / "bin" / "python")
        box = sandbox.Sandbox(
            key=f"{self.data_dir}|bento:{bento.sha}",
            read_only=tuple(read_only),
            network=False,
            limits=bentos.BENTO_LIMITS,
            env=bentos.BENTO_ENV,
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(256)
            fd = listener.fileno()
            argv = [python, "-I", "-m", WORKER_MODULE, str(bento.home / "bento")]
            argv += ["--fd", str(fd), "--worker-id", "1"]
            with open(log_path, "ab") as logfile:
                logfile.write(f"\n==== yunnao: sandboxed {' '.join(argv)}\n".encode())
                logfile.flush()
                bento.proc = subprocess.Popen(
                    sandbox.command(box, argv),
                    pass_fds=(fd,),
                    env={"PATH": "/usr/bin:/bin"},
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        # The sandbox holds the listening socket now; the node only connects to it.
        bento.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url=BASE
        )
        bento.view.url = f"unix:{path}"
        bento.starts += 1
        log.info(
            "started uploaded Bento %s in the sandbox (pid %d)", bento.sha[:12], bento.proc.pid
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = bento.proc.poll()
            if code is not None:
                await self._kill(bento)
                detail = (
                    f"uploaded Bento {bento.sha[:12]} exited with {code} in the sandbox:\n"
                    f"{log_tail(log_path)}"
                )
                if first:
                    raise NotDeployable(detail)
                raise RuntimeDown(detail, retry_after=self.retry_after)
            with contextlib.suppress(httpx.HTTPError):
                resp = await bento.client.get("/readyz", timeout=2)
                if resp.status_code == 200:
                    return
            await asyncio.sleep(0.2)
        await self._kill(bento)
        raise RuntimeDown(
            f"uploaded Bento {bento.sha[:12]} not ready after {self.start_timeout:g} s; "
            f"see {log_path}",
            retry_after=self.retry_after,
        )

    def _restart_soon(self, bento: Bento) -> None:
        if bento.restarting is None and not self._closed:
            log.warning("uploaded Bento %s died; restarting it", bento.sha[:12])
            bento.restarting = asyncio.get_running_loop().create_task(self._restart(bento))

    async def _restart(self, bento: Bento) -> None:
        delay = BACKOFF_FIRST
        try:
            while not self._closed and bento.routes:
                async with bento.lock:
                    await self._kill(bento)
                    try:
                        await self._start(bento, first=False)
                        return
                    except Exception as exc:  # keep trying, whatever went wrong
                        log.warning("restarting Bento %s failed: %s", bento.sha[:12], exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            bento.restarting = None

    async def _drop(self, bento: Bento) -> None:
        if self._bentos.get(bento.sha) is bento:
            del self._bentos[bento.sha]
        for target_id in list(bento.routes):
            self._targets.pop(target_id, None)
        bento.routes.clear()
        task, bento.restarting = bento.restarting, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._kill(bento)

    async def _kill(self, bento: Bento) -> None:
        """Kill the sandbox (bwrap's process group: with bwrap gone, its PID namespace
        and everything in it go too), close the client and remove the socket."""
        proc, bento.proc = bento.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        client, bento.client = bento.client, None
        if client is not None:
            await client.aclose()
        if bento.sock_dir is not None:
            shutil.rmtree(bento.sock_dir, ignore_errors=True)
            bento.sock_dir = None


async def route_of(
    client: httpx.AsyncClient, url: str, api: str, target_id: str, retry_after: int
) -> str:
    """The route of API ``api`` of the BentoML service at ``url`` (its ``/schema.json``);
    NotDeployable for a missing, task or streaming API."""
    try:
        resp = await client.get(f"{url}/schema.json", timeout=10)
    except httpx.HTTPError as exc:
        raise RuntimeDown(
            f"{target_id}: BentoML service at {url}: {type(exc).__name__}: {exc}",
            retry_after=retry_after,
        ) from None
    if resp.status_code != 200:
        raise NotDeployable(
            f"{target_id}: {url}/schema.json answered {resp.status_code}: "
            "not a BentoML 1.2+ service?"
        )
    routes = {r.get("name"): r for r in resp.json().get("routes", [])}
    route = routes.get(api)
    if route is None:
        raise NotDeployable(
            f"{target_id}: the BentoML service at {url} has no API {api!r} "
            f"(it has {', '.join(sorted(map(str, routes))) or 'none'}); "
            "set the binding's `api`"
        )
    if route.get("is_task"):
        raise NotDeployable(f"{target_id}: BentoML API {api!r} is a task: not supported")
    if route.get("output", {}).get("is_stream"):
        raise NotDeployable(f"{target_id}: BentoML API {api!r} streams: not supported")
    return str(route.get("route") or f"/{api}")
