"""The ``triton`` runtime: capability versions served by NVIDIA Triton Inference Server.

Node configuration (``Settings.runtimes["triton"]``), every key optional:

- ``url``: ``"127.0.0.1:8000"``, the HTTP endpoint of a running ``tritonserver`` started
  with ``--model-control-mode=explicit`` (models load and unload only when asked).
  Without it the node starts its own server on first use (the ``tritonserver`` binary
  of the ``nvidia-pytriton`` wheel, on a free loopback port, everything under
  ``<data_dir>/triton``), starts it again when a call finds it dead, and stops it on
  shutdown.
- ``repository``: that server's model repository, writable by the node (needed for
  wrapper bindings; default for a started server: ``<data_dir>/triton/models``).
- ``start_timeout`` (seconds, default 60): how long a started server may take to be ready.
- ``stop_timeout`` (seconds, default 10): how long it has to exit after SIGTERM.
- ``load_timeout`` (seconds, default 120): how long loading one model may take.
- ``retry_after`` (seconds, default 5): the ``Retry-After`` suggested while Triton is down.

A version's binding (``runtime.config``) picks one of two modes:

- wrapper (default): the node downloads the version's MLflow pyfunc model into a
  model-repository entry named after :attr:`Target.slug` and writes a Python-backend
  ``model.py`` that runs it with :func:`yunnao.runtimes.adapters.loading.load_runnable` (so
  Triton never talks to MLflow). Keys: ``instances`` (instance count, default 1), and
  ``gpus`` (a GPU count, or a list of GPU ids) or ``kind: "gpu"`` for ``KIND_GPU``
  instances (default ``KIND_CPU``). The call's JSON input travels as the UTF-8 bytes
  of one ``UINT8`` tensor ``INPUT_JSON`` and the answer as ``OUTPUT_JSON``.
- passthrough: ``model`` names a model already in Triton's repository (ONNX, a
  hand-written Python model...), which the node only loads, never writes. Each
  ``x-tensor`` field of the input schema is sent as the V2 input of that name and
  datatype; each ``x-tensor`` field of the output schema is read from the output of
  that name. Every field of both schemas must be a tensor.

Why JSON travels as UINT8 and tensors through DLPack: the Python backend of Triton
2.51 (the one the wheel ships) was built against numpy 1. With numpy 2 (which Yunnao
requires) in its stub, ``Tensor.as_numpy()`` gives every element as the first one,
``Tensor(name, array)`` sends an empty tensor, and a ``BYTES`` input crashes the stub;
``np.from_dlpack`` and ``Tensor.from_dlpack`` do not go through that code.

The backend's stub process runs the system's Python and ignores ``PYTHONPATH``, so
the generated ``model.py`` first adds this interpreter's site-packages directories
(their ``.pth`` files included, which is how an editable install of Yunnao is found)
ahead of the system's; the node and the server must be on the same machine, with the
same Python minor version. Triton answering that a model is unknown or not ready (it
restarted and lost what it had loaded) makes the node load it again, once, and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np

from yunnao.plugins.tensor import DATATYPES

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

if TYPE_CHECKING:
    from tritonclient.http.aio import InferenceServerClient

log = logging.getLogger("yunnao.runtimes.triton")

NODE_KEYS = frozenset(
    {"url", "repository", "start_timeout", "stop_timeout", "load_timeout", "retry_after"}
)
BINDING_KEYS = frozenset({"model", "instances", "gpus", "kind"})
INPUT_JSON, OUTPUT_JSON = "INPUT_JSON", "OUTPUT_JSON"
VERSION = "1"  # the one version directory of a wrapper entry
CAPABILITY_DIR = "capability"  # the downloaded pyfunc model, inside the version directory
MARKER = "yunnao.json"  # what a wrapper entry was written for
HOST = "127.0.0.1"
# Triton's own answers (never a capability's: those start with the exception's type)
# for a model it does not serve, lost in a restart or unloaded, or whose Python stub
# process died: worth one load and retry.
_NOT_SERVING = re.compile(r"^(Request for unknown model|Stub process '[^']*' is not healthy)")
_READY_POLL_S = 0.2
# Health requests: Triton answers them at once when it is well.
PROBE_TIMEOUT = 5.0
_T = TypeVar("_T")


# ------------------------------------------------------------ the tritonserver process


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


# ------------------------------------------------------------ wrapper entries


_MODEL_PY = '''\
"""Written by Yunnao for {target_id}: the capability, run by Triton's Python backend."""

import os
import site
import sys

# The stub runs the system Python and ignores PYTHONPATH: the node's site-packages go
# first, .pth files included (an editable install of yunnao is found through one).
_system_path = list(sys.path)
for _dir in {site_dirs!r}:
    site.addsitedir(_dir)
sys.path[:] = [p for p in sys.path if p not in _system_path] + _system_path

from yunnao.runtimes.adapters.triton import StubModel  # noqa: E402


class TritonPythonModel(StubModel):
    model_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), {capability_dir!r})
'''


def _int_at_least(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NotDeployable(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _gpu_ids(config: Mapping[str, Any], target: Target) -> list[int] | None:
    """The GPU ids of ``KIND_GPU`` instances ([] for every GPU), or None for ``KIND_CPU``."""
    kind = config.get("kind")
    if kind not in (None, "cpu", "gpu"):
        raise NotDeployable(f'{target.id}: triton binding `kind` is "cpu" or "gpu", not {kind!r}')
    gpus = config.get("gpus", 0)
    if isinstance(gpus, list):
        ids = [_int_at_least(g, f"{target.id}: a GPU id in `gpus`", minimum=0) for g in gpus]
    else:
        ids = list(range(_int_at_least(gpus, f"{target.id}: `gpus`", minimum=0)))
    if kind == "cpu" and ids:
        raise NotDeployable(f'{target.id}: binding asks for GPUs {ids} with kind "cpu"')
    if ids or kind == "gpu":
        return ids
    return None


def wrapper_config(target: Target) -> str:
    """The ``config.pbtxt`` of ``target``'s wrapper entry."""
    count = _int_at_least(target.config.get("instances", 1), f"{target.id}: `instances`", minimum=1)
    gpus = _gpu_ids(target.config, target)
    group = [f"    count: {count}", f"    kind: {'KIND_CPU' if gpus is None else 'KIND_GPU'}"]
    if gpus:
        group.append(f"    gpus: [ {', '.join(map(str, gpus))} ]")
    tensor = '  {{\n    name: "{}"\n    data_type: TYPE_UINT8\n    dims: [ -1 ]\n  }}'
    return "\n".join(
        [
            f'name: "{target.slug}"',
            'backend: "python"',
            "max_batch_size: 0",
            f"input [\n{tensor.format(INPUT_JSON)}\n]",
            f"output [\n{tensor.format(OUTPUT_JSON)}\n]",
            "instance_group [\n  {\n" + "\n".join(group) + "\n  }\n]",
            "",
        ]
    )


def _marker(target: Target) -> dict[str, Any]:
    return {
        "target": target.id,
        "model_uri": target.model_uri,
        "content_hash": target.content_hash,
        "binding": json.loads(json.dumps(dict(target.config), sort_keys=True, default=str)),
    }


def entry_is_current(repository: Path, target: Target) -> bool:
    """Whether ``repository`` holds ``target``'s wrapper entry as it would be written now."""
    try:
        return json.loads((repository / target.slug / MARKER).read_text()) == _marker(target)
    except (OSError, ValueError):
        return False


def write_wrapper_entry(repository: Path, target: Target, model_files: Path) -> Path:
    """Write ``target``'s wrapper entry into ``repository`` from its downloaded pyfunc model
    files: ``config.pbtxt`` and ``1/model.py`` with the files in ``1/capability``. The
    entry appears whole (built aside, then renamed into place); its directory."""
    config = wrapper_config(target)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.slug}.", dir=repository))
    final = repository / target.slug
    try:
        version = staging / VERSION
        shutil.copytree(model_files, version / CAPABILITY_DIR)
        (version / "model.py").write_text(
            _MODEL_PY.format(
                target_id=target.id, site_dirs=stub_site_dirs(), capability_dir=CAPABILITY_DIR
            ),
            encoding="utf-8",
        )
        (staging / "config.pbtxt").write_text(config, encoding="utf-8")
        (staging / MARKER).write_text(json.dumps(_marker(target)), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


# ------------------------------------------------------------ inside Triton


def _quiet_consumed_capsules(previous: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def hook(unraisable: Any) -> None:
        # Triton renames the DLPack capsules it consumes (after releasing their memory
        # itself), and numpy's capsule destructor then reports the unexpected name.
        exc = unraisable.exc_value
        if isinstance(exc, ValueError) and "PyCapsule_GetPointer" in str(exc):
            return
        previous(unraisable)

    return hook


class StubModel:
    """A wrapper entry's model inside Triton's Python backend: ``model.py`` subclasses it
    with ``model_dir``, the downloaded pyfunc model. One JSON input in, the capability's
    JSON output out; an exception becomes that request's error, with its message."""

    model_dir: str

    def initialize(self, args: dict[str, str]) -> None:
        from yunnao.runtimes.adapters.loading import load_runnable

        sys.unraisablehook = _quiet_consumed_capsules(sys.unraisablehook)
        self.run = load_runnable(self.model_dir)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # only exists inside the stub

        responses = []
        for request in requests:
            try:
                raw = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, INPUT_JSON))
                result = self.run(json.loads(raw.tobytes()))
                data = json.dumps(result, ensure_ascii=False).encode()
                # Writable: numpy refuses to export a read-only array through DLPack.
                out = np.frombuffer(bytearray(data), dtype=np.uint8)
                tensor = pb_utils.Tensor.from_dlpack(OUTPUT_JSON, out)
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            except Exception as exc:
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses


# ------------------------------------------------------------ the adapter


@dataclass(frozen=True)
class _Deployment:
    target: Target
    model: str  # the Triton model name
    passthrough: bool


def _deployment(target: Target) -> _Deployment:
    unknown = set(target.config) - BINDING_KEYS
    if unknown:
        raise NotDeployable(
            f"{target.id}: unknown triton binding keys {sorted(unknown)}; "
            f"known: {sorted(BINDING_KEYS)}"
        )
    model = target.config.get("model")
    if model is None:
        wrapper_config(target)  # refuses a bad instances/gpus/kind before any download
        return _Deployment(target, target.slug, passthrough=False)
    if not isinstance(model, str) or not model or "/" in model:
        raise NotDeployable(f"{target.id}: triton binding `model` must be a model name")
    extra = sorted(set(target.config) - {"model"})
    if extra:
        raise NotDeployable(
            f"{target.id}: {extra} apply to wrapper entries only; the config.pbtxt of "
            f"Triton model {model!r} decides its instances"
        )
    for which, schema in (("input", target.input_schema), ("output", target.output_schema)):
        props = schema.get("properties", {}) if schema.get("type") == "object" else {}
        plain = sorted(k for k, v in props.items() if "x-tensor" not in v)
        if not props or plain:
            raise NotDeployable(
                f"{target.id}: a passthrough binding maps tensor fields only; the {which} "
                f"schema has {'no fields' if not props else f'non-tensor fields {plain}'}"
            )
    return _Deployment(target, model, passthrough=True)


def _unreachable() -> tuple[type[BaseException], ...]:
    """What the client raises when it cannot reach or loses the server (refused, reset,
    closed mid-answer); imported late, as tritonclient takes a while to import."""
    import aiohttp

    return aiohttp.ClientError, OSError


class TritonRuntime:
    """Runs capability versions on a Triton Inference Server it is given or starts."""

    type = "triton"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        check_settings("triton", config, NODE_KEYS)
        self.context = context
        self.start_timeout = float(config.get("start_timeout", 60))
        self.stop_timeout = float(config.get("stop_timeout", 10))
        self.load_timeout = float(config.get("load_timeout", 120))
        self.retry_after = int(config.get("retry_after", 5))
        repository = config.get("repository")
        # The server this runtime starts itself (no `url` given), else None.
        self.server: TritonServer | None = None
        if config.get("url"):
            self.url = str(config["url"]).removeprefix("http://").rstrip("/")
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
        self._session: Any = None  # aiohttp, for wrapper calls (see _infer_json)
        self._closing: set[asyncio.Task[None]] = set()  # clients being closed
        self._deployed: dict[str, _Deployment] = {}  # by target slug
        self._locks: dict[str, asyncio.Lock] = {}  # by Triton model name
        self._loading: dict[str, asyncio.Task[None]] = {}  # re-loads under way, by model
        self._load_lock = asyncio.Lock()
        self._starting: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        """Write the target's wrapper entry (or find its passthrough model) and load it."""
        dep = _deployment(target)
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
                dep = _deployment(target)
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
            return await asyncio.wait_for(self._call(dep, inputs), timeout)
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

    async def _call(self, dep: _Deployment, inputs: dict[str, Any]) -> Any:
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

    async def _infer(self, dep: _Deployment, inputs: dict[str, Any]) -> Any:
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

    async def _infer_json(self, dep: _Deployment, inputs: dict[str, Any]) -> Any:
        """A wrapper model's call: the V2 request written by hand, with the JSON input as
        binary tensor data. tritonclient's InferInput/InferResult machinery cost about
        as much per call as all of the gateway's own work, for one byte tensor."""
        from tritonclient.utils import InferenceServerException

        payload = json.dumps(inputs, ensure_ascii=False).encode()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": INPUT_JSON,
                        "shape": [len(payload)],
                        "datatype": "UINT8",
                        "parameters": {"binary_data_size": len(payload)},
                    }
                ],
                "outputs": [{"name": OUTPUT_JSON, "parameters": {"binary_data": True}}],
            }
        ).encode()
        session = self._session_now()
        try:
            async with session.post(
                f"http://{self.url}/v2/models/{dep.model}/infer",
                data=header + payload,
                headers={
                    "Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream",
                },
            ) as resp:
                body = await resp.read()
                status, length = resp.status, resp.headers.get("Inference-Header-Content-Length")
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

    def _session_now(self) -> Any:
        if self._closed:
            raise RuntimeDown("the triton runtime is shut down", retry_after=self.retry_after)
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=64)
            )
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

    def _wrapper_repository(self, dep: _Deployment) -> Path:
        if self.repository is None:
            raise NotDeployable(
                f"{dep.target.id}: wrapper bindings need the triton runtime's `repository` "
                "(the server's model repository); or bind an existing model with `model`"
            )
        if dep.target.model_uri is None or self.context.tracking_uri is None:
            raise NotDeployable(f"{dep.target.id}: no MLflow model to put on Triton")
        return self.repository

    async def _deploy_wrapper(self, dep: _Deployment) -> None:
        repository = self._wrapper_repository(dep)
        current = await asyncio.to_thread(entry_is_current, repository, dep.target)
        if current and await self._model_ready(dep.model):
            return
        if not current:
            await asyncio.to_thread(self._write_entry, dep.target)
        await self._load(dep)

    def _write_entry(self, target: Target) -> None:
        from .loading import download_model

        assert self.repository is not None and target.model_uri is not None
        assert self.context.tracking_uri is not None
        files = download_model(
            target.model_uri, self.context.tracking_uri, self.context.registry_uri
        )
        write_wrapper_entry(self.repository, target, Path(files))

    async def _reload(self, dep: _Deployment) -> None:
        """Load ``dep`` again (rewriting a wrapper entry that went missing), once for all
        the calls that found it gone; a call that gives up waiting leaves it loading."""
        task = self._loading.get(dep.model)
        if task is None or task.done():
            task = asyncio.ensure_future(self._restore(dep))
            self._loading[dep.model] = task
        await asyncio.shield(task)

    async def _restore(self, dep: _Deployment) -> None:
        async with self._locks.setdefault(dep.model, asyncio.Lock()):
            if not dep.passthrough and not await asyncio.to_thread(
                entry_is_current, self._wrapper_repository(dep), dep.target
            ):
                await asyncio.to_thread(self._write_entry, dep.target)
            # Even a model Triton says is ready: loading it again replaces a dead stub.
            await self._load(dep)

    async def _load(self, dep: _Deployment) -> None:
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
