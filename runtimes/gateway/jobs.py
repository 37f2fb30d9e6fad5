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

Callbacks reach only public addresses unless the node's operator allows more
(:mod:`.outbound`): the URL is checked when the job is queued and again, after
resolving its host, before each delivery, which then connects to the checked address.
Deliveries run concurrently, at most a few at once per host, each attempt bounded by a
short timeout, so slow or dead targets delay only their own callbacks.

A job belongs to its caller: the subject together with the credential's issuer and the
linked node that forwarded it, so the same subject name from another issuer is someone
else. Node admins see every job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa

from yunnao.plugins.errors import FieldError, NotFound, RuntimeDown, ValidationFailed, YunnaoError
from yunnao.registry.access import Action, Entry, Identity, decide
from yunnao.registry.db import row_write
from yunnao.registry.outbound import OutboundGuard, Refused, Unresolved
from yunnao.registry.problems import problem_of
from yunnao.registry.tables import Job, utcnow

from .calls import Call
from .core import Gateway
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
        if job.callback_error and job.callback_status != "delivered":
            out["callback"]["error"] = job.callback_error
    return out


def owns(identity: Identity, caller: dict[str, Any]) -> bool:
    """Is ``identity`` the caller that queued a job (``caller``: its stored identity)?
    The same subject, issued by the same issuer and forwarded by the same linked node
    (or by none). A job queued anonymously is anyone's who holds its id."""
    if caller.get("subject") is None:
        return True
    return (
        identity.subject == caller.get("subject")
        and identity.issuer == caller.get("issuer")
        and identity.peer == caller.get("peer")
    )


def _host_of(url: str) -> str:
    """Deliveries to one host share its slots: scheme, host and port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "?"
    return f"{parsed.scheme}://{parsed.host.lower()}:{parsed.port or ''}"


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
        outbound: OutboundGuard | None = None,
        callback_timeout: float = 5.0,
        callbacks_per_host: int = 4,
        callbacks_queued_per_host: int = 16,
        callbacks_queued: int = 256,
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.metrics = metrics
        self.workers = workers
        self.lease_grace = lease_grace
        self.max_attempts = max_attempts
        self.poll = poll
        self._wake = asyncio.Event()
        self.outbound = outbound or OutboundGuard()
        self.callback_timeout = callback_timeout
        self.callbacks_per_host = callbacks_per_host
        self.callbacks_queued_per_host = callbacks_queued_per_host
        self.callbacks_queued = callbacks_queued
        # A claimed callback is not claimed again (by any process sharing the store)
        # before its lease ends: time to wait for its host's slots, then one attempt.
        rounds = callbacks_queued_per_host // callbacks_per_host + 1
        self.callback_lease = rounds * (callback_timeout + 5.0)
        self._sending: dict[str, str] = {}  # job id -> host, claimed by this process
        self._host_slots: dict[str, anyio.Semaphore] = {}
        self._client_factory = callback_client or self._callback_client

    def _callback_client(self) -> httpx.AsyncClient:
        # No proxies from the environment (they would connect elsewhere than the checked
        # address), no redirects (a target could send the node inside), and a fresh
        # connection per delivery (a TLS connection is not reused for another host name
        # that happens to share the address).
        return httpx.AsyncClient(
            timeout=self.callback_timeout,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    # ------------------------------------------------------------ API side

    async def check_callback(self, url: str) -> str:
        """``url`` if callbacks may go there, or 422 naming ``callback_url``."""
        try:
            await self.outbound.aresolve(url)
        except Refused as exc:
            raise ValidationFailed(
                f"callback_url: {exc}", errors=[FieldError("callback_url", str(exc))]
            ) from None
        return url

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
        # Someone else's job looks the same as no job (this node's admins see all).
        if not owns(identity, job.caller or {}):
            node = Entry(self.gateway.store.node_id)
            if not decide(identity, Action.MANAGE_NODE, node).allowed:
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
            answer = await self.gateway.call(
                identity,
                job.namespace,
                f"{job.name}@{job.version}",
                job.input,
                timeout=job.timeout,
                request_id=job.request_id,
                mode="async",
                queued=True,
            )
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
            await self._finish(job.id, output=answer.output)

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
        """Claim due callbacks and deliver each in its own task, at most
        ``callbacks_per_host`` at once per host."""
        async with self._client_factory() as client, anyio.create_task_group() as tg:
            while True:
                try:
                    due = await anyio.to_thread.run_sync(self._claim_callbacks)
                except (sa.exc.SQLAlchemyError, OSError):
                    log.exception("callbacks: the store failed; retrying")
                    due = []
                for job in due:
                    self._sending[job.id] = _host_of(job.callback_url)
                    tg.start_soon(self._deliver, client, job)
                if not due:
                    await anyio.sleep(self.poll)

    def _claim_callbacks(self) -> list[Any]:
        """Due callbacks this process has room for (in all, and per host), oldest
        first, each claimed for :attr:`callback_lease` seconds."""
        room = self.callbacks_queued - len(self._sending)
        if room <= 0:
            return []
        now = utcnow()
        due = (
            sa.select(JOB.c.id, JOB.c.callback_url)
            .where(
                JOB.c.callback_status == "pending",
                JOB.c.status.in_(("succeeded", "failed")),
                JOB.c.not_before <= now,
            )
            .order_by(JOB.c.finished_at)
            .limit(2000)
        )
        queued = Counter(self._sending.values())
        picked = []
        with self.engine.connect() as conn:
            for job_id, url in conn.execute(due):
                host = _host_of(url)
                if job_id in self._sending or queued[host] >= self.callbacks_queued_per_host:
                    continue  # a slow host's backlog waits; other hosts' callbacks go on
                queued[host] += 1
                picked.append(job_id)
                if len(picked) >= room:
                    break
        if not picked:
            return []
        claimed = []
        lease = now + timedelta(seconds=self.callback_lease)
        with row_write(self.engine) as conn:
            for job_id in picked:
                done = conn.execute(
                    sa.update(JOB)
                    .where(
                        JOB.c.id == job_id,
                        JOB.c.callback_status == "pending",
                        JOB.c.not_before <= now,
                    )
                    .values(not_before=lease)
                )
                if done.rowcount == 1:  # not claimed by another process meanwhile
                    claimed.append(job_id)
            if not claimed:
                return []
            rows = conn.execute(sa.select(JOB).where(JOB.c.id.in_(claimed))).all()
        return sorted(rows, key=lambda r: r.finished_at)

    async def _deliver(self, client: httpx.AsyncClient, job: Any) -> None:
        host = self._sending[job.id]
        slots = self._host_slots.get(host)
        if slots is None:
            slots = self._host_slots[host] = anyio.Semaphore(self.callbacks_per_host)
        try:
            async with slots:
                await self._attempt(client, job)
        except (sa.exc.SQLAlchemyError, OSError):
            # The outcome was not recorded: the claim's lease runs out and it goes again.
            log.exception("job %s: could not record its callback's outcome", job.id)
        finally:
            del self._sending[job.id]
            if host not in self._sending.values():
                self._host_slots.pop(host, None)

    async def _attempt(self, client: httpx.AsyncClient, job: Any) -> None:
        attempt = job.callback_attempts + 1
        delivered, final = False, False
        try:
            target = await self.outbound.aresolve(job.callback_url)
        except Unresolved as exc:
            why = str(exc)
        except Refused as exc:
            # Checked when queued; refused now (the name resolves inside, or the
            # operator's allow-list changed): nothing is sent, and never will be.
            why, final = f"refused: {exc}", True
        else:
            url, headers, extensions = target.request()
            try:
                with anyio.fail_after(self.callback_timeout):
                    async with client.stream(
                        "POST",
                        url,
                        json=representation(job),
                        headers=headers,
                        extensions=extensions,
                    ) as response:  # the answer's body is not read
                        delivered = response.status_code < 300
                        why = f"HTTP {response.status_code}"
            except TimeoutError:
                why = f"no answer within {self.callback_timeout:g} s"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
        if delivered:
            state, delay, error = "delivered", 0.0, None
        elif final or attempt >= self.max_attempts:
            state, delay, error = "failed", 0.0, why
            log.warning("job %s: giving up on callback %s (%s)", job.id, job.callback_url, why)
        else:
            state, delay, error = "pending", 2.0 ** (attempt - 1), why
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
                        callback_error=error[:500] if error else None,
                        not_before=utcnow() + timedelta(seconds=delay),
                    )
                )

        await anyio.to_thread.run_sync(write)
