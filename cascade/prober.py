"""Live probes of the linked nodes: who is reachable now, and who lags.

Every ``interval`` seconds the node sends each linked peer with a URL (its children and
its parent) ``GET /v1/cascade/health`` with its cascade assertion and a short time-out:

- a peer that answers in time is ``ok``, or ``late`` when its cascade lags (entries
  behind for longer than ``late_after`` seconds, or a followed feed not read for that
  long); a child's answer also lists the nodes of its subtree as it sees them, which the
  :class:`~yunnao.registry.health.HealthBoard` takes only for nodes strictly below that
  child (:meth:`~yunnao.registry.health.HealthBoard.adopt`);
- a probe that fails opens the peer's circuit breaker at once; two in a row (or one after
  a forwarded call failed) make it ``down``, and every node reached through it.

Each probe is counted in ``probe_daily`` (per node and Beijing day), batched in memory
and written every ``flush_every`` seconds and when the node stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa

from yunnao.registry.clock import BEIJING
from yunnao.registry.db import row_write
from yunnao.registry.health import HealthBoard, NodeState
from yunnao.registry.http import parse_json
from yunnao.registry.tables import Peer, ProbeDaily

from .peers import PeerStore

log = logging.getLogger("yunnao.cascade.prober")

_probe_daily = ProbeDaily.__table__  # type: ignore[attr-defined]
MAX_ANSWER_BYTES = 4 << 20  # a larger health answer is not read (the peer still answered)


def beijing_day(at: datetime) -> str:
    """``YYYY-MM-DD`` of ``at`` in Beijing time."""
    return at.astimezone(BEIJING).strftime("%Y-%m-%d")


def lagging(peer: Peer, now: datetime, late_after: float) -> tuple[int | None, bool]:
    """``peer``'s cascade lag in entries (None: nothing is read from it), and whether it
    is late: behind for longer than ``late_after`` seconds, or a feed this node follows
    not read for that long."""
    if not peer.pull and not (peer.relation == "child" and peer.last_sync_at):
        return None, False
    lag = max(0, peer.head - peer.checkpoint)
    limit = timedelta(seconds=late_after)
    behind = lag > 0 and now - (peer.caught_up_at or peer.created_at) > limit
    stale = peer.pull and peer.last_sync_at is not None and now - peer.last_sync_at > limit
    return lag, behind or stale


def record_probes(engine: sa.Engine, counts: dict[tuple[str, str], list[int]]) -> None:
    """Add ``counts`` ((node, day) -> [probes, ok]) to ``probe_daily``."""
    now = datetime.now(UTC)
    for (node, day), (probes, ok) in counts.items():
        where = sa.and_(_probe_daily.c.node == node, _probe_daily.c.day == day)
        with row_write(engine) as conn:
            updated = conn.execute(
                _probe_daily.update()
                .where(where)
                .values(
                    probes=_probe_daily.c.probes + probes,
                    ok=_probe_daily.c.ok + ok,
                    updated_at=now,
                )
            ).rowcount
            if not updated:
                conn.execute(
                    _probe_daily.insert().values(
                        node=node, day=day, probes=probes, ok=ok, updated_at=now
                    )
                )


class Prober:
    """The probe loop of one node (run as a background task of its app)."""

    def __init__(
        self,
        *,
        board: HealthBoard,
        peers: PeerStore,
        assertion: Callable[[str], str],
        engine: sa.Engine,
        interval: float = 3.0,
        timeout: float = 2.0,
        late_after: float = 60.0,
        flush_every: float = 30.0,
        recovered: Callable[[str], None] | None = None,
        tally: Callable[[], bool] | None = None,
        changed: Callable[[str, bool, str | None], None] | None = None,
    ) -> None:
        self.board = board
        self.peers = peers
        self.assertion = assertion  # audience node id -> cascade assertion
        self.engine = engine
        self.interval = interval
        self.timeout = timeout
        self.late_after = late_after
        self.flush_every = flush_every
        self.recovered = recovered  # a peer answers again (wake its sync loops)
        # Of several processes on one store, only the one this says yes to (the leader)
        # writes its counts; the others probe for their own breakers only.
        self.tally = tally
        # A peer became unreachable (False) or answers again (True): told by the leader
        # only (blocking; run on a thread), for the node's webhooks.
        self.changed = changed
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._known: set[str] = set()
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> None:
        """Probe every linked peer each ``interval`` seconds until cancelled."""
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        last_flush = time.monotonic()
        try:
            while True:
                started = time.monotonic()
                await self.round()
                if time.monotonic() - last_flush >= self.flush_every:
                    await self.flush()
                    last_flush = time.monotonic()
                await anyio.sleep(max(0.1, self.interval - (time.monotonic() - started)))
        finally:
            with anyio.CancelScope(shield=True):
                await self._client.aclose()
                self._client = None
                try:
                    await self.flush()
                except Exception:
                    log.exception("writing the last probe counts")

    async def round(self) -> None:
        """Probe each linked peer once, at the same time."""
        peers = await anyio.to_thread.run_sync(self.peers.all)
        linked = {p.id for p in peers}
        for gone in self._known - linked:
            self.board.forget(gone)
        self._known = linked
        async with anyio.create_task_group() as tg:
            for peer in peers:
                if peer.url:
                    tg.start_soon(self.probe, peer)

    async def probe(self, peer: Peer) -> None:
        """Probe ``peer`` once and tell the board."""
        assert self._client is not None
        before = self.board.get(peer.id).state
        started = time.monotonic()
        ok, detail, body = False, None, None
        try:
            resp = await self._client.get(
                f"{peer.url}/v1/cascade/health",
                headers={"Authorization": f"Bearer {self.assertion(peer.id)}"},
                timeout=self.timeout,
            )
            ok = True  # it answered in time: it is there
            if resp.status_code == 200 and len(resp.content) <= MAX_ANSWER_BYTES:
                body = parse_json(resp.content, what=f"{peer.id}'s health")
            else:
                detail = f"answered {resp.status_code} to this node's probe"
        except httpx.TimeoutException:
            detail = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            detail = f"cannot reach {peer.url}: {type(exc).__name__}"
        except Exception as exc:  # a garbled answer: there, but not speaking health
            ok, detail = True, f"unreadable health answer: {type(exc).__name__}"
        latency = round((time.monotonic() - started) * 1000, 1) if ok else None
        now = datetime.now(UTC)
        lag, late = lagging(peer, now, self.late_after)
        self.board.probed(peer.id, ok, latency, detail, lag=lag, late=late)
        if ok and peer.relation == "child" and isinstance(body, dict):
            self.board.adopt(peer.id, body.get("nodes"))
        counts = self._counts.setdefault((peer.id, beijing_day(now)), [0, 0])
        counts[0] += 1
        counts[1] += int(ok)
        if ok and before == NodeState.DOWN:
            log.info("node %s answers again", peer.id)
            if self.recovered is not None:
                self.recovered(peer.id)
            await self._tell(peer.id, True, None)
        elif not ok and before != NodeState.DOWN and self.board.get(peer.id).state == "down":
            log.warning("node %s is unreachable: %s", peer.id, detail)
            await self._tell(peer.id, False, detail)

    async def _tell(self, peer_id: str, reachable: bool, detail: str | None) -> None:
        if self.changed is None or (self.tally is not None and not self.tally()):
            return
        try:
            await anyio.to_thread.run_sync(self.changed, peer_id, reachable, detail)
        except Exception:
            log.exception("telling webhooks that %s changed", peer_id)

    async def flush(self) -> None:
        """Write the probe counts gathered since the last flush."""
        counts, self._counts = self._counts, {}
        if counts and (self.tally is None or self.tally()):
            await anyio.to_thread.run_sync(record_probes, self.engine, counts)

    def pending(self) -> dict[tuple[str, str], list[int]]:
        """The counts not written yet (for tests and the operator page)."""
        return dict(self._counts)


def health_answer(board: HealthBoard, *, to_parent: bool) -> dict[str, Any]:
    """What ``GET /v1/cascade/health`` answers: this node, and for its parent the health
    of every node of its subtree as this node sees it."""
    nodes = [h.as_dict() for h in board.subtree()] if to_parent else []
    return {"node": board.node_id, "state": "ok", "nodes": nodes}
