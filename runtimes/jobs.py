"""Asynchronous invocations: jobs kept in the node's store until they are done.

``submit`` writes a queued job and returns at once (HTTP 202). Worker tasks claim
queued jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so gateways sharing a store
share the queue), run them through the gateway and store the output or the problem.
A claimed job holds a lease (its timeout plus a grace period): if its node dies
mid-run, the lease runs out and another worker runs it again, so delivery is
at-least-once. A node stopping cleanly puts its running jobs back in the queue. A
runtime that is down (503) delays the job and retries it, up to ``max_attempts``.
When a job has a callback URL, its final representation is POSTed there (retried
with backoff, and again after a restart until delivered or given up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa

from yunnao.plugins.errors import NotFound, YunnaoError
from yunnao.registry.access import Identity
from yunnao.registry.db import row_write
from yunnao.registry.problems import problem_of
from yunnao.registry.tables import Job, utcnow

from .base import RuntimeDown
from .gateway import Call, Gateway, target_for
from .metrics import Metrics

log = logging.getLogger("yunnao.jobs")

JOB = Job.__table__  # Core, for claims that must be one statement each


def identity_data(identity: Identity) -> dict[str, Any]:
    data = dataclasses.asdict(identity)
    data["scopes"] = list(identity.scopes)
    if identity.capabilities is not None:
        data["capabilities"] = list(identity.capabilities)
    return data


def identity_from(data: dict[str, Any]) -> Identity:
    known = {f.name for f in dataclasses.fields(Identity)}
    values = {k: v for k, v in data.items() if k in known}
    values["scopes"] = tuple(values.get("scopes") or ())
    if values.get("capabilities") is not None:
        values["capabilities"] = tuple(values["capabilities"])
    return Identity(**values)


def representation(job: Any) -> dict[str, Any]:
    """A job as callers see it (``GET /v1/jobs/{id}`` and callbacks)."""
    out: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "capability": f"{job.namespace}/{job.name}@{job.version}",
        "attempts": job.attempts,
        "request_id": job.request_id,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if job.status == "succeeded":
        out["output"] = job.output
    if job.status == "failed":
        out["error"] = job.error
    if job.callback_url:
        out["callback"] = {"url": job.callback_url, "status": job.callback_status}
    return out


class Jobs:
    def __init__(
        self,
        engine: sa.Engine,
        gateway: Gateway,
        metrics: Metrics,
        *,
        workers: int = 2,
        lease_grace: float = 30.0,
        max_attempts: int = 5,
        poll: float = 0.5,
        callback_client: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.metrics = metrics
        self.workers = workers
        self.lease_grace = lease_grace
        self.max_attempts = max_attempts
        self.poll = poll
        self._wake = asyncio.Event()
        self._client_factory = callback_client or (lambda: httpx.AsyncClient(timeout=10))

    # ------------------------------------------------------------ API side

    def submit(
        self,
        call: Call,
        identity: Identity,
        inputs: Any,
        *,
        timeout: float,
        callback_url: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        """Queue ``call``; the job's representation. (Input already validated.)"""
        now = utcnow()
        row = {
            "id": uuid.uuid4().hex,
            "namespace": call.target.namespace,
            "name": call.target.name,
            "version": call.target.version,
            "caller": identity_data(identity),
            "input": inputs,
            "timeout": timeout,
            "callback_url": callback_url,
            "request_id": request_id,
            "status": "queued",
            "attempts": 0,
            "not_before": now,
            "callback_status": "pending" if callback_url else None,
            "callback_attempts": 0,
            "created_at": now,
        }
        with row_write(self.engine) as conn:
            conn.execute(sa.insert(JOB), row)
            job = conn.execute(sa.select(JOB).where(JOB.c.id == row["id"])).one()
        self.metrics.jobs.labels("queued").inc()
        return representation(job)

    def wake(self) -> None:
        """Tell idle workers in this process that a job was queued."""
        self._wake.set()

    def get(self, identity: Identity, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            job = conn.execute(sa.select(JOB).where(JOB.c.id == job_id)).first()
        if job is None:
            raise NotFound(f"no job {job_id}")
        owner = job.caller.get("subject")
        # Someone else's job looks the same as no job (admins see all).
        if owner is not None and owner != identity.subject and identity.role != "admin":
            raise NotFound(f"no job {job_id}")
        return representation(job)

    # ------------------------------------------------------------ workers

    async def run(self) -> None:
        """Run the workers and the callback sender until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._worker)
            tg.start_soon(self._callbacks)

    async def _idle(self) -> None:
        self._wake.clear()
        with anyio.move_on_after(self.poll):
            await self._wake.wait()

    async def _worker(self) -> None:
        while True:
            try:
                job = await anyio.to_thread.run_sync(self._claim)
            except sa.exc.SQLAlchemyError:
                log.exception("could not claim a job; retrying")
                job = None
            if job is None:
                await self._idle()
                continue
            try:
                await self._execute(job)
            except (sa.exc.SQLAlchemyError, OSError):
                # The store failed while recording the outcome: the job stays claimed
                # and runs again when its lease runs out. The worker goes on.
                log.exception("job %s: could not record its outcome", job.id)
            except anyio.get_cancelled_exc_class():
                # Stopping: hand the job back rather than waiting for its lease to expire.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._requeue, job.id, 0.0, True)
                raise

    def _claim(self) -> Any:
        now = utcnow()
        due = sa.or_(
            sa.and_(JOB.c.status == "queued", JOB.c.not_before <= now),
            sa.and_(JOB.c.status == "running", JOB.c.lease_until < now),
        )
        stmt = sa.select(JOB).where(due).order_by(JOB.c.created_at).limit(1)
        if self.engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        with row_write(self.engine) as conn:
            job = conn.execute(stmt).first()
            if job is None:
                return None
            if job.status == "running":
                log.warning("job %s: its lease ran out (node stopped?); running it again", job.id)
            lease = now + timedelta(seconds=job.timeout + self.lease_grace)
            conn.execute(
                sa.update(JOB)
                .where(JOB.c.id == job.id)
                .values(
                    status="running",
                    attempts=JOB.c.attempts + 1,
                    lease_until=lease,
                    started_at=now,
                )
            )
            return conn.execute(sa.select(JOB).where(JOB.c.id == job.id)).one()

    async def _execute(self, job: Any) -> None:
        identity = identity_from(job.caller)
        try:
            resolution = await anyio.to_thread.run_sync(
                self.gateway.store.resolve, job.namespace, job.name, job.version
            )
            version = resolution.version
            call = Call(target_for(resolution), version.status, resolution.classification)
            output = await self.gateway.invoke(
                identity, call, job.input, timeout=job.timeout, request_id=job.request_id,
                mode="async",
            )  # fmt: skip
        except RuntimeDown as exc:
            if job.attempts < self.max_attempts:
                delay = float(exc.retry_after or 5) * job.attempts
                log.warning("job %s: %s; retrying in %g s", job.id, exc.detail, delay)
                await anyio.to_thread.run_sync(self._requeue, job.id, delay, False)
                self.metrics.jobs.labels("retried").inc()
                return
            await self._finish(job.id, error=problem_of(exc))
        except YunnaoError as exc:
            await self._finish(job.id, error=problem_of(exc))
        else:
            await self._finish(job.id, output=output)

    def _requeue(self, job_id: str, delay: float, release: bool) -> None:
        values: dict[str, Any] = {
            "status": "queued",
            "lease_until": None,
            "not_before": utcnow() + timedelta(seconds=delay),
        }
        if release:  # handed back on shutdown: this attempt does not count
            values["attempts"] = JOB.c.attempts - 1
        with row_write(self.engine) as conn:
            conn.execute(
                sa.update(JOB).where(JOB.c.id == job_id, JOB.c.status == "running").values(values)
            )

    async def _finish(
        self, job_id: str, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        status = "failed" if error is not None else "succeeded"

        def write() -> None:
            with row_write(self.engine) as conn:
                conn.execute(
                    sa.update(JOB)
                    .where(JOB.c.id == job_id)
                    .values(
                        status=status,
                        output=output,
                        error=error,
                        finished_at=utcnow(),
                        lease_until=None,
                    )
                )

        await anyio.to_thread.run_sync(write)
        self.metrics.jobs.labels(status).inc()
        self._wake.set()  # the callback sender may have work now

    # ------------------------------------------------------------ callbacks

    async def _callbacks(self) -> None:
        async with self._client_factory() as client:
            while True:
                try:
                    due = await anyio.to_thread.run_sync(self._due_callbacks)
                    for job in due:
                        await self._deliver(client, job)
                except (sa.exc.SQLAlchemyError, OSError):
                    log.exception("callbacks: the store failed; retrying")
                    due = []
                if not due:
                    await anyio.sleep(self.poll)

    def _due_callbacks(self) -> list[Any]:
        now = utcnow()
        stmt = (
            sa.select(JOB)
            .where(
                JOB.c.callback_status == "pending",
                JOB.c.status.in_(("succeeded", "failed")),
                JOB.c.not_before <= now,
            )
            .order_by(JOB.c.finished_at)
            .limit(50)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    async def _deliver(self, client: httpx.AsyncClient, job: Any) -> None:
        attempt = job.callback_attempts + 1
        try:
            response = await client.post(job.callback_url, json=representation(job))
            delivered = response.status_code < 300
            why = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            delivered, why = False, f"{type(exc).__name__}: {exc}"
        if delivered:
            state, delay = "delivered", 0.0
        elif attempt >= self.max_attempts:
            state, delay = "failed", 0.0
            log.warning("job %s: giving up on callback %s (%s)", job.id, job.callback_url, why)
        else:
            state, delay = "pending", 2.0 ** (attempt - 1)
            log.info("job %s: callback %s failed (%s); retry in %g s", job.id, job.callback_url,
                     why, delay)  # fmt: skip

        def write() -> None:
            with row_write(self.engine) as conn:
                conn.execute(
                    sa.update(JOB)
                    .where(JOB.c.id == job.id)
                    .values(
                        callback_status=state,
                        callback_attempts=attempt,
                        not_before=utcnow() + timedelta(seconds=delay),
                    )
                )

        await anyio.to_thread.run_sync(write)
