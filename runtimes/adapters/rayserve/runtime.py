"""The ``rayserve`` adapter, :class:`RayServeRuntime` (in the node process): deploys
capability versions as Ray Serve applications and calls them, all through a driver
process of its own (see the package documentation for the design and its settings)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.registry.packages.environments import Environments

from ..base import RuntimeContext, RuntimeHealth, Target, free_port
from ..loading import download_model, refuse_uploaded, uploaded_of
from .connection import DriverConnection
from .deployment import deployment_options, trusted
from .protocol import HEALTH_WAIT, reachable
from .settings import MODEL_SOURCES, RayServeSettings

log = logging.getLogger("yunnao.runtimes.rayserve")


@dataclass(frozen=True)
class _App:
    """A target as this adapter deploys it."""

    slug: str
    target_id: str
    model: str  # a local directory or a models:/ URI
    options: dict[str, Any]  # Serve deployment options
    spec: str  # hash of what the replicas run; part of the deployment name
    allow_uploaded: bool = False  # an uploaded package's model, bound `trusted`

    def wire(self, context: RuntimeContext) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "deployment": f"capability-{self.spec}",
            "model": self.model,
            "tracking_uri": context.tracking_uri,
            "registry_uri": context.registry_uri,
            "options": self.options,
            "allow_uploaded": self.allow_uploaded,
        }


class RayServeRuntime:
    """Runs capability versions as Ray Serve applications through a driver process (see
    the package documentation for the recovery design, and :class:`RayServeSettings`
    for the configuration keys)."""

    type = "rayserve"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        settings = RayServeSettings.parse("rayserve", config)
        self.settings = settings
        self.context = context
        self.address: str | None = settings.address or None
        self.namespace: str = settings.namespace
        self.num_cpus: float = settings.num_cpus
        self.http_host: str = settings.http_host
        self.http_port: int | None = (
            settings.http_port or None
            if "http_port" in settings.model_fields_set
            else free_port(self.http_host)
        )
        self.model_source: str = settings.model_source
        if self.model_source not in MODEL_SOURCES:
            raise ValueError(f"rayserve model_source must be one of {MODEL_SOURCES}")
        self.connect_timeout = settings.connect_timeout
        self.deploy_timeout = settings.deploy_timeout
        self.retry_after = settings.retry_after
        self.root = context.data_dir / "rayserve"
        # A cluster given as host:port is probed before a driver process is started for
        # it; "auto" and a local cluster are found (or started) by ray.init itself.
        self._probe = self.address if self.address not in (None, "auto") else None
        self._gcs: str | None = self._probe  # where the GCS answers, once known
        self._proxy_url: str | None = None
        self._driver: DriverConnection | None = None
        self._connecting: asyncio.Task[DriverConnection] | None = None
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
            if not driver.alive or (self._gcs is not None and not await reachable(self._gcs)):
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

    async def _connected(self, deadline: float | None) -> DriverConnection:
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

    async def _connect(self) -> DriverConnection:
        self._ready.clear()
        if self._probe is not None and not await reachable(self._probe):
            self._refuse(f"the Ray cluster at {self._probe} is unreachable")
            raise RuntimeDown(self._refused, retry_after=self.retry_after)
        self.root.mkdir(parents=True, exist_ok=True)
        driver = await DriverConnection.spawn(self.root / "driver.log", self._driver_env())
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

    def _down_detail(self, driver: DriverConnection) -> str:
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
        allow = await self._uploaded(target, model, options)
        # Replicas run the model version, whichever directory holds its files.
        what = [target.model_uri, self.model_source, options, target.content_hash, allow]
        spec = json.dumps(what, sort_keys=True, default=str)
        digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
        app = _App(target.slug, target.id, model, options, digest, allow)
        driver = await self._connected(None)
        if self._ready.get(app.slug) == app.spec:
            self._apps[app.slug] = app
            return
        failure = (await self._deploy_on(driver, [app])).get(app.slug)
        if failure:
            raise NotDeployable(f"{target.id} could not be deployed on Ray Serve: {failure}")
        self._apps[app.slug] = app

    async def _deploy_on(self, driver: DriverConnection, apps: list[_App]) -> dict[str, str | None]:
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

    async def _uploaded(self, target: Target, model: str, options: dict[str, Any]) -> bool:
        """Whether ``target`` runs an uploaded package's model: refused (NotDeployable)
        unless its operators bound it ``trusted``; then its replicas run on the
        package's environment (``runtime_env`` ``py_executable``, added to ``options``)."""
        local = model
        if model.startswith("models:/"):  # model_source "registry": look at its files
            assert self.context.tracking_uri is not None
            local = await anyio.to_thread.run_sync(
                download_model, model, self.context.tracking_uri, self.context.registry_uri
            )
        marker = await anyio.to_thread.run_sync(uploaded_of, local)
        if marker is None:
            return False
        if not trusted(target):
            refuse_uploaded(target.id, marker, "on Ray Serve (as the node's user) untrusted")
        if model.startswith("models:/"):
            raise NotDeployable(
                f"{target.id} is an uploaded package's model, whose environment is on this "
                'node\'s machine: Ray Serve runs it with model_source "download" only'
            )
        envs = self.context.data_dir.resolve() / "packages" / "envs"
        try:
            env = Environments(envs, index_url="").get(marker["environment"])
        except ValueError:
            env = None
        if env is None:
            raise NotDeployable(
                f"{target.id}: its package environment {marker['environment'][:12]} is not "
                "built at this node (publish the package again)"
            )
        if env.installed:  # an environment adding nothing needs no interpreter of its own
            actor = options["ray_actor_options"]
            actor["runtime_env"] = {"py_executable": str(env.python)}
        return True

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
