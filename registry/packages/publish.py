"""Running publish jobs: from a received archive to published versions, all or nothing.

The node's publisher loop claims queued jobs one at a time and runs their steps in a
worker thread, each step logged on the job:

1. **check** the archive (:mod:`.archive`): size, members, links, metadata, hash;
2. **unpack** a wheel under ``<data_dir>/packages/code/<sha256>`` (an sdist is first
   built into a wheel in the sandbox, :mod:`.builder`);
3. **environment**: the package's requirements resolved against the node's pins from the
   configured index and installed, or an environment with the same resolved set reused
   (:mod:`.environments`);
4. **inspect** the package in the sandbox: its plugins loaded, every capability checked
   and every example run (:mod:`.inspection`);
5. **publish** every capability into the upload's namespace (MLflow, then the registry
   in one transaction), bound to the ``sandbox`` runtime on the package's environment,
   and **record** the package with the versions it published in that same transaction.

When any step fails, the job fails with the problem, and nothing of it remains: no
registry entry, no MLflow version, no unpacked code, no environment no package uses.

Between jobs the loop tidies up (:mod:`.upkeep`), reading first and writing only when
there is something to do: a job left running by a node that stopped is ended (failed,
``the node restarted during this job; upload again``, with what it made removed; or
succeeded, when it stopped after the commit), and a package none of whose versions is
live any more (retired, or its capability deleted) loses its row and unpacked code, and
its environment when no other package uses it. A running job's runner says it is alive
every ``heartbeat`` seconds; one silent for ``grace`` seconds, or a process of this host
that is gone, has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa

from yunnao.plugins.errors import Conflict, Unavailable, YunnaoError

from ..problems import problem_of
from ..publishing import Publisher
from ..tables import Package, utcnow
from . import archive as archives
from . import bento as bentos
from . import builder, upkeep
from .environments import Environments
from .inspection import inspect_package
from .jobs import JOB, PublishJobs, abandoned, runner_id
from .uploaded import Uploaded

log = logging.getLogger("yunnao.packages")

PACKAGE = Package.__table__  # type: ignore[attr-defined]
RESTARTED = "the node restarted during this job; upload again"


class UploadPublisher:
    """Publishes uploaded packages, one job at a time."""

    def __init__(
        self,
        jobs: PublishJobs,
        publisher: Publisher,
        environments: Environments,
        root: Path,
        *,
        max_bytes: int,
        enforce: bool = True,
        poll: float = 2.0,
        heartbeat: float = 10.0,
        grace: float = 60.0,
        sweep_every: float = 300.0,
    ) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.environments = environments
        self.root = root  # <data_dir>/packages
        self.max_bytes = max_bytes
        self.enforce = enforce
        self.poll = poll
        self.heartbeat = heartbeat  # seconds between "still running" of a job
        self.grace = grace  # a runner elsewhere silent this long has stopped
        self.sweep_every = sweep_every  # look for unused packages at least this often
        self.runner = runner_id()
        self._wake = asyncio.Event()
        self._swept_at: tuple[int, float] | None = None  # (store generation, monotonic)

    @property
    def engine(self) -> sa.Engine:
        return self.jobs.engine

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The loop: tidy up and claim a queued job (:meth:`tick`), run it while saying
        so every ``heartbeat`` seconds, repeat; sleep until woken or ``poll``."""
        while True:
            try:
                job = await anyio.to_thread.run_sync(self.tick)
            except Exception:  # the store is down, say: try again at the next poll
                log.exception("the upload publisher could not poll")
                job = None
            if job is not None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._beat, job.id)
                    await anyio.to_thread.run_sync(self.execute, job)
                    tg.cancel_scope.cancel()
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    def tick(self) -> Any | None:
        """One turn of the loop, off the request path: end jobs whose node stopped, remove
        packages none of whose versions is live, then claim the oldest queued job (None
        when there is none). Idle, it only reads: it writes when it has work."""
        self.recover()
        self.sweep()
        return self.jobs.claim(self.runner)

    async def _beat(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await anyio.to_thread.run_sync(self.jobs.heartbeat, job_id, self.runner)
            except Exception:
                log.exception("publish job %s: heartbeat failed", job_id)

    # ------------------------------------------------------------ upkeep

    def recover(self) -> list[str]:
        """End the running jobs whose runner stopped (see
        :func:`~yunnao.registry.packages.jobs.abandoned`): succeeded when their package
        was recorded, else failed (``the node restarted during this job``) with
        everything they made removed. The ids of the jobs ended."""
        ended = []
        now = utcnow()
        for job in self.jobs.running_elsewhere(self.runner):
            if abandoned(job, now=now, grace=self.grace):
                self._end_abandoned(job)
                ended.append(job.id)
        return ended

    def _end_abandoned(self, job: Any) -> None:
        result = upkeep.recorded_result(self.engine, job)
        if result is not None:
            done = "the node stopped after publishing; the versions stand"
            self.jobs.finish(job.id, result=result, runner=job.runner, message=done)
            return
        undone = upkeep.undo_mlflow(
            self.publisher.models, self.engine, job.namespace, upkeep.logged_by(job)
        )
        if job.package_id and not upkeep.package_known(self.engine, job.package_id):
            shutil.rmtree(self.root / "code" / job.package_id, ignore_errors=True)
        shutil.rmtree(self.root / "work" / job.id, ignore_errors=True)
        self._forget_unused_environments()
        problem = problem_of(Unavailable(RESTARTED))
        if self.jobs.finish(job.id, error=problem, runner=job.runner, message=RESTARTED):
            log.warning(
                "publish job %s was left running by a stopped node; failed it and removed "
                "what it made (%d MLflow run(s))",
                job.id,
                undone,
            )

    def sweep(self, *, force: bool = False) -> list[str]:
        """Remove the packages none of whose versions is live: their rows and code, and
        each environment no other package uses. Looks (a read) after each write of this
        node's store and every ``sweep_every`` seconds. The ids of the removed."""
        generation = self.publisher.store.generation
        now = time.monotonic()
        last = self._swept_at
        fresh = last is not None and last[0] == generation and now - last[1] < self.sweep_every
        if fresh and not force:
            return []
        self._swept_at = (generation, now)
        removed = []
        for package in upkeep.unused_packages(self.engine):
            env = upkeep.forget_package(self.engine, self.root, package.id)
            if env is not None and env not in upkeep.environments_in_use(self.engine):
                self.environments.remove(env)
            removed.append(package.id)
            log.info(
                "removed package %s: none of its versions is live (environment %s %s)",
                package.id[:12],
                (package.environment or "-")[:12],
                "removed" if env is not None else "kept",
            )
        return removed

    # ------------------------------------------------------------ one job

    def execute(self, job: Any) -> None:
        def step(name: str, message: str = "") -> None:
            self.jobs.step(job.id, name, message)

        try:
            published = self._publish(job, step)
        except YunnaoError as exc:
            self.jobs.finish(job.id, error=problem_of(exc), runner=self.runner)
        except Exception:
            error_id = uuid.uuid4().hex[:16]
            log.exception("publish job %s failed (error id %s)", job.id, error_id)
            self.jobs.finish(
                job.id,
                runner=self.runner,
                error={
                    "type": "https://yunnao.dev/problems/internal-error",
                    "title": "Internal error",
                    "status": 500,
                    "detail": f"publishing failed; quote error id {error_id} to the operator",
                    "error_id": error_id,
                },
            )
        else:
            self.jobs.finish(job.id, result=published, runner=self.runner)

    def _publish(self, job: Any, step: Callable[[str, str], None]) -> list[dict[str, Any]]:
        upload = self.jobs.upload_path(job.id)
        if bentos.is_bento(job.filename):
            return self._publish_bento(job, upload, step)
        checked = archives.check_archive(upload, filename=job.filename, max_bytes=self.max_bytes)
        step("checked", f"{checked.name} {checked.version} ({checked.kind}, "
             f"{len(checked.members)} files, sha256 {checked.sha256})")  # fmt: skip
        if self._known(checked.sha256):
            raise Conflict(
                f"this archive (sha256 {checked.sha256}) has been published already; "
                "a new version needs a new version number"
            )
        work = self.root / "work" / job.id
        code_dir = self.root / "code" / checked.sha256
        try:
            wheel = checked
            if checked.kind == "sdist":
                step("building", "building the sdist into a wheel in the sandbox")
                wheel = builder.build_wheel(
                    checked,
                    work,
                    key=f"build:{checked.sha256}",
                    max_bytes=self.max_bytes,
                    enforce=self.enforce,
                )
            archives.unpack(wheel, code_dir)
            step("unpacked", f"{len(wheel.members)} files")
            env = self.environments.ensure(
                wheel.requires_dist, log=lambda message: step("environment", message)
            )
            step("inspecting", "loading the plugins and running their examples in the sandbox")
            inspection = inspect_package(
                code_dir,
                wheel.dist_info or "",
                env,
                key=f"inspect:{checked.sha256}",
                enforce=self.enforce,
            )
            caps = [
                Uploaded(spec, code_dir, env.key, env.installed, checked.sha256)
                for spec in inspection.capabilities
            ]
            names = ", ".join(f"{c.name} {c.version}" for c in caps)
            step("inspected", f"{len(caps)} capabilities, examples passed: {names}")
            addresses = [(job.namespace, c.name, c.version) for c in caps]
            published = self.publisher.publish_all(
                caps,
                namespace=job.namespace,
                step=lambda s: step("publishing", s),
                also=lambda session: self._record(session, job, wheel, checked, env.key, addresses),
            )
        except BaseException:
            shutil.rmtree(code_dir, ignore_errors=True)  # this job's: the sha was new
            self._forget_unused_environments()
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        step("published", ", ".join(p.version.id for p in published))
        return [
            {"capability": p.version.id, "model_uri": p.model_uri, "aliases": list(p.aliases)}
            for p in published
        ]

    def _publish_bento(
        self, job: Any, upload: Path, step: Callable[[str, str], None]
    ) -> list[dict[str, Any]]:
        """An exported Bento: checked, unpacked under ``code/<sha256>/bento``, its
        requirements resolved into an environment, its service's APIs read in the
        sandbox, each published bound to the uploaded Bento (served in the sandbox by
        the ``bentoml`` runtime), and the package recorded, in one transaction."""
        checked = bentos.check_bento(upload, filename=job.filename, max_bytes=self.max_bytes)
        step("checked", f"Bento {checked.name} {checked.version} ({checked.service}, "
             f"{len(checked.members)} files, sha256 {checked.sha256})")  # fmt: skip
        if self._known(checked.sha256):
            raise Conflict(
                f"this archive (sha256 {checked.sha256}) has been published already; "
                "a new version needs a new version number"
            )
        home = bentos.bento_home(self.root, checked.sha256)
        try:
            bentos.unpack_bento(checked, home / "bento")
            step("unpacked", f"{len(checked.members)} files")
            env = self.environments.ensure(
                checked.requirements, log=lambda message: step("environment", message)
            )
            step("inspecting", "loading the Bento's service in the sandbox")
            apis = bentos.inspect_bento(
                home / "bento", env, key=f"inspect:{checked.sha256}", enforce=self.enforce
            )
            specs = bentos.capability_specs(checked, apis)
            step("inspected", f"{len(specs)} APIs: {', '.join(a.api for a in apis)}")
            store = self.publisher.store
            for name, spec in specs:
                if spec.version in store.version_numbers(job.namespace, name):
                    raise Conflict(
                        f"{job.namespace}/{name}@{spec.version} already exists; versions are "
                        "immutable: build the Bento with a new --version"
                    )
            bentos.write_record(home, checked, namespace=job.namespace, environment=env.key)
            addresses = [(job.namespace, name, spec.version) for name, spec in specs]
            step("publishing", "recording the registry entries")
            store.publish_many(
                [(job.namespace, name, spec) for name, spec in specs],
                also=lambda session: self._record(
                    session, job, checked, checked, env.key, addresses
                ),
            )
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)  # this job's: the sha was new
            self._forget_unused_environments()
            raise
        published = [f"{ns}/{name}@{version}" for ns, name, version in addresses]
        step("published", ", ".join(published))
        return [{"capability": p, "model_uri": None, "aliases": []} for p in published]

    def _known(self, sha256: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(PACKAGE.c.id).where(PACKAGE.c.id == sha256)).first()
        return found is not None

    def _record(
        self, session: Any, job: Any, wheel: Any, checked: Any, env_key: str, published: list
    ) -> None:
        """The package and its versions, in the registry entries' transaction; refused
        (so nothing is published) when this runner no longer holds the job."""
        held = session.execute(
            sa.select(JOB.c.id).where(
                JOB.c.id == job.id, JOB.c.status == "running", JOB.c.runner == self.runner
            )
        ).first()
        if held is None:
            raise Unavailable(f"publish job {job.id} was taken over (its runner seemed stopped)")
        upkeep.record_package(session, job, wheel, checked, env_key, published)

    def _forget_unused_environments(self) -> None:
        with self.engine.connect() as conn:
            used = {r.environment for r in conn.execute(sa.select(PACKAGE.c.environment))}
        self.environments.remove_unused({k for k in used if k})
