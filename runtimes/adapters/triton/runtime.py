"""The ``triton`` adapter, :class:`TritonRuntime` (in the node process): deploys
capability versions on a Triton Inference Server it is given or starts, and calls
them (see the package documentation for the two binding modes and the settings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.plugins.tensor import DATATYPES

from ..base import RuntimeContext, RuntimeHealth, Target
from ..http1 import Http1Client
from .binding import Deployment, deployment_of
from .repository import entry_is_current, write_wrapper_entry
from .server import TritonServer
from .settings import TritonSettings
from .stub import INPUT_JSON, OUTPUT_JSON

if TYPE_CHECKING:
    from tritonclient.http.aio import InferenceServerClient

log = logging.getLogger("yunnao.runtimes.triton")
# A wrapper model's V2 request header, rendered once: only the input's length varies.
_HEADER = (
    f'{{"inputs":[{{"name":"{INPUT_JSON}","shape":[%d],"datatype":"UINT8",'
    '"parameters":{"binary_data_size":%d}}],'
    f'"outputs":[{{"name":"{OUTPUT_JSON}","parameters":{{"binary_data":true}}}}]}}'
).encode()

# Triton's own answers (never a capability's: those start with the exception's type)
# for a model it does not serve, lost in a restart or unloaded, or whose Python stub
# process died: worth one load and retry.
_NOT_SERVING = re.compile(r"^(Request for unknown model|Stub process '[^']*' is not healthy)")
_READY_POLL_S = 0.2
# Health requests: Triton answers them at once when it is well.
PROBE_TIMEOUT = 5.0
_T = TypeVar("_T")


def _unreachable() -> tuple[type[BaseException], ...]:
    """What the client raises when it cannot reach or loses the server (refused, reset,
    closed mid-answer); imported late, as tritonclient takes a while to import."""
    import aiohttp

    return aiohttp.ClientError, OSError


class TritonRuntime:
    """Runs capability versions on a Triton Inference Server it is given or starts."""

    type = "triton"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        settings = TritonSettings.parse("triton", config)
        self.settings = settings
        self.context = context
        self.start_timeout = settings.start_timeout
        self.stop_timeout = settings.stop_timeout
        self.load_timeout = settings.load_timeout
        self.retry_after = settings.retry_after
        repository = settings.repository
        # The server this runtime starts itself (no `url` given), else None.
        self.server: TritonServer | None = None
        if settings.url:
            self.url = settings.url.removeprefix("http://").rstrip("/")
            self.repository = Path(repository) if repository else None
        else:
            self.server = TritonServer(
                context.data_dir / "triton",
                repository=Path(repository) if repository else None,
                stop_timeout=self.stop_timeout,
            )
            self.url = self.server.url
            self.repository = self.server.repository
        self._client: InferenceServerClient | None = None
        self._session: Http1Client | None = None  # for wrapper calls (see _infer_json)
        self._closing: set[asyncio.Task[None]] = set()  # clients being closed
        self._deployed: dict[str, Deployment] = {}  # by target slug
        self._locks: dict[str, asyncio.Lock] = {}  # by Triton model name
        self._loading: dict[str, asyncio.Task[None]] = {}  # re-loads under way, by model
        self._load_lock = asyncio.Lock()
        self._starting: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        """Write the target's wrapper entry (or find its passthrough model) and load it."""
        dep = deployment_of(target)
        if self._deployed.get(target.slug) == dep:
            return
        lock = self._locks.setdefault(dep.model, asyncio.Lock())
        async with lock:
            await self._ensure_server()
            if dep.passthrough:
                if not await self._model_ready(dep.model):
                    await self._load(dep)
            else:
                await self._deploy_wrapper(dep)
            self._deployed[target.slug] = dep
        log.info("deployed %s on triton as %s", target.id, dep.model)

    async def undeploy(self, target: Target) -> None:
        """Unload the target's model (a passthrough model only once no target uses it)
        and remove its wrapper entry."""
        dep = self._deployed.pop(target.slug, None)
        if dep is None:
            try:
                dep = deployment_of(target)
            except NotDeployable:
                return  # never deployable, so never deployed
            if dep.passthrough:
                return  # not loaded by this node: the operator's model stays as it is
        if dep.passthrough and any(d.model == dep.model for d in self._deployed.values()):
            return
        async with self._locks.setdefault(dep.model, asyncio.Lock()):
            if self.server is None or self.server.running:
                try:
                    await self._unload(dep.model)
                except RuntimeDown as exc:
                    log.warning("undeploy %s: %s", target.id, exc.detail)
            if not dep.passthrough and self.repository is not None:
                await asyncio.to_thread(
                    shutil.rmtree, self.repository / dep.model, ignore_errors=True
                )

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        """Run the target on Triton within ``timeout`` seconds."""
        dep = self._deployed.get(target.slug)
        if dep is None or dep.target != target:
            await self.deploy(target)
            dep = self._deployed[target.slug]
        starting = self.server is not None and not self.server.running
        try:
            async with asyncio.timeout(timeout):  # no task per call, unlike wait_for
                return await self._call(dep, inputs)
        except TimeoutError:
            # The answer may never come on that connection (see _forget_connections).
            self._forget_connections()
            if starting:
                raise RuntimeDown(
                    "tritonserver is starting again", retry_after=self.retry_after
                ) from None
            raise InvocationTimeout(
                f"{target.id} did not answer within {timeout:g} s on Triton ({self.url})"
            ) from None

    async def health(self) -> RuntimeHealth:
        """Whether Triton is live and ready."""
        if self.server is not None and self.server.proc is None:
            return RuntimeHealth(True, "tritonserver starts on first use")
        try:
            client = self._client_now()
            live = await self._ask(client.is_server_live(), PROBE_TIMEOUT)
            ready = live and await self._ask(client.is_server_ready(), PROBE_TIMEOUT)
        except RuntimeDown as exc:
            return RuntimeHealth(False, exc.detail)
        if not ready:
            state = "not ready" if live else "not live"
            return RuntimeHealth(False, f"Triton at {self.url} is {state}")
        return RuntimeHealth(True, f"Triton at {self.url}: {len(self._deployed)} target(s)")

    def describe(self) -> dict[str, Any]:
        """Type, address, repository, whether the node runs the server, and deployments."""
        server = self.server
        return {
            "type": self.type,
            "url": self.url,
            "repository": str(self.repository) if self.repository else None,
            "started_here": server is not None,
            "pid": server.proc.pid if server is not None and server.running else None,
            "deployed": sorted(self._deployed),
            "models": {slug: dep.model for slug, dep in sorted(self._deployed.items())},
        }

    async def close(self) -> None:
        """Close the client; stop a server the node started."""
        self._closed = True
        tasks = [t for t in [*self._loading.values(), self._starting] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self._deployed.clear()

    # ------------------------------------------------------------ calls

    async def _call(self, dep: Deployment, inputs: dict[str, Any]) -> Any:
        from tritonclient.utils import InferenceServerException

        await self._ensure_server()
        for attempt in (1, 2):
            try:
                return await self._infer(dep, inputs)
            except InferenceServerException as exc:
                message = exc.message() or str(exc)
                if attempt == 1 and (exc.status() == "404" or _NOT_SERVING.search(message)):
                    log.info("Triton lost %s (%s); loading it again", dep.model, message)
                    await self._reload(dep)
                    continue
                raise CapabilityError(
                    f"{dep.target.id} failed on Triton model {dep.model}: {message}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _infer(self, dep: Deployment, inputs: dict[str, Any]) -> Any:
        from tritonclient.http import InferInput, InferRequestedOutput

        if not dep.passthrough:
            return await self._infer_json(dep, inputs)
        tensors = []
        for name, spec in dep.target.tensors("input").items():
            if name not in inputs:
                continue
            array = np.asarray(inputs[name], dtype=DATATYPES[spec["datatype"]])
            tensor = InferInput(name, list(array.shape), spec["datatype"])
            tensors.append(tensor.set_data_from_numpy(array))
        names = list(dep.target.tensors("output"))
        outputs = [InferRequestedOutput(name) for name in names]
        client = self._client_now()
        try:
            result = await client.infer(dep.model, tensors, outputs=outputs)
        except _unreachable() as exc:
            raise self._down(exc) from exc
        arrays = {name: result.as_numpy(name) for name in names}
        missing = [name for name, array in arrays.items() if array is None]
        if missing:
            raise CapabilityError(f"{dep.target.id}: Triton model {dep.model} sent no {missing}")
        return {name: array.tolist() for name, array in arrays.items()}

    async def _infer_json(self, dep: Deployment, inputs: dict[str, Any]) -> Any:
        """A wrapper model's call: the V2 request written by hand, with the JSON input as
        binary tensor data. tritonclient's InferInput/InferResult machinery cost about
        as much per call as all of the gateway's own work, for one byte tensor."""
        from tritonclient.utils import InferenceServerException

        payload = json.dumps(inputs, ensure_ascii=False).encode()
        header = _HEADER % (len(payload), len(payload))
        session = self._session_now()
        try:
            answer = await session.post(
                f"/v2/models/{dep.model}/infer",
                header + payload,
                {
                    "Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream",
                },
            )
            body, status = answer.body, answer.status
            length = answer.headers.get("inference-header-content-length")
        except _unreachable() as exc:
            raise self._down(exc) from exc
        if status != 200:
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body[:300].decode(errors="replace")
            raise InferenceServerException(msg=message, status=str(status))
        try:
            split = int(length) if length is not None else len(body)
            output = json.loads(body[:split])["outputs"][0]
            if "data" in output:  # the server chose JSON data after all
                return json.loads(bytes(output["data"]))
            return json.loads(body[split : split + output["parameters"]["binary_data_size"]])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CapabilityError(f"{dep.target.id}: answer is not JSON: {exc}") from exc

    def _session_now(self) -> Http1Client:
        if self._closed:
            raise RuntimeDown("the triton runtime is shut down", retry_after=self.retry_after)
        if self._session is None:
            # A plain HTTP/1.1 client, not aiohttp: about 0.45 ms less a call (http1).
            self._session = Http1Client.for_url(self.url)
        return self._session

    def _down(self, exc: BaseException) -> RuntimeDown:
        self._forget_connections()
        detail = f"Triton at {self.url} is unreachable: {type(exc).__name__}: {exc}"
        server = self.server
        if server is not None and server.proc is not None and not server.running:
            detail += f" (tritonserver exited with {server.proc.returncode}; log: {server.log})"
        return RuntimeDown(detail, retry_after=self.retry_after)

    def _client_now(self) -> InferenceServerClient:
        if self._closed:
            raise RuntimeDown("the triton runtime is shut down", retry_after=self.retry_after)
        if self._client is None:
            from tritonclient.http.aio import InferenceServerClient

            # No session-wide timeout: each request has its own (the call's, load_timeout,
            # PROBE_TIMEOUT), and a long call must not be cut at a shorter default.
            self._client = InferenceServerClient(self.url, conn_timeout=None)
        return self._client

    # ------------------------------------------------------------ models

    def _wrapper_repository(self, dep: Deployment) -> Path:
        if self.repository is None:
            raise NotDeployable(
                f"{dep.target.id}: wrapper bindings need the triton runtime's `repository` "
                "(the server's model repository); or bind an existing model with `model`"
            )
        if dep.target.model_uri is None or self.context.tracking_uri is None:
            raise NotDeployable(f"{dep.target.id}: no MLflow model to put on Triton")
        return self.repository

    async def _deploy_wrapper(self, dep: Deployment) -> None:
        repository = self._wrapper_repository(dep)
        current = await asyncio.to_thread(entry_is_current, repository, dep.target)
        if current and await self._model_ready(dep.model):
            return
        if not current:
            await asyncio.to_thread(self._write_entry, dep.target)
        await self._load(dep)

    def _write_entry(self, target: Target) -> None:
        from ..loading import download_model, refuse_uploaded, uploaded_of

        assert self.repository is not None and target.model_uri is not None
        assert self.context.tracking_uri is not None
        files = download_model(
            target.model_uri, self.context.tracking_uri, self.context.registry_uri
        )
        marker = uploaded_of(files)
        env_dirs: list[str] = []
        if marker is not None:
            # Triton's stub runs as the node's user: only an operator's `trusted` lets
            # an uploaded package's code run there, on its own environment.
            if target.config.get("trusted") is not True:
                refuse_uploaded(
                    target.id, marker, "in Triton's stub (as the node's user) untrusted"
                )
            env_dirs = self._environment_dirs(target, marker["environment"])
        write_wrapper_entry(
            self.repository,
            target,
            Path(files),
            env_dirs=env_dirs,
            allow_uploaded=marker is not None,
        )

    def _environment_dirs(self, target: Target, key: str) -> list[str]:
        """The site-packages of the uploaded package's environment ``key``."""
        import sysconfig

        from yunnao.registry.packages.environments import Environments

        envs = self.context.data_dir.resolve() / "packages" / "envs"
        try:
            env = Environments(envs, index_url="").get(key)
        except ValueError:
            env = None
        if env is None:
            raise NotDeployable(
                f"{target.id}: its package environment {key[:12]} is not built at this "
                "node (publish the package again)"
            )
        base = {"base": str(env.path), "platbase": str(env.path)}
        dirs = [sysconfig.get_path(k, vars=base) for k in ("purelib", "platlib")]
        return list(dict.fromkeys(dirs))

    async def _reload(self, dep: Deployment) -> None:
        """Load ``dep`` again (rewriting a wrapper entry that went missing), once for all
        the calls that found it gone; a call that gives up waiting leaves it loading."""
        task = self._loading.get(dep.model)
        if task is None or task.done():
            task = asyncio.ensure_future(self._restore(dep))
            self._loading[dep.model] = task
        await asyncio.shield(task)

    async def _restore(self, dep: Deployment) -> None:
        async with self._locks.setdefault(dep.model, asyncio.Lock()):
            if not dep.passthrough and not await asyncio.to_thread(
                entry_is_current, self._wrapper_repository(dep), dep.target
            ):
                await asyncio.to_thread(self._write_entry, dep.target)
            # Even a model Triton says is ready: loading it again replaces a dead stub.
            await self._load(dep)

    async def _load(self, dep: Deployment) -> None:
        """Load ``dep``'s model; Triton answers once it is ready (or failed to load)."""
        from tritonclient.utils import InferenceServerException

        client = self._client_now()
        try:
            # One load at a time: Triton answers a load request only when the model is
            # loaded, holding one of its HTTP threads, and calls on connections served by
            # a held thread wait; it loads the models of queued requests no sooner.
            async with self._load_lock:
                await asyncio.wait_for(client.load_model(dep.model), self.load_timeout)
        except InferenceServerException as exc:
            if not dep.passthrough:  # leave no UNAVAILABLE model of ours behind
                with contextlib.suppress(RuntimeDown, InferenceServerException):
                    await self._ask(client.unload_model(dep.model))
            raise NotDeployable(
                f"{dep.target.id}: Triton could not load model {dep.model}: {exc.message()}"
            ) from exc
        except TimeoutError:
            raise RuntimeDown(
                f"Triton did not finish loading {dep.model} within {self.load_timeout:g} s",
                retry_after=self.retry_after,
            ) from None
        except _unreachable() as exc:
            raise self._down(exc) from exc

    async def _unload(self, model: str) -> None:
        """Unload ``model`` and wait until Triton no longer serves it."""
        from tritonclient.utils import InferenceServerException

        client = self._client_now()
        try:
            await self._ask(client.unload_model(model))
        except InferenceServerException as exc:
            log.warning("Triton would not unload %s: %s", model, exc)
            return
        deadline = time.monotonic() + self.stop_timeout
        while await self._model_ready(model) and time.monotonic() < deadline:
            await asyncio.sleep(_READY_POLL_S)

    async def _model_ready(self, model: str) -> bool:
        return bool(await self._ask(self._client_now().is_model_ready(model)))

    async def _ask(self, request: Awaitable[_T], timeout: float | None = None) -> _T:
        """A control request answered within ``timeout`` (default: ``load_timeout``, as
        one may wait behind a load); :class:`RuntimeDown` when Triton cannot be reached
        or does not answer."""
        timeout = self.load_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(request, timeout)
        except TimeoutError:
            raise RuntimeDown(
                f"Triton at {self.url} did not answer within {timeout:g} s",
                retry_after=self.retry_after,
            ) from None
        except _unreachable() as exc:
            raise self._down(exc) from exc

    # ------------------------------------------------------------ the started server

    async def _ensure_server(self) -> None:
        """Start the node's own server if it is not running (first use, or it died)."""
        server = self.server
        if server is None or server.running:
            return
        if self._closed:
            raise RuntimeDown("the triton runtime is shut down", retry_after=self.retry_after)
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._start_server(server))
        await asyncio.shield(self._starting)

    async def _start_server(self, server: TritonServer) -> None:
        if server.proc is not None:
            log.warning("tritonserver exited with %s; starting it again", server.proc.returncode)
        try:
            await asyncio.to_thread(server.start, self.start_timeout)
        except RuntimeError as exc:
            raise RuntimeDown(str(exc), retry_after=self.retry_after) from exc
        # A new process knows no models: the next call re-loads what it needs.
        log.info("tritonserver %s serving %s", server.url, server.repository)
        self._forget_connections()

    def _forget_connections(self) -> None:
        """Drop the pooled connections of both clients. A connection to a server that
        died can look open for a while (its python-backend stubs inherited the socket
        and never answer on it), and a call reusing it would wait out its timeout."""
        old = [c for c in (self._client, self._session) if c is not None]
        self._client = self._session = None
        for client in old:
            task = asyncio.get_running_loop().create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
