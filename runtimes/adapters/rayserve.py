"""The ``rayserve`` runtime: capability versions served by Ray Serve 2.x applications.

Each deployed version is one Serve application named after ``Target.slug`` with one
deployment, :class:`CapabilityReplica`, whose replicas load the capability's MLflow
pyfunc model with :func:`yunnao.runtimes.adapters.loading.load_runnable`. Calls go through a
``DeploymentHandle`` (``run(inputs)``); the same application also answers POSTs of the
input JSON on Ray Serve's own HTTP proxy at ``/<slug>``.

**The node is never a Ray driver.** A Ray driver attaches to the raylet of its own
machine, and Ray 2.60 ends a driver's *process* as soon as that raylet dies ("Exiting
because the Raylet IPC connection failed and the local Raylet is dead"), or after
``gcs_rpc_server_reconnect_timeout_s`` (60 s) without the cluster's GCS. Killing the
Ray head would therefore kill a node that called ``ray.init`` itself, so there is no
in-process reconnect to attempt. Instead the adapter runs the driver in a child process
of its own (``python -c "...driver_main()"``, same interpreter and environment, so
Ray's workers import ``yunnao`` from the same venv) and talks to it over a socket pair
with length-prefixed JSON messages. The driver process holds the handles (cached per
slug), makes every Serve API call (blocking ones in threads) and watches the GCS port.
When the cluster goes away the driver process ends (Ray ends it, or its watchdog does
within about a second); calls in flight fail with :class:`RuntimeDown` and the next
call or deploy starts a new driver process — for a cluster given by ``host:port`` once
its GCS port accepts connections again (the head restarted at the same address), for
a local cluster by starting a new one — which redeploys every target this adapter
deployed. A call waits for that recovery only as long as its own timeout allows, then
answers :class:`RuntimeDown` while the recovery goes on in the background. The extra
hop costs a local socket round trip per call (about a millisecond here, next to
the handle call's several).

Models: by default the *node* downloads the model files from MLflow
(``download_model``, with the context's tracking and registry URIs) into
``<data_dir>/rayserve/models`` and replicas load that directory. Replicas then need
no MLflow access or credentials, starting another replica does not hit MLflow, and an
embedded SQLite MLflow is not opened by many processes — but every replica must see
the node's file system, which holds for a cluster on the node's machine. For a cluster
spanning machines set ``model_source: "registry"``: replicas then load the
``models:/`` URI themselves from the tracking server.

Node configuration (``Settings.runtimes["rayserve"]``), every key optional:

- ``address``: an existing Ray cluster (``"127.0.0.1:6379"``, ``"auto"``). Absent: the
  driver process starts a local Ray on first use (``ray.init`` with ``num_cpus``,
  default 2, no dashboard, quiet logging), which stops in :meth:`close`.
- ``namespace``: the driver's Ray namespace (default ``"yunnao"``).
- ``http_host``, ``http_port``: where Ray Serve's own HTTP proxy listens (default
  ``127.0.0.1`` and a free port; ``http_port`` None or 0 runs no proxy). Serve's HTTP
  options are cluster-wide and fixed when Serve first starts on a cluster, so against
  a cluster already running Serve, :meth:`describe` shows the port it really uses.
- ``model_source``: ``"download"`` (default) or ``"registry"``, see above.
- ``connect_timeout`` (default 60 s), ``deploy_timeout`` (default 120 s): how long
  connecting to the cluster and bringing an application to RUNNING may take.
- ``retry_after`` (default 5 s): the ``Retry-After`` suggested when the cluster is down.

Binding configuration (a version's ``runtime.config``), every key optional:
``num_replicas`` (default 1), ``autoscaling`` (Serve's ``autoscaling_config``; not with
``num_replicas``), ``num_cpus`` (per replica, default 0.5), ``num_gpus`` (default 0)
and ``max_ongoing_requests`` (Serve's default when absent).

The driver process inherits the node's environment and logs to
``<data_dir>/rayserve/driver.log``. Ray 2.60's token authentication follows Ray's own
rules: a local ``ray.init()`` turns it on and writes ``~/.ray/auth_token`` (after which
every ``ray start`` of that user requires the token), while a driver connecting by
address uses a token only with ``RAY_AUTH_MODE=token`` in the node's environment;
without it, connecting to such a cluster fails (after Ray retried for a while).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from yunnao.plugins.errors import YunnaoError

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

log = logging.getLogger("yunnao.runtimes.rayserve")

NODE_KEYS = frozenset(
    {
        "address",
        "namespace",
        "num_cpus",
        "http_host",
        "http_port",
        "model_source",
        "connect_timeout",
        "deploy_timeout",
        "retry_after",
    }
)
BINDING_KEYS = frozenset(
    {"num_replicas", "autoscaling", "num_cpus", "num_gpus", "max_ongoing_requests"}
)
MODEL_SOURCES = ("download", "registry")
DRIVER_MAIN = "from yunnao.runtimes.adapters.rayserve import driver_main; driver_main()"
# The driver process gives up on a cluster whose GCS port refused this many probes in a
# row, PROBE_INTERVAL seconds apart (one refusal may be a GCS busy accepting).
PROBE_INTERVAL, PROBE_MISSES = 0.5, 2
HEALTH_WAIT = 10.0
# A replica that is busy or restarting is back sooner than a whole cluster.
REPLICA_RETRY_AFTER = 1
_HEADER = struct.Struct(">I")


# ------------------------------------------------------------ shared helpers


def _frame(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return _HEADER.pack(len(body)) + body


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


async def _reachable(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (the GCS port): a
    probe that answers at once when a cluster is gone, where Ray's own calls retry."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# ------------------------------------------------------------ the replica


class CapabilityReplica:
    """The Serve deployment class of one capability version. Its module is imported by
    reference in Ray workers, so it must stay importable without Ray."""

    def __init__(self, model: str, tracking_uri: str | None, registry_uri: str | None) -> None:
        from yunnao.runtimes.adapters.loading import load_runnable

        self._runnable = load_runnable(model, tracking_uri, registry_uri)

    def run(self, inputs: dict[str, Any]) -> Any:
        """Handle calls: the capability's JSON output for JSON ``inputs``."""
        return self._runnable(inputs)

    async def __call__(self, request: Any) -> Any:
        """Ray Serve's HTTP proxy: a POST of the input JSON, answered with the output
        JSON; invalid input answers the capability's validation error (422)."""
        from starlette.responses import JSONResponse

        try:
            inputs = await request.json()
        except ValueError:
            inputs = None
        if not isinstance(inputs, dict):
            detail = "the body must be a JSON object of the capability's inputs"
            return JSONResponse({"detail": detail}, status_code=400)
        try:
            # Off the replica's event loop, which serves its other requests meanwhile.
            output = await asyncio.to_thread(self._runnable, inputs)
        except YunnaoError as exc:
            errors = [e.as_dict() for e in exc.errors]
            return JSONResponse({"detail": exc.detail, "errors": errors}, status_code=exc.status)
        return JSONResponse(output)


# ------------------------------------------------------------ the node side


@dataclass(frozen=True)
class _App:
    """A target as this adapter deploys it."""

    slug: str
    target_id: str
    model: str  # a local directory or a models:/ URI
    options: dict[str, Any]  # Serve deployment options
    spec: str  # hash of what the replicas run; part of the deployment name

    def wire(self, context: RuntimeContext) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "deployment": f"capability-{self.spec}",
            "model": self.model,
            "tracking_uri": context.tracking_uri,
            "registry_uri": context.registry_uri,
            "options": self.options,
        }


def deployment_options(target: Target) -> dict[str, Any]:
    """Serve deployment options from a version's binding; :class:`NotDeployable` for a
    binding this runtime does not accept."""
    config = target.config
    unknown = sorted(set(config) - BINDING_KEYS)
    if unknown:
        accepted = ", ".join(sorted(BINDING_KEYS))
        raise NotDeployable(f"{target.id}: unknown rayserve binding keys {unknown} ({accepted})")

    def number(key: str, default: float) -> float:
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise NotDeployable(f"{target.id}: {key} must be a number >= 0, not {value!r}")
        return value

    def count(key: str) -> int:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NotDeployable(f"{target.id}: {key} must be an integer >= 1, not {value!r}")
        return value

    actor = {"num_cpus": number("num_cpus", 0.5), "num_gpus": number("num_gpus", 0)}
    options: dict[str, Any] = {"ray_actor_options": actor}
    if "autoscaling" in config:
        if "num_replicas" in config:
            raise NotDeployable(f"{target.id}: give num_replicas or autoscaling, not both")
        if not isinstance(config["autoscaling"], Mapping):
            raise NotDeployable(f"{target.id}: autoscaling must be an object")
        options["autoscaling_config"] = dict(config["autoscaling"])
    else:
        options["num_replicas"] = count("num_replicas") if "num_replicas" in config else 1
    if "max_ongoing_requests" in config:
        options["max_ongoing_requests"] = count("max_ongoing_requests")
    return options


class _Driver:
    """The node's end of one driver process: requests out, answers matched by id."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log_path: Path,
    ) -> None:
        self.proc, self.reader, self.writer, self.log_path = proc, reader, writer, log_path
        self.alive = True
        self.end_detail = ""  # why it ended, for RuntimeDown
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reading = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, log_path: Path, env: Mapping[str, str]) -> _Driver:
        ours, theirs = socket.socketpair()
        try:
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", DRIVER_MAIN, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    # The node handles Ctrl-C and SIGTERM and closes the driver itself.
                    start_new_session=True,
                )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        return cls(proc, reader, writer, log_path)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and await its answer (``result`` or ``error``). Cancelling
        the wait tells the driver process to cancel the request."""
        if not self.alive:
            raise RuntimeDown(self.end_detail or "the Ray driver process ended")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self.writer.write(_frame({"id": rid, "op": op, **fields}))
            return await future
        except asyncio.CancelledError:
            if self.alive:
                self.writer.write(_frame({"id": rid, "op": "cancel"}))
            raise
        finally:
            self._pending.pop(rid, None)

    async def _read(self) -> None:
        try:
            while True:
                message = await _receive(self.reader)
                if "event" in message:  # the driver says why it is about to exit
                    self.end_detail = message.get("detail", "")
                    continue
                future = self._pending.get(message["id"])
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.alive = False
            self.writer.close()
            code = await anyio.to_thread.run_sync(self._reap)
            if not self.end_detail:
                self.end_detail = (
                    f"the Ray driver process exited (status {code}); see {self.log_path}"
                )
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RuntimeDown(self.end_detail))

    def _reap(self) -> int | None:
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its socket closed yet it lingers: end it
            self.proc.kill()
            return self.proc.wait()

    async def stop(self, timeout: float) -> None:
        """Wait for the process to exit after a ``close`` request; kill it if it lingers."""
        if self.proc.poll() is None:
            try:
                await anyio.to_thread.run_sync(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self._reading

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class RayServeRuntime:
    """Runs capability versions as Ray Serve applications through a driver process (see
    the module documentation for the configuration keys and the recovery design)."""

    type = "rayserve"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        check_settings("rayserve", config, NODE_KEYS)
        self.context = context
        self.address: str | None = config.get("address") or None
        self.namespace: str = config.get("namespace", "yunnao")
        self.num_cpus: float = config.get("num_cpus", 2)
        self.http_host: str = config.get("http_host", "127.0.0.1")
        self.http_port: int | None = (
            config["http_port"] or None if "http_port" in config else free_port(self.http_host)
        )
        self.model_source: str = config.get("model_source", "download")
        if self.model_source not in MODEL_SOURCES:
            raise ValueError(f"rayserve model_source must be one of {MODEL_SOURCES}")
        self.connect_timeout = float(config.get("connect_timeout", 60))
        self.deploy_timeout = float(config.get("deploy_timeout", 120))
        self.retry_after = int(config.get("retry_after", 5))
        self.root = context.data_dir / "rayserve"
        # A cluster given as host:port is probed before a driver process is started for
        # it; "auto" and a local cluster are found (or started) by ray.init itself.
        self._probe = self.address if self.address not in (None, "auto") else None
        self._gcs: str | None = self._probe  # where the GCS answers, once known
        self._proxy_url: str | None = None
        self._driver: _Driver | None = None
        self._connecting: asyncio.Task[_Driver] | None = None
        self._refused_until = 0.0  # a failed connect is not retried before this
        self._refused = ""
        self._apps: dict[str, _App] = {}  # what this adapter deployed, kept across reconnects
        self._ready: dict[str, str] = {}  # slug -> spec, deployed through the current driver
        self._deploying: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # -------------------------------------------------------- protocol

    async def deploy(self, target: Target) -> None:
        """Make ``target`` a RUNNING Serve application (idempotent: an application
        already running as bound is left alone, its replicas untouched)."""
        await asyncio.shield(self._deploy_task(target))

    async def undeploy(self, target: Target) -> None:
        """Delete the target's Serve application (``serve.delete``)."""
        app = self._apps.pop(target.slug, None)
        self._ready.pop(target.slug, None)
        if app is None and (self._driver is None or not self._driver.alive):
            return  # never deployed through this adapter, nothing connected to ask
        driver = await self._connected(None)
        self._raise(target, await driver.call("undeploy", slug=target.slug))
        if app is not None and app.model.startswith(str(self.root)):
            await anyio.to_thread.run_sync(shutil.rmtree, app.model, True)

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        """``run(inputs)`` through the application's handle within ``timeout`` seconds
        (waiting for a reconnect or a first deploy counts against it)."""
        deadline = time.monotonic() + timeout
        driver = await self._connected(deadline)
        if target.slug not in self._ready:
            await self._within(self._deploy_task(target), deadline, f"deploying {target.id}")
        request = driver.call("invoke", slug=target.slug, inputs=inputs)
        try:
            answer = await asyncio.wait_for(request, max(deadline - time.monotonic(), 0))
        except TimeoutError:
            if not driver.alive or (self._gcs is not None and not await _reachable(self._gcs)):
                raise RuntimeDown(self._down_detail(driver), retry_after=self.retry_after) from None
            raise InvocationTimeout(f"{target.id} did not answer within {timeout:g} s") from None
        return self._raise(target, answer)

    async def health(self) -> RuntimeHealth:
        """Whether the cluster answers and Serve's controller runs."""
        try:
            driver = await self._connected(time.monotonic() + HEALTH_WAIT)
            answer = await asyncio.wait_for(driver.call("health"), HEALTH_WAIT)
        except RuntimeDown as exc:
            return RuntimeHealth(False, exc.detail)
        except TimeoutError:
            return RuntimeHealth(False, f"Ray Serve did not answer within {HEALTH_WAIT:g} s")
        if "error" in answer:
            return RuntimeHealth(False, answer.get("detail", ""))
        result = answer["result"]
        return RuntimeHealth(result["ok"], result["detail"])

    def describe(self) -> dict[str, Any]:
        """Type, cluster address, Serve's proxy URL and the applications deployed."""
        connected = self._driver is not None and self._driver.alive
        return {
            "type": self.type,
            "address": self.address or "local",
            "gcs_address": self._gcs,
            "namespace": self.namespace,
            "connected": connected,
            "proxy_url": self._proxy_url
            or (f"http://{self.http_host}:{self.http_port}" if self.http_port else None),
            "apps": {
                slug: {
                    "target": app.target_id,
                    "route": f"/{slug}",
                    "options": app.options,
                    "running": self._ready.get(slug) == app.spec,
                }
                for slug, app in sorted(self._apps.items())
            },
            "driver_log": str(self.root / "driver.log"),
        }

    async def close(self) -> None:
        """Disconnect; stop a cluster this adapter started (applications on a cluster
        given by ``address`` stay, and a later node deploys onto them without restart)."""
        self._closed = True
        pending = [t for t in [self._connecting, *self._deploying.values()] if t and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        driver, self._driver = self._driver, None
        if driver is None:
            return
        if driver.alive:
            with contextlib.suppress(RuntimeDown, TimeoutError):
                await asyncio.wait_for(driver.call("close"), 60)
        await driver.stop(timeout=20)

    async def status(self) -> dict[str, Any]:
        """``serve.status()`` of the cluster as JSON: applications with their status,
        message and deployments (status and replica counts by state)."""
        driver = await self._connected(None)
        return dict(self._raise(None, await driver.call("status")))

    # -------------------------------------------------------- connection

    async def _connected(self, deadline: float | None) -> _Driver:
        """The live driver process, starting one (and redeploying) if needed."""
        if self._closed:
            raise RuntimeDown("the rayserve runtime is closed")
        driver = self._driver
        if driver is not None and driver.alive:
            return driver
        if self._connecting is None or self._connecting.done():
            if time.monotonic() < self._refused_until:
                raise RuntimeDown(self._refused, retry_after=self.retry_after)
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(_retrieve)
        return await self._within(self._connecting, deadline, "reconnecting to Ray")

    async def _within(self, task: asyncio.Future[Any], deadline: float | None, what: str) -> Any:
        """Await a shared task, for at most until ``deadline``; it goes on after that."""
        if deadline is None:
            return await asyncio.shield(task)
        try:
            return await asyncio.wait_for(asyncio.shield(task), deadline - time.monotonic())
        except TimeoutError:
            raise RuntimeDown(
                f"{what} takes longer than this call may wait", retry_after=self.retry_after
            ) from None

    async def _connect(self) -> _Driver:
        self._ready.clear()
        if self._probe is not None and not await _reachable(self._probe):
            self._refuse(f"the Ray cluster at {self._probe} is unreachable")
            raise RuntimeDown(self._refused, retry_after=self.retry_after)
        self.root.mkdir(parents=True, exist_ok=True)
        driver = await _Driver.spawn(self.root / "driver.log", self._driver_env())
        try:
            answer = await asyncio.wait_for(
                driver.call(
                    "connect",
                    address=self.address,
                    namespace=self.namespace,
                    num_cpus=self.num_cpus,
                    http_host=self.http_host,
                    http_port=self.http_port,
                ),
                self.connect_timeout,
            )
            info = self._raise(None, answer)
            self._gcs, self._proxy_url = info["gcs_address"], info["proxy_url"]
            log.info("connected to Ray at %s (Serve proxy: %s)", self._gcs, self._proxy_url)
            if self._apps:
                apps = list(self._apps.values())
                results = await self._deploy_on(driver, apps)
                for app in apps:
                    if results.get(app.slug):
                        log.error("redeploying %s failed: %s", app.target_id, results[app.slug])
        except BaseException as exc:
            driver.kill()
            await driver.stop(timeout=10)
            if isinstance(exc, TimeoutError):
                where = self.address or "a local Ray"
                exc = RuntimeDown(f"connecting to {where} timed out", retry_after=self.retry_after)
            if isinstance(exc, RuntimeDown):
                self._refuse(exc.detail)
                raise exc from None
            raise
        self._driver = driver
        return driver

    def _refuse(self, detail: str) -> None:
        """Answer RuntimeDown at once for a moment, rather than retry on every call."""
        self._refused, self._refused_until = detail, time.monotonic() + 1

    def _driver_env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        if self.address is None:
            # A RAY_ADDRESS in the node's environment would make ray.init() join that
            # cluster instead of starting the local one configured here.
            env.pop("RAY_ADDRESS", None)
        return env

    def _down_detail(self, driver: _Driver) -> str:
        if driver.end_detail:
            return driver.end_detail
        return f"the Ray cluster at {self._gcs} is unreachable"

    # -------------------------------------------------------- deploying

    def _deploy_task(self, target: Target) -> asyncio.Task[None]:
        """One deploy per slug at a time, shared by everyone waiting for it."""
        task = self._deploying.get(target.slug)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._deploy(target))
            task.add_done_callback(_retrieve)
            self._deploying[target.slug] = task
        return task

    async def _deploy(self, target: Target) -> None:
        options = deployment_options(target)
        model = await self._model(target)
        # Replicas run the model version, whichever directory holds its files.
        what = [target.model_uri, self.model_source, options, target.content_hash]
        spec = json.dumps(what, sort_keys=True, default=str)
        app = _App(
            target.slug, target.id, model, options, hashlib.sha256(spec.encode()).hexdigest()[:12]
        )
        driver = await self._connected(None)
        if self._ready.get(app.slug) == app.spec:
            self._apps[app.slug] = app
            return
        failure = (await self._deploy_on(driver, [app])).get(app.slug)
        if failure:
            raise NotDeployable(f"{target.id} could not be deployed on Ray Serve: {failure}")
        self._apps[app.slug] = app

    async def _deploy_on(self, driver: _Driver, apps: list[_App]) -> dict[str, str | None]:
        """Deploy ``apps`` through ``driver``; failure details by slug (None: RUNNING)."""
        request = driver.call(
            "deploy", apps=[app.wire(self.context) for app in apps], timeout=self.deploy_timeout
        )
        try:
            # The driver process enforces deploy_timeout itself; this is for a stuck one.
            answer = await asyncio.wait_for(request, self.deploy_timeout + 30)
        except TimeoutError:
            raise RuntimeDown(
                "the Ray driver process did not answer a deploy", retry_after=self.retry_after
            ) from None
        results: dict[str, str | None] = self._raise(None, answer)
        for app in apps:
            if results.get(app.slug) is None:
                self._ready[app.slug] = app.spec
        return results

    async def _model(self, target: Target) -> str:
        """What replicas load: the model's files downloaded by this node, or its URI."""
        uri = target.model_uri
        if not uri:
            raise NotDeployable(f"{target.id} has no model to load on Ray Serve")
        if not uri.startswith("models:/"):
            return uri  # already a directory
        if self.context.tracking_uri is None:
            raise NotDeployable(f"{target.id}: loading {uri} needs this node's MLflow URI")
        if self.model_source == "registry":
            return uri
        key = hashlib.sha256(uri.encode()).hexdigest()[:12]
        local = self.root / "models" / f"{target.slug}-{key}"
        if not local.is_dir():
            from .loading import download_model

            fetched = await anyio.to_thread.run_sync(
                download_model, uri, self.context.tracking_uri, self.context.registry_uri
            )
            local.parent.mkdir(parents=True, exist_ok=True)
            # A models:/name/N version never changes, so a complete copy is reusable;
            # the rename makes a half-copied directory impossible to mistake for one.
            # The copy is kept in the node's data dir, not in a temp dir a cleaner may
            # empty while replicas still start from it. (What download_model returns is
            # left alone: for a local artifact store it is the store's own files.)
            partial = local.with_name(local.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            await anyio.to_thread.run_sync(shutil.copytree, fetched, partial)
            partial.rename(local)
        return str(local)

    # -------------------------------------------------------- answers

    def _raise(self, target: Target | None, answer: Mapping[str, Any]) -> Any:
        """The ``result`` of an answer, or its ``error`` as this runtime's exception."""
        if "error" not in answer:
            return answer.get("result")
        kind, detail = answer["error"], answer.get("detail", "")
        what = target.id if target is not None else "Ray Serve"
        if kind == "capability":
            raise CapabilityError(f"{what} raised {detail}")
        if kind == "down":
            if target is not None:  # its application may be gone: deploy again next time
                self._ready.pop(target.slug, None)
            retry = answer.get("retry_after", self.retry_after)
            raise RuntimeDown(f"{what}: {detail}", retry_after=retry)
        if kind == "not_deployable":
            raise NotDeployable(f"{what}: {detail}")
        raise RuntimeError(f"the Ray driver process failed on {what}: {detail}")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shared task's exception as seen: its waiters may all have timed out."""
    if not task.cancelled():
        task.exception()


# ------------------------------------------------------------ the driver process


class _Failure(Exception):
    def __init__(self, kind: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


async def _retrying_pickle_race(make: Any) -> Any:
    """Call ``make`` (sync, or returning an awaitable), again after a moment when it hits
    Ray Serve 2.60's race on cloudpickle's process-wide "pickle by value" registry: it
    registers and unregisters its request-router module around every deployment config
    it builds, so two built at once (a deploy and a new handle's first call) make one
    fail with ``ValueError: <module ...> is not registered for pickle by value``."""
    for attempt in range(5):
        try:
            result = make()
            return await result if inspect.isawaitable(result) else result
        except ValueError as exc:
            if "pickle by value" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _DriverProcess:
    """The Ray driver: answers the node's requests, one task per request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writer: asyncio.StreamWriter | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.handles: dict[str, Any] = {}
        self.submitting = asyncio.Lock()
        self.connected = False
        self.watchdog: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        while True:
            try:
                message = await _receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the node went away
            rid, op = message.pop("id"), message.pop("op")
            if op == "cancel":
                task = self.tasks.get(rid)
                if task is not None:
                    task.cancel()
                continue
            task = asyncio.get_running_loop().create_task(self._answer(rid, op, message))
            self.tasks[rid] = task
            if op == "close":
                await task
                return
        if self.connected:
            await self._disconnect()

    async def _answer(self, rid: int, op: str, fields: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": rid}
        try:
            reply["result"] = await getattr(self, f"op_{op}")(**fields)
        except asyncio.CancelledError:
            return  # the node stopped waiting; it expects no answer
        except _Failure as exc:
            reply.update(error=exc.kind, detail=exc.detail)
            if exc.retry_after is not None:
                reply["retry_after"] = exc.retry_after
        except Exception as exc:
            logging.exception("request %s failed", op)
            reply.update(error="internal", detail=f"{type(exc).__name__}: {exc}")
        finally:
            self.tasks.pop(rid, None)
        with contextlib.suppress(ConnectionError):  # the node is gone: nobody to tell
            await self._send(reply)

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(_frame(message))
        await self.writer.drain()

    async def _disconnect(self) -> None:
        import ray

        # ray.shutdown() stops a cluster this process started; for one given by address
        # it only disconnects, and the applications stay.
        await anyio.to_thread.run_sync(ray.shutdown)

    # -------------------------------------------------------- requests

    async def op_connect(
        self,
        address: str | None,
        namespace: str,
        num_cpus: float,
        http_host: str,
        http_port: int | None,
    ) -> dict[str, Any]:
        def connect() -> dict[str, Any]:
            import ray
            from ray import serve
            from ray.serve.context import _get_global_client

            quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                ray.init(address=address, namespace=namespace, **quiet)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, namespace=namespace, **quiet)
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
            if http_port:
                serve.start(http_options={"host": http_host, "port": http_port})
            else:
                serve.start(proxy_location="Disabled")
            proxy_url = None
            if http_port:
                # Serve's HTTP options are fixed by whoever started Serve on the cluster.
                http = _get_global_client().http_config
                host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
                proxy_url = f"http://{host}:{http.port}"
            return {"gcs_address": ray.get_runtime_context().gcs_address, "proxy_url": proxy_url}

        try:
            info = await anyio.to_thread.run_sync(connect)
        except Exception as exc:
            detail = f"connecting to Ray failed: {type(exc).__name__}: {exc}"
            raise _Failure("down", detail) from None
        self.connected = True
        self.watchdog = asyncio.get_running_loop().create_task(self._watch(info["gcs_address"]))
        return info

    async def op_deploy(self, apps: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Bring ``apps`` to RUNNING: failure details by slug, None for success."""
        from ray import serve

        deadline = time.monotonic() + timeout
        results: dict[str, Any] = {}
        async with self.submitting:  # Serve applies submissions in order
            status = await anyio.to_thread.run_sync(serve.status)
            todo = []
            for app in apps:
                current = status.applications.get(app["slug"])
                ours = current is not None and app["deployment"] in current.deployments
                if ours and _enum_text(current.status) in ("RUNNING", "DEPLOYING"):
                    continue  # as bound already: leave its replicas alone
                try:
                    todo.append(await _retrying_pickle_race(lambda a=app: self._application(a)))
                except (TypeError, ValueError) as exc:  # Serve refused the options
                    results[app["slug"]] = f"{type(exc).__name__}: {exc}"
                self.handles.pop(app["slug"], None)
            if todo:
                await _retrying_pickle_race(
                    lambda: anyio.to_thread.run_sync(
                        lambda: serve.run_many(todo, wait_for_applications_running=False)
                    )
                )
        waiting = {app["slug"] for app in apps} - set(results)
        while waiting:
            status = await anyio.to_thread.run_sync(serve.status)
            for slug in sorted(waiting):
                current = status.applications.get(slug)
                state = _enum_text(current.status) if current else "MISSING"
                if state == "RUNNING":
                    results[slug] = None
                elif state in ("DEPLOY_FAILED", "MISSING") or time.monotonic() > deadline:
                    results[slug] = self._why(slug, state, current, timeout)
                    # Leave nothing half-deployed holding cluster resources.
                    await anyio.to_thread.run_sync(lambda s=slug: serve.delete(s, _blocking=False))
                else:
                    continue
                waiting.discard(slug)
            if waiting:
                await asyncio.sleep(0.25)
        return results

    @staticmethod
    def _why(slug: str, state: str, current: Any, timeout: float) -> str:
        messages = [current.message] if current is not None and current.message else []
        if current is not None:
            messages += [d.message for d in current.deployments.values() if d.message]
        if state == "DEPLOY_FAILED":
            prefix = "deploying failed"
        else:
            prefix = f"not RUNNING after {timeout:g} s ({state})"
        return "; ".join([prefix, *messages])

    @staticmethod
    def _application(app: Mapping[str, Any]) -> Any:
        from ray import serve

        deployment = serve.deployment(name=app["deployment"])(CapabilityReplica)
        bound = deployment.options(**app["options"]).bind(
            app["model"], app["tracking_uri"], app["registry_uri"]
        )
        return serve.RunTarget(bound, name=app["slug"], route_prefix=f"/{app['slug']}")

    async def op_undeploy(self, slug: str) -> None:
        from ray import serve

        self.handles.pop(slug, None)
        status = await anyio.to_thread.run_sync(serve.status)
        if slug in status.applications:
            await anyio.to_thread.run_sync(serve.delete, slug)

    async def op_invoke(self, slug: str, inputs: dict[str, Any]) -> Any:
        from ray.exceptions import RayError, RayTaskError
        from ray.serve.exceptions import BackPressureError, RayServeException

        handle = self.handles.get(slug)
        if handle is None:
            handle = await self._handle(slug)
        response = handle.run.remote(inputs)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise _Failure("capability", f"{type(cause).__name__}: {cause}") from None
        except BackPressureError as exc:
            raise _Failure("down", f"overloaded: {exc}", REPLICA_RETRY_AFTER) from None
        except (RayError, RayServeException) as exc:
            self.handles.pop(slug, None)
            raise _Failure("down", f"{type(exc).__name__}: {exc}", REPLICA_RETRY_AFTER) from None

    async def _handle(self, slug: str) -> Any:
        from ray import serve
        from ray.serve.exceptions import RayServeException

        try:
            handle = await anyio.to_thread.run_sync(serve.get_app_handle, slug)
        except RayServeException as exc:
            raise _Failure("down", f"no Serve application {slug}: {exc}") from None
        self.handles[slug] = handle
        return handle

    async def op_health(self) -> dict[str, Any]:
        status = await self._status()
        failing = [name for name, app in status.items() if app["status"] != "RUNNING"]
        detail = f"Serve runs {len(status)} applications"
        if failing:
            detail += f"; not RUNNING: {', '.join(sorted(failing))}"
        return {"ok": True, "detail": detail}

    async def op_status(self) -> dict[str, Any]:
        return await self._status()

    async def _status(self) -> dict[str, Any]:
        from ray import serve

        try:
            with anyio.fail_after(HEALTH_WAIT):
                status = await anyio.to_thread.run_sync(serve.status, abandon_on_cancel=True)
        except TimeoutError:
            raise _Failure("down", "Serve's controller did not answer") from None
        return {
            name: {
                "status": _enum_text(app.status),
                "message": app.message,
                "deployments": {
                    dname: {
                        "status": _enum_text(dep.status),
                        "message": dep.message,
                        "replicas": {_enum_text(k): n for k, n in dep.replica_states.items()},
                    }
                    for dname, dep in app.deployments.items()
                },
            }
            for name, app in status.applications.items()
        }

    async def op_close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.connected:
            await self._disconnect()

    async def _watch(self, gcs: str) -> None:
        """End this process when the cluster's GCS stops accepting connections: Ray
        would end it anyway, while calls would meanwhile wait on replicas that are gone."""
        misses = 0
        while misses < PROBE_MISSES:
            await asyncio.sleep(PROBE_INTERVAL)
            misses = 0 if await _reachable(gcs) else misses + 1
        detail = f"the Ray cluster at {gcs} is unreachable"
        logging.error("%s; exiting", detail)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send({"event": "down", "detail": detail}), 1)
        os._exit(3)  # ray.shutdown() could hang on a dead cluster


def driver_main() -> None:
    """Entry point of the driver process: ``python -c ... FD`` with the socket's fd."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s rayserve-driver: %(message)s"
    )
    sock = socket.socket(fileno=int(sys.argv[1]))
    asyncio.run(_DriverProcess(sock).serve())
    # Ray's threads can keep the interpreter from exiting after a disconnect.
    os._exit(0)
