"""Sending the outbox: each subscription's deliveries in order, signed, retried with
backoff (the node's leader runs this; one per store).

A subscription's oldest pending delivery goes first; while it fails, the later ones
wait behind it, so a receiver that was down gets every event in order once it is back
(and a restart loses nothing: the outbox is rows). A delivery is retried after
``base``, 2×, 4×… seconds up to ``max_delay``, and given up (``failed``) once it is
older than ``give_up_after``; then the subscription's next one goes. A 2xx answer
delivers it. Each attempt is signed anew (``webhook-timestamp`` is the attempt's
time), with the same ``webhook-id``, and logged; delivered deliveries stay in the
log 30 days.

The URL passes the node's outbound guard before every attempt (a name that now
resolves inside is refused, and never tried), and the request goes to the checked
address (no DNS rebinding). Subscriptions are sent to in parallel, at most
``per_host`` at a time to one host, each request bounded by ``timeout``.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Signer

from ..db import row_write
from ..outbound import OutboundGuard, Refused, Unresolved
from ..tables import Webhook, WebhookAttempt, WebhookDelivery, utcnow

log = logging.getLogger("yunnao.webhooks")

_hooks = Webhook.__table__  # type: ignore[attr-defined]
_deliveries = WebhookDelivery.__table__  # type: ignore[attr-defined]
_attempts = WebhookAttempt.__table__  # type: ignore[attr-defined]


class Deliverer:
    def __init__(
        self,
        engine: sa.Engine,
        guard: OutboundGuard,
        *,
        base: float = 5.0,
        max_delay: float = 600.0,
        give_up_after: float = 3 * 86400.0,
        timeout: float = 10.0,
        per_host: int = 4,
        poll: float = 1.0,
        user_agent: str = "Yunnao-Webhooks",
    ) -> None:
        self.engine, self.guard = engine, guard
        self.base, self.max_delay, self.give_up_after = base, max_delay, give_up_after
        self.timeout, self.per_host, self.poll = timeout, per_host, poll
        self.user_agent = user_agent
        self._host_slots: dict[str, anyio.Semaphore] = {}
        self._busy: set[str] = set()  # subscriptions being sent to now

    # ------------------------------------------------------------ reading the outbox

    def due(self, webhook_id: str | None = None) -> list[Any]:
        """Each subscription's oldest pending delivery, where its time has come (of one
        subscription, or of those not being sent to now)."""
        d = _deliveries.alias("d")
        head = (
            sa.select(sa.func.min(_deliveries.c.seq))
            .where(_deliveries.c.webhook_id == d.c.webhook_id, _deliveries.c.state == "pending")
            .scalar_subquery()
        )
        stmt = (
            sa.select(d, _hooks.c.url, _hooks.c.secret)
            .join(_hooks, _hooks.c.id == d.c.webhook_id)
            .where(d.c.state == "pending", d.c.seq == head, d.c.next_attempt_at <= utcnow())
            .where(_hooks.c.disabled.is_(False))
        )
        if webhook_id is not None:
            stmt = stmt.where(d.c.webhook_id == webhook_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return (
            rows if webhook_id is not None else [r for r in rows if r.webhook_id not in self._busy]
        )

    def _record(self, row: Any, status: int | None, error: str | None, ms: float) -> str:
        """Write an attempt's outcome; the delivery's new state."""
        now = utcnow()
        attempts = row.attempts + 1
        if status is not None and 200 <= status < 300:
            state, values = "delivered", {"delivered_at": now, "last_error": None}
        elif now - row.created_at >= timedelta(seconds=self.give_up_after) or error == "refused":
            state, values = "failed", {"last_error": (error or f"HTTP {status}")[:500]}
        else:
            delay = min(self.base * 2 ** (attempts - 1), self.max_delay)
            state = "pending"
            values = {"last_error": (error or f"HTTP {status}")[:500],
                      "next_attempt_at": now + timedelta(seconds=delay)}  # fmt: skip
        with row_write(self.engine) as conn:
            conn.execute(
                _deliveries.update()
                .where(_deliveries.c.seq == row.seq, _deliveries.c.state == "pending")
                .values(state=state, attempts=attempts, **values)
            )
            conn.execute(
                sa.insert(_attempts).values(
                    delivery_id=row.id,
                    at=now,
                    status=status,
                    error=error[:500] if error else None,
                    duration_ms=round(ms, 2),
                )
            )
        return state

    # ------------------------------------------------------------ sending

    async def attempt(self, client: httpx.AsyncClient, row: Any) -> str:
        """One try of one delivery; its new state."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            target = await self.guard.aresolve(row.url)
        except Unresolved as exc:
            error = str(exc)
        except Refused as exc:
            error = "refused"
            log.warning("webhook %s: %s; giving up on %s", row.webhook_id, exc, row.id)
        else:
            url, headers, extensions = target.request()
            now = utcnow()
            headers |= {
                "content-type": "application/json",
                "user-agent": self.user_agent,
                "webhook-id": row.id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Signer(row.secret).sign(row.id, now, row.payload),
            }
            try:
                with anyio.fail_after(self.timeout):
                    async with client.stream(
                        "POST", url, content=row.payload.encode(), headers=headers,
                        extensions=extensions,
                    ) as response:  # fmt: skip
                        status = response.status_code
            except TimeoutError:
                error = f"no answer within {self.timeout:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - started) * 1000
        return await anyio.to_thread.run_sync(self._record, row, status, error, ms)

    async def _send_run(self, client: httpx.AsyncClient, row: Any) -> None:
        """Send a subscription's deliveries from ``row`` on, while they succeed."""
        webhook_id = row.webhook_id
        host = httpx.URL(row.url).host
        slots = self._host_slots.setdefault(host, anyio.Semaphore(self.per_host))
        try:
            async with slots:
                while row is not None:
                    if await self.attempt(client, row) == "pending":
                        return  # retried later; the later ones wait behind it
                    heads = await anyio.to_thread.run_sync(self.due, webhook_id)
                    row = heads[0] if heads else None
        except (sa.exc.SQLAlchemyError, OSError):
            log.exception("webhook %s: could not record a delivery", webhook_id)
        finally:
            self._busy.discard(webhook_id)

    def prune(self, keep_days: float = 30.0) -> int:
        """Remove delivered deliveries (and their attempts) older than ``keep_days``; the
        number removed. Pending and failed ones stay until delivered or removed."""
        cutoff = utcnow() - timedelta(days=keep_days)
        old = sa.select(_deliveries.c.id).where(
            _deliveries.c.state == "delivered", _deliveries.c.delivered_at < cutoff
        )
        with row_write(self.engine) as conn:
            conn.execute(_attempts.delete().where(_attempts.c.delivery_id.in_(old)))
            return conn.execute(
                _deliveries.delete().where(
                    _deliveries.c.state == "delivered", _deliveries.c.delivered_at < cutoff
                )
            ).rowcount

    async def run(self) -> None:
        """Send what is due every ``poll`` seconds until cancelled (the leader's duty)."""
        async with (
            httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
            as client,
            anyio.create_task_group() as tg,
        ):  # fmt: skip
            pruned_at = 0.0
            while True:
                try:
                    if time.monotonic() - pruned_at > 3600:
                        await anyio.to_thread.run_sync(self.prune)
                        pruned_at = time.monotonic()
                    for row in await anyio.to_thread.run_sync(self.due):
                        self._busy.add(row.webhook_id)
                        tg.start_soon(self._send_run, client, row)
                except sa.exc.SQLAlchemyError as exc:
                    log.warning("reading the webhook outbox failed: %s", exc)
                await anyio.sleep(self.poll)
