"""The ``bentoml`` runtime: capability versions served by BentoML 1.4 services.

A version's binding (``runtime.config``) names the service in one of two ways:

- ``url``: adopt a BentoML service someone else runs, e.g. ``"http://127.0.0.1:3000"``.
- ``service``: ``"module:ServiceClass"`` as ``bentoml serve`` accepts it, with an optional
  ``working_dir`` (default: the node's current directory). The node starts
  ``bentoml serve <service> --host 127.0.0.1 --port <free port>`` itself, once for all
  the versions bound to the same service and working directory, and starts it again
  (with back-off) whenever it dies, so service resumes without an operator.

and ``api`` names the service API (default: the capability name with ``-`` replaced by
``_``). Deploying asks the service for its ``/schema.json`` to find the API's route, so
custom routes and path prefixes work; task and streaming APIs are refused (a call must
answer with one JSON value). A call POSTs the input object as the JSON body (BentoML
1.4 APIs take their parameters by name); a JSON answer is returned as parsed, a text
answer (a ``str`` API) as a string.

Node configuration (``Settings.runtimes["bentoml"]``), every key optional:

- ``start_timeout`` (seconds, default 60): how long a started service may take to
  answer ``/readyz``.
- ``stop_timeout`` (seconds, default 10): how long a started service has to shut down
  after SIGTERM before it is killed.
- ``retry_after`` (seconds, default 5): the ``Retry-After`` suggested when a service is
  down or restarting.
- ``bentoml``: the ``bentoml`` executable for started services (default: the one next to
  this Python, else the one on PATH); point it at another virtual environment to run
  a service with dependencies the node does not have.
- ``home``: ``BENTOML_HOME`` for started services (default: the node's environment
  variable if set, else ``<data_dir>/bentoml/home``).
- ``env``: extra environment variables for started services.

Logs of started services are under ``<data_dir>/bentoml/logs``. BentoML answers a call
that raised with a generic 500; for a service the node started, the exception line is
read back from that log (by BentoML's request id) into the :class:`CapabilityError`
detail; for an adopted service the detail carries the request id to look up instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from .base import (
    CapabilityError,
    InvocationTimeout,
    NotDeployable,
    RuntimeContext,
    RuntimeDown,
    RuntimeHealth,
    Target,
    check_settings,
    free_port,
)

log = logging.getLogger("yunnao.runtimes.bentoml")

NODE_KEYS = frozenset({"start_timeout", "stop_timeout", "retry_after", "bentoml", "home", "env"})
BINDING_KEYS = frozenset({"url", "service", "working_dir", "api"})
HOST = "127.0.0.1"
# Marks the processes of one start of a service (see _marked).
RUN_MARKER = "YUNNAO_BENTOML_RUN"
# Restart back-off for a started service that keeps failing to come up.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
# BentoML's log records start with an ISO timestamp; a traceback's lines do not.
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_LOG_TAIL_BYTES = 256 * 1024
# The exception is logged just before the 500 goes out, by another process.
_LOG_WAIT_S = 1.0


@dataclass(frozen=True)
class _Binding:
    key: str  # the service: its URL, or service ref + working dir
    api: str
    url: str | None = None
    service: str | None = None
    working_dir: Path | None = None


_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class _Service:
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


@dataclass(frozen=True)
class _Route:
    service: str  # _Service.key
    path: str  # the API's route on that service, e.g. "/greet"


class BentoMLRuntime:
    """Runs capability versions on BentoML services it adopts by URL or starts itself."""

    type = "bentoml"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        check_settings("bentoml", config, NODE_KEYS)
        self.context = context
        self.start_timeout = float(config.get("start_timeout", 60))
        self.stop_timeout = float(config.get("stop_timeout", 10))
        self.retry_after = int(config.get("retry_after", 5))
        self.executable = str(config.get("bentoml") or _default_executable())
        root = context.data_dir / "bentoml"
        self.home = Path(config.get("home") or os.environ.get("BENTOML_HOME") or root / "home")
        self.log_dir = root / "logs"
        self.env = {str(k): str(v) for k, v in dict(config.get("env") or {}).items()}
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=32))
        self._session: aiohttp.ClientSession | None = None  # for calls (see _post)
        self._services: dict[str, _Service] = {}
        self._routes: dict[str, _Route] = {}  # target id -> where it is served
        self._closed = False

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        """Start or reach the target's service and find its API's route there."""
        if self._closed:
            raise RuntimeDown("the bentoml runtime is shut down", retry_after=self.retry_after)
        binding = _binding(target)
        svc = self._services.get(binding.key)
        known = self._routes.get(target.id)
        if svc is not None and known is not None and known.service == binding.key and svc.alive:
            return
        if svc is None:
            svc = self._new_service(binding)
            self._services[binding.key] = svc
        svc.deploying += 1
        try:
            await self._ready(svc, target)
            path = await self._resolve_route(svc, binding.api, target)
            svc.targets.add(target.id)
            self._routes[target.id] = _Route(svc.key, path)
        finally:
            svc.deploying -= 1
            if not svc.in_use:
                await self._drop(svc)

    async def undeploy(self, target: Target) -> None:
        """Forget the target; stop a started service that no target uses any more."""
        route = self._routes.pop(target.id, None)
        if route is None:
            return
        svc = self._services.get(route.service)
        if svc is None:
            return
        svc.targets.discard(target.id)
        if not svc.in_use:
            await self._drop(svc)

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        """POST ``inputs`` to the target's API and return its JSON (or text) answer."""
        route = self._routes.get(target.id)
        if route is None:
            await self.deploy(target)
            route = self._routes[target.id]
        svc = self._services[route.service]
        self._check_alive(svc, target)
        assert svc.url is not None
        try:
            async with asyncio.timeout(timeout):
                resp = await self._post(svc.url + route.path, inputs, timeout)
        except aiohttp.ConnectionTimeoutError:
            raise self._down(svc, target, f"no connection within {timeout:g} s") from None
        except TimeoutError:
            raise InvocationTimeout(f"{target.id} did not answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise self._down(svc, target, f"{type(exc).__name__}: {exc}") from None
        return await self._answer(svc, target, resp)

    async def _post(self, url: str, inputs: dict[str, Any], timeout: float) -> httpx.Response:
        """POST on the hot path. aiohttp, not httpx: measured here, httpx's client spent
        about 1.4 ms more per call, which is more than the whole gateway adds."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=64),
                timeout=aiohttp.ClientTimeout(sock_connect=min(timeout, 10)),
            )
        async with self._session.post(
            url, data=json.dumps(inputs).encode(), headers=_JSON_HEADERS
        ) as resp:
            body = await resp.read()
            return httpx.Response(resp.status, headers=list(resp.headers.items()), content=body)

    async def health(self) -> RuntimeHealth:
        """Healthy when every adopted or started service answers ``/readyz``."""
        if not self._services:
            return RuntimeHealth(True, "no BentoML services in use")
        services = list(self._services.values())
        problems = [p for p in await asyncio.gather(*map(self._probe, services)) if p]
        if problems:
            return RuntimeHealth(False, "; ".join(problems))
        return RuntimeHealth(True, f"{len(services)} BentoML service(s) ready")

    def describe(self) -> dict[str, Any]:
        """Type and, for each service in use: address, process, state and targets."""
        services = []
        for svc in self._services.values():
            state = "adopted"
            if svc.restarting is not None:
                state = "restarting"
            elif svc.started:
                state = "stopped" if svc.proc is None else "running"
                if svc.died() is not None:
                    state = "exited"
            services.append(
                {
                    "url": svc.url,
                    "service": svc.ref,
                    "working_dir": str(svc.working_dir) if svc.working_dir else None,
                    "pid": svc.proc.pid if svc.proc is not None and state == "running" else None,
                    "starts": svc.starts if svc.started else None,
                    "log": str(svc.log_path) if svc.log_path else None,
                    "state": state,
                    "targets": sorted(svc.targets),
                }
            )
        return {"type": self.type, "services": sorted(services, key=lambda s: str(s["url"]))}

    async def close(self) -> None:
        """Stop the services started here and close the HTTP client."""
        self._closed = True
        for svc in list(self._services.values()):
            await self._drop(svc)
        self._routes.clear()
        await self._client.aclose()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------ services

    def _new_service(self, binding: _Binding) -> _Service:
        if binding.url is not None:
            return _Service(key=binding.key, url=binding.url)
        assert binding.service is not None and binding.working_dir is not None
        digest = hashlib.sha256(binding.key.encode()).hexdigest()[:10]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", binding.service)
        return _Service(
            key=binding.key,
            url=None,
            ref=binding.service,
            working_dir=binding.working_dir,
            log_path=self.log_dir / f"{stem}-{digest}.log",
        )

    async def _ready(self, svc: _Service, target: Target) -> None:
        """A started service is running (started now if need be); an adopted one answers."""
        if not svc.started:
            problem = await self._probe(svc)
            if problem:
                raise RuntimeDown(f"{target.id}: {problem}", retry_after=self.retry_after)
            return
        async with svc.lock:
            if svc.restarting is not None:
                task = svc.restarting
            elif svc.proc is None:
                await self._start(svc, first=svc.starts == 0)
                return
            elif svc.died() is not None:
                task = self._restart_soon(svc)
            else:
                return
        try:
            await asyncio.wait_for(asyncio.shield(task), self.start_timeout)
        except TimeoutError:
            raise RuntimeDown(
                f"{target.id}: BentoML service {svc.ref} is still restarting",
                retry_after=self.retry_after,
            ) from None
        if svc.died() is not None or svc.proc is None:
            raise RuntimeDown(
                f"{target.id}: BentoML service {svc.ref} did not come back up; see {svc.log_path}",
                retry_after=self.retry_after,
            )

    async def _start(self, svc: _Service, *, first: bool) -> None:
        """Run ``bentoml serve`` for ``svc`` and wait until it answers ``/readyz``.

        A first start that exits is a binding problem (bad module, missing
        dependency): NotDeployable with the log's end. Anything else is RuntimeDown."""
        assert svc.ref is not None and svc.working_dir is not None and svc.log_path is not None
        if not svc.working_dir.is_dir():
            raise NotDeployable(f"BentoML working_dir {svc.working_dir} is not a directory")
        if not Path(self.executable).exists() and shutil.which(self.executable) is None:
            raise NotDeployable(f"bentoml executable {self.executable!r} not found")
        svc.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "BENTOML_HOME": str(self.home),
            # A city cloud node is often offline; BentoML's usage tracking would only fail.
            "BENTOML_DO_NOT_TRACK": "True",
            # Unbuffered, so a 500's exception is in the log by the time we read it.
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        port = free_port(HOST)
        svc.run_id = uuid.uuid4().hex
        env[RUN_MARKER] = svc.run_id
        args = [self.executable, "serve", svc.ref, "--host", HOST, "--port", str(port)]
        args += ["--working-dir", str(svc.working_dir)]
        with open(svc.log_path, "ab") as logfile:
            logfile.write(f"\n==== yunnao: {' '.join(args)}\n".encode())
            logfile.flush()
            try:
                # Its own session, so signals meant for the node (a terminal's Ctrl-C)
                # reach it only through close(), which stops it in order.
                svc.proc = subprocess.Popen(
                    args,
                    cwd=svc.working_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise NotDeployable(f"cannot run {self.executable}: {exc}") from exc
        svc.url = f"http://{HOST}:{port}"
        svc.starts += 1
        log.info("started bentoml serve %s (pid %d) on %s", svc.ref, svc.proc.pid, svc.url)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = svc.died()
            if code is not None:
                await self._kill_tree(svc)
                detail = f"bentoml serve {svc.ref} exited with {code}:\n{_tail(svc.log_path)}"
                raise (NotDeployable if first else RuntimeDown)(detail)
            with contextlib.suppress(httpx.HTTPError):
                resp = await self._client.get(svc.url + "/readyz", timeout=2)
                if resp.status_code == 200:
                    return
            await asyncio.sleep(0.2)
        await self._stop(svc)
        raise RuntimeDown(
            f"bentoml serve {svc.ref} not ready after {self.start_timeout:g} s; see {svc.log_path}",
            retry_after=self.retry_after,
        )

    def _restart_soon(self, svc: _Service) -> asyncio.Task[None]:
        """Restart a started service that died, in the background (once at a time)."""
        if svc.restarting is None:
            log.warning(
                "bentoml serve %s (pid %s) exited with %s; restarting",
                svc.ref,
                svc.proc.pid if svc.proc else None,
                svc.died(),
            )
            svc.restarting = asyncio.get_running_loop().create_task(self._restart(svc))
        return svc.restarting

    async def _restart(self, svc: _Service) -> None:
        delay = BACKOFF_FIRST
        try:
            while not self._closed and svc.in_use:
                await self._kill_tree(svc)
                try:
                    await self._start(svc, first=False)
                    log.info("bentoml serve %s is back on %s", svc.ref, svc.url)
                    return
                except Exception as exc:  # the supervisor keeps trying whatever went wrong
                    log.warning("restarting bentoml serve %s failed: %s", svc.ref, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            svc.restarting = None

    def _check_alive(self, svc: _Service, target: Target) -> None:
        """Refuse at once to call a started service that is down, and get it restarted."""
        if not svc.started:
            return
        if svc.restarting is not None:
            raise RuntimeDown(
                f"{target.id}: BentoML service {svc.ref} is restarting",
                retry_after=self.retry_after,
            )
        if svc.proc is None or svc.died() is not None:
            status = f"exited with {svc.died()}" if svc.proc is not None else "not running"
            self._restart_soon(svc)
            raise RuntimeDown(
                f"{target.id}: BentoML service {svc.ref} {status}; restarting it",
                retry_after=self.retry_after,
            )

    def _down(self, svc: _Service, target: Target, why: str) -> RuntimeDown:
        if svc.started and svc.died() is not None:
            self._restart_soon(svc)
        return RuntimeDown(
            f"{target.id}: BentoML service at {svc.url} unreachable ({why})",
            retry_after=self.retry_after,
        )

    async def _probe(self, svc: _Service) -> str:
        """Empty when ``svc`` answers ``/readyz``, else what is wrong."""
        name = svc.ref or svc.url
        if svc.started:
            if svc.restarting is not None:
                return f"{name}: restarting"
            if svc.proc is None or svc.died() is not None:
                status = f"exited with {svc.died()}" if svc.proc is not None else "not running"
                self._restart_soon(svc)
                return f"{name}: {status}, restarting"
        try:
            resp = await self._client.get(f"{svc.url}/readyz", timeout=5)
        except httpx.HTTPError as exc:
            return f"{name} at {svc.url}: {type(exc).__name__}: {exc}"
        if resp.status_code != 200:
            return f"{name} at {svc.url}: /readyz answered {resp.status_code}"
        return ""

    async def _drop(self, svc: _Service) -> None:
        """Forget ``svc``, stopping it if it was started here."""
        if self._services.get(svc.key) is svc:
            del self._services[svc.key]
        if svc.restarting is not None:
            svc.restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await svc.restarting
        if svc.started:
            await self._stop(svc)

    async def _stop(self, svc: _Service) -> None:
        """SIGTERM the service's process group, then SIGKILL what is left of it."""
        proc = svc.proc
        if proc is None:
            return
        if proc.poll() is None:
            # The arbiter stops its workers gracefully; what is left then is killed.
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        await self._kill_tree(svc)
        log.info("stopped bentoml serve %s (pid %d)", svc.ref, proc.pid)

    async def _kill_tree(self, svc: _Service) -> None:
        """SIGKILL the service's processes, orphaned workers included, and reap it."""
        proc = svc.proc
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (workers := _marked(svc.run_id)) and time.monotonic() < deadline:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        svc.proc = None

    # ------------------------------------------------------------ calls

    async def _resolve_route(self, svc: _Service, api: str, target: Target) -> str:
        """The API's route from the service's ``/schema.json``."""
        try:
            resp = await self._client.get(f"{svc.url}/schema.json", timeout=10)
        except httpx.HTTPError as exc:
            raise RuntimeDown(
                f"{target.id}: BentoML service at {svc.url}: {type(exc).__name__}: {exc}",
                retry_after=self.retry_after,
            ) from None
        if resp.status_code != 200:
            raise NotDeployable(
                f"{target.id}: {svc.url}/schema.json answered {resp.status_code}: "
                "not a BentoML 1.2+ service?"
            )
        routes = {r.get("name"): r for r in resp.json().get("routes", [])}
        route = routes.get(api)
        if route is None:
            raise NotDeployable(
                f"{target.id}: the BentoML service at {svc.url} has no API {api!r} "
                f"(it has {', '.join(sorted(map(str, routes))) or 'none'}); "
                "set the binding's `api`"
            )
        if route.get("is_task"):
            raise NotDeployable(f"{target.id}: BentoML API {api!r} is a task: not supported")
        if route.get("output", {}).get("is_stream"):
            raise NotDeployable(f"{target.id}: BentoML API {api!r} streams: not supported")
        return str(route.get("route") or f"/{api}")

    async def _answer(self, svc: _Service, target: Target, resp: httpx.Response) -> Any:
        ctype = resp.headers.get("content-type", "")
        if resp.status_code < 300:
            if ctype.startswith("application/json"):
                return resp.json()
            if ctype.startswith("text/"):
                return resp.text
            raise CapabilityError(
                f"{target.id}: BentoML answered {ctype or 'no content type'}, not JSON or text"
            )
        if resp.status_code == 503:
            raise RuntimeDown(
                f"{target.id}: BentoML service at {svc.url} is not serving: {_error_message(resp)}",
                retry_after=self.retry_after,
            )
        request_id = resp.headers.get("x-bentoml-request-id", "")
        detail = f"{target.id}: BentoML answered {resp.status_code}: {_error_message(resp)}"
        if request_id:
            detail += f" (request id {request_id})"
        if resp.status_code >= 500 and request_id and svc.log_path is not None:
            raised = await _logged_exception(svc.log_path, request_id)
            if raised:
                detail += f"; the API raised {raised}"
        raise CapabilityError(detail)


def _binding(target: Target) -> _Binding:
    """The target's binding config, checked."""
    config = dict(target.config)
    unknown = set(config) - BINDING_KEYS
    if unknown:
        raise NotDeployable(
            f"{target.id}: unknown bentoml binding keys {sorted(unknown)}; "
            f"known: {sorted(BINDING_KEYS)}"
        )
    api = str(config.get("api") or target.name.replace("-", "_"))
    url, service = config.get("url"), config.get("service")
    if bool(url) == bool(service):
        raise NotDeployable(
            f"{target.id}: a bentoml binding needs exactly one of `url` (a running service) "
            "or `service` (module:Class to start)"
        )
    if url:
        url = str(url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise NotDeployable(f"{target.id}: bentoml url {url!r} is not http(s)")
        return _Binding(key=url, api=api, url=url)
    working_dir = Path(str(config.get("working_dir") or ".")).expanduser().resolve()
    return _Binding(
        key=f"{service}@{working_dir}", api=api, service=str(service), working_dir=working_dir
    )


def _error_message(resp: httpx.Response) -> str:
    """BentoML's error text: ``{"error", "detail"}``, a list of those, or plain text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:1000]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # BentoML 1.4 wraps 4xx errors of its own exceptions in a list
    if not isinstance(body, dict):
        return str(body)[:1000]
    message = str(body.get("error", ""))
    errors = body.get("detail")
    if isinstance(errors, list):
        fields = [
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}"
            for e in errors
            if isinstance(e, dict)
        ]
        message += " (" + "; ".join(fields) + ")"
    return message[:1000]


async def _logged_exception(log_path: Path, request_id: str) -> str:
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


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _marked(run_id: str) -> list[int]:
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _default_executable() -> str:
    beside = Path(sys.executable).parent / "bentoml"
    if beside.exists():
        return str(beside)
    return shutil.which("bentoml") or "bentoml"
