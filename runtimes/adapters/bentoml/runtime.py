"""The ``bentoml`` adapter, :class:`BentoMLRuntime` (in the node process): runs
capability versions on BentoML services it adopts by URL or starts itself with
``bentoml serve``, which it restarts when they die (see the package documentation);
versions bound to an uploaded Bento go to :class:`~.sandboxed.UploadedBentos`, which
serves them in the sandbox."""

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
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown

from ..base import RuntimeContext, RuntimeHealth, Target, free_port
from ..http1 import Http1Client
from .binding import Binding, parse_binding
from .process import (
    RUN_MARKER,
    Service,
    default_executable,
    log_tail,
    logged_exception,
    marked_processes,
    signal_group,
)
from .reply import Reply
from .sandboxed import UploadedBentos, route_of, serves
from .settings import BentoMLSettings

log = logging.getLogger("yunnao.runtimes.bentoml")

HOST = "127.0.0.1"
# Restart back-off for a started service that keeps failing to come up.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class _Route:
    service: str  # Service.key
    path: str  # the API's route on that service, e.g. "/greet"


class BentoMLRuntime:
    """Runs capability versions on BentoML services it adopts by URL or starts itself."""

    type = "bentoml"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        settings = BentoMLSettings.parse("bentoml", config)
        self.settings = settings
        self.context = context
        self.start_timeout = settings.start_timeout
        self.stop_timeout = settings.stop_timeout
        self.retry_after = settings.retry_after
        self.executable = settings.bentoml or default_executable()
        root = context.data_dir / "bentoml"
        self.home = Path(settings.home or os.environ.get("BENTOML_HOME") or root / "home")
        self.log_dir = root / "logs"
        self.env = {str(k): str(v) for k, v in (settings.env or {}).items()}
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=32))
        self._session: aiohttp.ClientSession | None = None  # for calls (see _post)
        self._plain: dict[str, Http1Client | None] = {}  # base URL -> its client (_post)
        self._services: dict[str, Service] = {}
        self._routes: dict[str, _Route] = {}  # target id -> where it is served
        self._closed = False
        self._bentos = UploadedBentos(
            context.data_dir,
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
            retry_after=self.retry_after,
        )

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        """Start or reach the target's service and find its API's route there."""
        if self._closed:
            raise RuntimeDown("the bentoml runtime is shut down", retry_after=self.retry_after)
        binding = parse_binding(target)
        if binding.bento is not None:
            return await self._bentos.deploy(target)
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
        await self._bentos.undeploy(target)
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
        if serves(target):
            resp, bento = await self._bentos.post(target, inputs, timeout=timeout)
            return await self._answer(bento, target, resp)
        route = self._routes.get(target.id)
        if route is None:
            await self.deploy(target)
            route = self._routes[target.id]
        svc = self._services[route.service]
        self._check_alive(svc, target)
        assert svc.url is not None
        try:
            async with asyncio.timeout(timeout):
                resp = await self._post(svc.url, route.path, inputs, timeout)
        except aiohttp.ConnectionTimeoutError:
            raise self._down(svc, target, f"no connection within {timeout:g} s") from None
        except TimeoutError:
            raise InvocationTimeout(f"{target.id} did not answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(svc, target, f"{type(exc).__name__}: {exc}") from None
        return await self._answer(svc, target, resp)

    async def _post(self, base: str, path: str, inputs: dict[str, Any], timeout: float) -> Reply:
        """POST on the hot path: to a plain ``http://host:port`` service with the small
        HTTP/1.1 client (:mod:`..http1`, about 0.45 ms a call less than aiohttp), else
        with aiohttp (httpx's client spent about 1.4 ms more per call than aiohttp)."""
        body = json.dumps(inputs).encode()
        if base not in self._plain:  # None: https, or a base URL with a path (aiohttp)
            plain_http = base.startswith("http://") and base.count("/") == 2
            self._plain[base] = Http1Client.for_url(base) if plain_http else None
        plain = self._plain[base]
        if plain is not None:
            answer = await plain.post(path, body, _JSON_HEADERS)
            return Reply(answer.status, answer.headers, answer.body)
        url = base + path
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=64),
                timeout=aiohttp.ClientTimeout(sock_connect=min(timeout, 10)),
            )
        async with self._session.post(url, data=body, headers=_JSON_HEADERS) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def health(self) -> RuntimeHealth:
        """Healthy when every adopted or started service answers ``/readyz``."""
        if not self._services and not self._bentos.describe():
            return RuntimeHealth(True, "no BentoML services in use")
        services = list(self._services.values())
        problems = [p for p in await asyncio.gather(*map(self._probe, services)) if p]
        problems += await self._bentos.health()
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
        services.sort(key=lambda s: str(s["url"]))
        return {"type": self.type, "services": services, "bentos": self._bentos.describe()}

    async def close(self) -> None:
        """Stop the services started here and close the HTTP client."""
        self._closed = True
        await self._bentos.close()
        for svc in list(self._services.values()):
            await self._drop(svc)
        self._routes.clear()
        await self._client.aclose()
        if self._session is not None:
            await self._session.close()
        for plain in self._plain.values():
            if plain is not None:
                await plain.close()

    # ------------------------------------------------------------ services

    def _new_service(self, binding: Binding) -> Service:
        if binding.url is not None:
            return Service(key=binding.key, url=binding.url)
        assert binding.service is not None and binding.working_dir is not None
        digest = hashlib.sha256(binding.key.encode()).hexdigest()[:10]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", binding.service)
        return Service(
            key=binding.key,
            url=None,
            ref=binding.service,
            working_dir=binding.working_dir,
            log_path=self.log_dir / f"{stem}-{digest}.log",
        )

    async def _ready(self, svc: Service, target: Target) -> None:
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

    async def _start(self, svc: Service, *, first: bool) -> None:
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
                detail = f"bentoml serve {svc.ref} exited with {code}:\n{log_tail(svc.log_path)}"
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

    def _restart_soon(self, svc: Service) -> asyncio.Task[None]:
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

    async def _restart(self, svc: Service) -> None:
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

    def _check_alive(self, svc: Service, target: Target) -> None:
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

    def _down(self, svc: Service, target: Target, why: str) -> RuntimeDown:
        if svc.started and svc.died() is not None:
            self._restart_soon(svc)
        return RuntimeDown(
            f"{target.id}: BentoML service at {svc.url} unreachable ({why})",
            retry_after=self.retry_after,
        )

    async def _probe(self, svc: Service) -> str:
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

    async def _drop(self, svc: Service) -> None:
        """Forget ``svc``, stopping it if it was started here."""
        if self._services.get(svc.key) is svc:
            del self._services[svc.key]
        if svc.restarting is not None:
            svc.restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await svc.restarting
        if svc.started:
            await self._stop(svc)

    async def _stop(self, svc: Service) -> None:
        """SIGTERM the service's process group, then SIGKILL what is left of it."""
        proc = svc.proc
        if proc is None:
            return
        if proc.poll() is None:
            # The arbiter stops its workers gracefully; what is left then is killed.
            signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        await self._kill_tree(svc)
        log.info("stopped bentoml serve %s (pid %d)", svc.ref, proc.pid)

    async def _kill_tree(self, svc: Service) -> None:
        """SIGKILL the service's processes, orphaned workers included, and reap it."""
        proc = svc.proc
        if proc is None:
            return
        signal_group(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (workers := marked_processes(svc.run_id)) and time.monotonic() < deadline:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        svc.proc = None

    # ------------------------------------------------------------ calls

    async def _resolve_route(self, svc: Service, api: str, target: Target) -> str:
        """The API's route from the service's ``/schema.json``."""
        assert svc.url is not None
        return await route_of(self._client, svc.url, api, target.id, self.retry_after)

    async def _answer(self, svc: Service, target: Target, resp: httpx.Response | Reply) -> Any:
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
            raised = await logged_exception(svc.log_path, request_id)
            if raised:
                detail += f"; the API raised {raised}"
        raise CapabilityError(detail)


def _error_message(resp: httpx.Response | Reply) -> str:
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
