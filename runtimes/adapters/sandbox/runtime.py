"""The ``sandbox`` adapter, :class:`SandboxRuntime` (in the node process): each deployed
version runs in worker processes of its own inside a bubblewrap sandbox, which the
node calls over a persistent Unix-socket connection (see the package documentation)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yunnao.plugins.errors import InvocationTimeout, NotDeployable, RuntimeDown
from yunnao.registry.models import own_model_version
from yunnao.registry.packages import sandbox
from yunnao.registry.packages.environments import Environments

from ..base import RuntimeContext, RuntimeHealth, Target
from .binding import Binding, binding_of
from .process import WorkerFailed, WorkerProcess
from .settings import SandboxSettings

log = logging.getLogger("yunnao.runtimes.sandbox")

WORKER_MODULE = "yunnao.runtimes.adapters.sandbox.worker"
# The environment a worker starts with (bwrap clears it again and sets its own): never
# the node's, which may hold credentials.
WORKER_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(eq=False)
class Slot:
    """One worker position of a deployment: the worker in it, or its restart."""

    worker: WorkerProcess | None = None
    failures: int = 0  # in a row: crashes, kills after a timeout, failed starts
    restart_at: float = 0.0  # monotonic time the pending restart is due
    restarting: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Deployment:
    target: Target
    binding: Binding
    model_dir: Path
    sandbox: sandbox.Sandbox
    python: str  # the interpreter its workers run on
    slots: list[Slot] = field(default_factory=list)
    rotation: Any = field(default_factory=itertools.count)

    def pick(self) -> tuple[Slot, WorkerProcess] | None:
        """The live worker with the fewest calls in flight (ties in turn), if any."""
        best: tuple[Slot, WorkerProcess] | None = None
        start = next(self.rotation)
        count = len(self.slots)
        for i in range(count):
            slot = self.slots[(start + i) % count]
            worker = slot.worker
            if worker is not None and worker.alive:
                if best is None or worker.in_flight < best[1].in_flight:
                    best = (slot, worker)
                if worker.in_flight == 0:
                    break
        return best


class SandboxRuntime:
    """Runs capability versions in sandboxed worker processes of their own."""

    type = "sandbox"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        self.settings = SandboxSettings.parse(self.type, config)
        self.context = context
        self.models_dir = context.data_dir / "sandbox" / "models"
        self.envs_dir = context.data_dir.resolve() / "packages" / "envs"
        self._deployed: dict[str, Deployment] = {}  # by target slug
        self._locks: dict[str, asyncio.Lock] = {}
        self._limit = self.settings.max_message_mb * 1024 * 1024
        self._closed = False

    @property
    def bwrap(self) -> str | None:
        return sandbox.bwrap()

    def sandbox_key(self, target: Target) -> str:
        """Whose uid ``target``'s workers run as: the version at this node (another node
        on the machine serving the same version gets another uid, another process count)."""
        return f"{self.context.data_dir.resolve()}|{target.id}"

    # ------------------------------------------------------------ protocol

    async def deploy(self, target: Target) -> None:
        """Download the version's model files and start its workers; NotDeployable for
        a binding this node refuses, a model that is not the version's own, no
        bubblewrap (while enforced), or a model that does not load (its last line)."""
        current = self._deployed.get(target.slug)
        if current is not None and current.target == target:
            return
        async with self._locks.setdefault(target.slug, asyncio.Lock()):
            current = self._deployed.get(target.slug)
            if current is not None and current.target == target:
                return
            if self._closed:
                raise RuntimeDown("the sandbox runtime is shut down", retry_after=5)
            binding = binding_of(target, self.settings)
            self._require_bwrap(target)
            if current is not None:
                await self._release(current)
            dep = await self._prepare(target, binding)
            try:
                workers = await asyncio.gather(
                    *(self._start(dep) for _ in range(binding.workers)),
                    return_exceptions=True,
                )
                failed = [w for w in workers if isinstance(w, BaseException)]
                if failed:
                    for worker in workers:
                        if isinstance(worker, WorkerProcess):
                            await worker.stop("deploy failed")
                    raise _not_deployable(failed[0])
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, dep.model_dir, True)
                raise
            for worker in workers:
                assert isinstance(worker, WorkerProcess)
                slot = Slot(worker)
                worker.on_exit = self._on_exit(dep, slot)
                dep.slots.append(slot)
            self._deployed[target.slug] = dep
        log.info("deployed %s in %d sandboxed worker(s)", target.id, binding.workers)

    async def undeploy(self, target: Target) -> None:
        """Stop the version's workers and remove its model files."""
        async with self._locks.setdefault(target.slug, asyncio.Lock()):
            dep = self._deployed.get(target.slug)
            if dep is not None:
                await self._release(dep)

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        """Run the call on one of the version's workers within ``timeout`` seconds. A
        call that overruns it kills that worker (504; it is replaced); a worker that
        dies fails its calls in flight (500); none up: RuntimeDown (503)."""
        dep = self._deployed.get(target.slug)
        if dep is None or dep.target != target:
            await self.deploy(target)
            dep = self._deployed[target.slug]
        picked = dep.pick()
        if picked is None:
            raise self._restarting(dep)
        slot, worker = picked
        try:
            async with asyncio.timeout(timeout):
                output = await worker.call(inputs)
        except TimeoutError:
            worker.kill(f"a call overran its {timeout:g} s timeout")
            log.warning(
                "%s overran its %g s timeout; killed its worker (its last output: %r)",
                target.id,
                timeout,
                worker.output()[-2000:],
            )
            raise InvocationTimeout(
                f"{target.id} did not answer within {timeout:g} s; its sandboxed worker "
                "was killed and is being replaced"
            ) from None
        slot.failures = 0
        return output

    async def health(self) -> RuntimeHealth:
        """Serving unless department code cannot run here (no bubblewrap, enforced);
        the detail says whether workers are sandboxed and how many are up."""
        slots = [s for dep in self._deployed.values() for s in dep.slots]
        up = sum(1 for s in slots if s.worker is not None and s.worker.alive)
        workers = f"{up}/{len(slots)} worker(s) up"
        if self.bwrap is not None:
            return RuntimeHealth(True, f"sandboxed by bubblewrap ({self.bwrap}); {workers}")
        if self.settings.enforce:
            return RuntimeHealth(False, f"{_NO_BWRAP}; {workers}")
        return RuntimeHealth(
            True, f"bubblewrap is not installed: workers run UNSANDBOXED (enforce off); {workers}"
        )

    def describe(self) -> dict[str, Any]:
        """Type, sandboxing, limits, and each deployment's workers."""
        return {
            "type": self.type,
            "bwrap": self.bwrap,
            "enforce": self.settings.enforce,
            "allow_network": self.settings.allow_network,
            "deployed": sorted(self._deployed),
            "workers": {
                slug: [
                    {
                        "pid": s.worker.proc.pid if s.worker and s.worker.alive else None,
                        "failures": s.failures,
                    }
                    for s in dep.slots
                ]
                for slug, dep in sorted(self._deployed.items())
            },
        }

    async def close(self) -> None:
        """Stop every worker and remove the downloaded model files."""
        self._closed = True
        for dep in list(self._deployed.values()):
            await self._release(dep)

    # ------------------------------------------------------------ deployments

    def _require_bwrap(self, target: Target) -> None:
        if self.bwrap is None and self.settings.enforce:
            raise NotDeployable(f"{target.id}: {_NO_BWRAP}")

    async def _prepare(self, target: Target, binding: Binding) -> Deployment:
        """The deployment's model files (downloaded, copied where only its sandbox
        reads them) and its sandbox."""
        if not target.model_uri:
            raise NotDeployable(f"{target.id} has no MLflow model to run in a sandbox")
        if own_model_version(target.namespace, target.name, target.model_uri) is None:
            raise NotDeployable(
                f"{target.id}: its model_uri {target.model_uri!r} is not a version of this "
                f"node's own model {target.namespace}.{target.name}, so it is not loaded"
            )
        if self.context.tracking_uri is None:
            raise NotDeployable(f"{target.id}: this node has no MLflow to load it from")
        box = sandbox.Sandbox(
            key=self.sandbox_key(target),
            network=binding.network,
            limits=binding.limits,
            env=(("PYTHONUNBUFFERED", "1"),),
        )
        model_dir = await asyncio.to_thread(self._fetch, target, box.uid)
        try:
            python, paths = self._environment(target, binding, model_dir)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, model_dir, True)
            raise
        box = sandbox.Sandbox(
            key=box.key,
            read_only=(model_dir, *paths),
            network=box.network,
            limits=box.limits,
            env=box.env,
        )
        return Deployment(target, binding, model_dir, box, python)

    def _environment(
        self, target: Target, binding: Binding, model_dir: Path
    ) -> tuple[str, tuple[Path, ...]]:
        """The interpreter the workers run and the environment they see: the one the
        node wrote into the model's own metadata when it published the uploaded package
        (the binding's ``environment``, which its author may set, only for models
        without one, and refused where it names another)."""
        from ..loading import uploaded_of

        marker = uploaded_of(model_dir)
        key = binding.environment
        if marker is not None:
            if key is not None and key != marker["environment"]:
                raise NotDeployable(
                    f"{target.id}: its binding names environment {key[:12]}, but its model "
                    f"was published on environment {marker['environment'][:12]}; remove "
                    "`environment` from the binding (the model's own is used)"
                )
            key = marker["environment"]
        if not key:
            return sys.executable, ()
        try:
            env = Environments(self.envs_dir, index_url="").get(key)
        except ValueError:
            env = None  # not a key at all
        if env is None:
            raise NotDeployable(
                f"{target.id}: its package environment {key[:12]} is not built at this "
                "node (publish the package again)"
            )
        return str(env.python), (env.path,)

    def _fetch(self, target: Target, uid: int) -> Path:
        """Copy the version's model files to ``<data_dir>/sandbox/models/<slug>``, made
        readable by its sandbox's user only (when the node runs as root)."""
        from ..loading import download_model

        assert target.model_uri is not None and self.context.tracking_uri is not None
        files = Path(
            download_model(target.model_uri, self.context.tracking_uri, self.context.registry_uri)
        )
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = self.models_dir / f".{target.slug}.{uuid.uuid4().hex[:8]}"
        # A copy: MLflow's local store hands out its own files, never to be touched.
        # Links stay links: followed here, one could copy a node file into the sandbox.
        shutil.copytree(files, staging, symlinks=True)
        _hand_over(staging, uid if self.bwrap is not None and os.geteuid() == 0 else None)
        dest = self.models_dir / target.slug
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        return dest

    async def _start(self, dep: Deployment) -> WorkerProcess:
        python = dep.python
        threads = dep.binding.threads

        def argv(fd: int) -> list[str]:
            worker = [python, "-m", WORKER_MODULE, "--fd", str(fd)]
            worker += ["--model", str(dep.model_dir), "--threads", str(threads)]
            return sandbox.command(dep.sandbox, worker, enforce=self.bwrap is not None)

        return await WorkerProcess.start(
            dep.target.id,
            argv,
            WORKER_ENV,
            start_timeout=self.settings.start_timeout,
            limit=self._limit,
        )

    async def _release(self, dep: Deployment) -> None:
        if self._deployed.get(dep.target.slug) is dep:
            del self._deployed[dep.target.slug]
        for slot in dep.slots:
            if slot.restarting is not None:
                slot.restarting.cancel()
        for slot in dep.slots:
            if slot.worker is not None:
                await slot.worker.stop("undeployed")
        await asyncio.to_thread(shutil.rmtree, dep.model_dir, True)
        log.info("released %s from the sandbox", dep.target.id)

    # ------------------------------------------------------------ restarts

    def _on_exit(self, dep: Deployment, slot: Slot) -> Callable[[WorkerProcess], None]:
        def ended(worker: WorkerProcess) -> None:
            if slot.worker is not worker or self._deployed.get(dep.target.slug) is not dep:
                return  # released meanwhile
            slot.worker = None
            slot.failures += 1
            why = worker.killed or worker.ended
            log.warning(
                "%s: replacing its sandboxed worker (%s; failure %d in a row)",
                dep.target.id,
                why,
                slot.failures,
            )
            slot.restarting = asyncio.get_running_loop().create_task(self._revive(dep, slot))

        return ended

    def _backoff(self, failures: int) -> float:
        """No wait after a first failure, then ``restart_backoff`` doubling, capped."""
        if failures <= 1:
            return 0.0
        wait = self.settings.restart_backoff * 2 ** (failures - 2)
        return min(wait, self.settings.restart_backoff_max)

    async def _revive(self, dep: Deployment, slot: Slot) -> None:
        """Start the slot's worker again after its backoff, until one comes up or the
        deployment is released."""
        while not self._closed and self._deployed.get(dep.target.slug) is dep:
            delay = self._backoff(slot.failures)
            slot.restart_at = time.monotonic() + delay
            await asyncio.sleep(delay)
            try:
                worker = await self._start(dep)
            except WorkerFailed as exc:
                slot.failures += 1
                log.warning("%s: worker restart failed: %s", dep.target.id, exc.detail)
                continue
            if self._closed or self._deployed.get(dep.target.slug) is not dep:
                await worker.stop("released while starting")
                return
            worker.on_exit = self._on_exit(dep, slot)
            slot.worker = worker
            slot.restarting = None
            log.info("%s: sandboxed worker started again", dep.target.id)
            return

    def _restarting(self, dep: Deployment) -> RuntimeDown:
        due = min((s.restart_at for s in dep.slots), default=0.0)
        wait = max(0.0, due - time.monotonic())
        return RuntimeDown(
            f"{dep.target.id}: its sandboxed worker is being restarted",
            retry_after=max(1, math.ceil(wait + 1)),
        )


_NO_BWRAP = (
    "bubblewrap (bwrap) is not installed, so department code cannot run sandboxed; "
    "install it (Debian package `bubblewrap`), or set the sandbox runtime setting "
    '`enforce` to false (YUNNAO_RUNTIMES={"sandbox": {"enforce": false}}) to trust '
    "uploaded code without a sandbox"
)


def _not_deployable(exc: BaseException) -> BaseException:
    if isinstance(exc, WorkerFailed):
        if exc.traceback:
            log.warning("%s\n%s", exc.detail, exc.traceback)
        return NotDeployable(exc.detail)
    return exc


def _hand_over(root: Path, uid: int | None) -> None:
    """Make ``root`` readable by the sandbox: owned by its user and readable by it alone
    (``uid``), or readable by everyone where the node cannot change owners."""
    for folder, _dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            if os.path.islink(name):
                continue  # never change what a link points to
            is_dir = name == folder
            if uid is not None:
                os.chown(name, uid, uid, follow_symlinks=False)
                os.chmod(name, 0o500 if is_dir else 0o400)
            else:
                os.chmod(name, 0o755 if is_dir else 0o644)
