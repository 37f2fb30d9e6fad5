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
   in one transaction), bound to the ``sandbox`` runtime on the package's environment;
6. **record** the package.

When any step fails, the job fails with the problem, and nothing of it remains: no
registry entry, no MLflow version, no unpacked code, no environment no package uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from yunnao.plugins.errors import Conflict, YunnaoError

from ..db import row_write
from ..problems import problem_of
from ..publishing import Publisher
from ..tables import Package, utcnow
from . import archive as archives
from . import builder
from .environments import Environments
from .inspection import inspect_package
from .jobs import PublishJobs
from .uploaded import Uploaded

log = logging.getLogger("yunnao.packages")

PACKAGE = Package.__table__  # type: ignore[attr-defined]


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
    ) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.environments = environments
        self.root = root  # <data_dir>/packages
        self.max_bytes = max_bytes
        self.enforce = enforce
        self.poll = poll
        self._wake = asyncio.Event()

    @property
    def engine(self) -> sa.Engine:
        return self.jobs.engine

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The loop: claim a queued job, run it, repeat; sleep until woken or ``poll``."""
        while True:
            job = await anyio.to_thread.run_sync(self.jobs.claim)
            if job is not None:
                await anyio.to_thread.run_sync(self.execute, job)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    # ------------------------------------------------------------ one job

    def execute(self, job: Any) -> None:
        def step(name: str, message: str = "") -> None:
            self.jobs.step(job.id, name, message)

        try:
            published = self._publish(job, step)
        except YunnaoError as exc:
            self.jobs.finish(job.id, error=problem_of(exc))
        except Exception:
            error_id = uuid.uuid4().hex[:16]
            log.exception("publish job %s failed (error id %s)", job.id, error_id)
            self.jobs.finish(
                job.id,
                error={
                    "type": "https://yunnao.dev/problems/internal-error",
                    "title": "Internal error",
                    "status": 500,
                    "detail": f"publishing failed; quote error id {error_id} to the operator",
                    "error_id": error_id,
                },
            )
        else:
            self.jobs.finish(job.id, result=published)

    def _publish(self, job: Any, step: Callable[[str, str], None]) -> list[dict[str, Any]]:
        upload = self.jobs.upload_path(job.id)
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
                Uploaded(spec, code_dir, env.key, env.installed) for spec in inspection.capabilities
            ]
            names = ", ".join(f"{c.name} {c.version}" for c in caps)
            step("inspected", f"{len(caps)} capabilities, examples passed: {names}")
            published = self.publisher.publish_all(
                caps, namespace=job.namespace, step=lambda s: step("publishing", s)
            )
            self._record(job, wheel, checked, env.key)
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

    def _known(self, sha256: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(PACKAGE.c.id).where(PACKAGE.c.id == sha256)).first()
        return found is not None

    def _record(self, job: Any, wheel: Any, checked: Any, env_key: str) -> None:
        with row_write(self.engine) as conn:
            conn.execute(
                sa.insert(PACKAGE).values(
                    id=checked.sha256,
                    namespace=job.namespace,
                    distribution=wheel.name,
                    version=wheel.version,
                    filename=job.filename,
                    size=checked.size,
                    environment=env_key,
                    uploaded_by=job.caller,
                    created_at=utcnow(),
                )
            )

    def _forget_unused_environments(self) -> None:
        with self.engine.connect() as conn:
            used = {r.environment for r in conn.execute(sa.select(PACKAGE.c.environment))}
        self.environments.remove_unused({k for k in used if k})
