"""Replication loops: pull a child's feed (or a followed parent's), push this node's feed
to its parent.

Each linked activity runs as its own loop in the node process:

- **pull**: read the peer's ``/v1/cascade/changes`` from its checkpoint, apply each page
  (the checkpoint moves in the same transaction), and once caught up, long-poll so a
  change arrives within a fraction of a second. While one page is applied the next is
  already being fetched.
- **push**: ask the parent for its checkpoint of this node's feed, send the pages after
  it to ``/v1/cascade/ingest``, and wait for the next local change. The parent keeps the
  checkpoint, so a lost answer costs one re-sent page, which the parent refuses (409
  with its checkpoint) rather than applies twice.

A failure is recorded on the peer and retried with exponential backoff (0.5 s doubling
to a minute, with jitter); ``sync`` wakes a loop at once. A feed compacted past the
checkpoint is read again from the start, and entries the peer no longer has are then
deleted here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx

from yunnao.plugins.errors import CheckpointMoved, NotFound
from yunnao.registry.tables import Peer

from .apply import Applier, Checked
from .feed import Compacted, Feed
from .peers import PeerStore
from .policy import Reader
from .wire import push_body, read_page

log = logging.getLogger("yunnao.cascade")

MAX_BACKOFF = 60.0


class SyncError(Exception):
    """A peer answered with an error (its problem detail is the message)."""


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures."""
    base = min(MAX_BACKOFF, 0.5 * 2 ** max(0, failures - 1))
    return base * random.uniform(0.8, 1.2)


def _problem(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return f"{resp.status_code} {body.get('title', '')}: {body.get('detail', '')}"
    except ValueError:
        return f"{resp.status_code} {resp.text[:200]}"


class Replicator:
    def __init__(
        self,
        *,
        feed: Feed,
        applier: Applier,
        peers: PeerStore,
        assertion: Callable[[str], str],
        batch: int = 500,
        wait: float = 20.0,
        timeout: float = 60.0,
    ) -> None:
        self.feed = feed
        self.applier = applier
        self.peers = peers
        self.assertion = assertion  # audience node id -> bearer assertion
        self.batch = batch
        self.wait = wait
        self.timeout = timeout
        self._running: set[tuple[str, str]] = set()
        self._wake: dict[str, anyio.Event] = {}
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout + self.wait))
        return self._client

    def _headers(self, peer: Peer) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.assertion(peer.id)}"}

    # ------------------------------------------------------------ supervision

    async def run(self) -> None:
        """Keep one loop per linked activity running until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    for peer in await anyio.to_thread.run_sync(self.peers.all):
                        for activity in self._activities(peer):
                            if (peer.id, activity) not in self._running:
                                self._running.add((peer.id, activity))
                                tg.start_soon(self._loop, peer.id, activity)
                    await anyio.sleep(1.0)
        finally:
            if self._client is not None:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()
                self._client = None

    @staticmethod
    def _activities(peer: Peer) -> list[str]:
        out = []
        if peer.pull and peer.url:
            out.append("pull")
        if peer.push and peer.url:
            out.append("push")
        return out

    def wake(self, peer_id: str) -> None:
        event = self._wake.pop(peer_id, None)
        if event is not None:
            event.set()

    async def _sleep(self, peer_id: str, seconds: float) -> None:
        event = self._wake.setdefault(peer_id, anyio.Event())
        with anyio.move_on_after(seconds):
            await event.wait()

    async def _loop(self, peer_id: str, activity: str) -> None:
        cursor: dict[str, Any] = {}
        try:
            while True:
                peer = await anyio.to_thread.run_sync(self.peers.get, peer_id)
                if peer is None or activity not in self._activities(peer):
                    return
                try:
                    if activity == "pull":
                        await self.pull(peer, live=True)
                    else:
                        await self.push(peer, cursor, live=True)
                except CheckpointMoved:
                    # Another process on the same store applied that page: carry on from
                    # where it got to (not a failure of the peer).
                    await anyio.sleep(0.2)
                except Exception as exc:  # every failure is recorded and retried
                    cursor.clear()
                    message = str(exc) or type(exc).__name__
                    if isinstance(exc, httpx.HTTPError):
                        message = f"cannot reach {peer.url}: {type(exc).__name__} {exc}".strip()
                    failures = await anyio.to_thread.run_sync(self.peers.failed, peer_id, message)
                    delay = backoff(failures)
                    # The message may quote the peer's answer: logged as a literal, so
                    # a peer cannot put lines of its own into this node's log.
                    log.warning(
                        "%s %s failed (%d in a row, retrying in %.1f s): %r",
                        activity,
                        peer_id,
                        failures,
                        delay,
                        message,
                    )
                    await self._sleep(peer_id, delay)
        finally:
            self._running.discard((peer_id, activity))

    # ------------------------------------------------------------ pull

    async def _fetch(self, peer: Peer, since: int, wait: float) -> dict[str, Any]:
        params = {"since": since, "limit": self.batch}
        if wait:
            params["wait"] = wait  # type: ignore[assignment]
        resp = await self.client.get(
            f"{peer.url}/v1/cascade/changes", params=params, headers=self._headers(peer)
        )
        if resp.status_code == 410:
            raise Compacted(since, int(resp.json().get("compacted_through", since)))
        if resp.status_code != 200:
            raise SyncError(f"{peer.id} answered {_problem(resp)}")
        # A peer's page is read as a caller's body is: bounded nesting, readable numbers.
        return read_page(resp.content, what=f"{peer.id}'s feed page")

    async def _fetch_checked(self, peer: Peer, since: int) -> tuple[dict[str, Any], Checked]:
        """A page of ``peer``'s feed with its items' signatures checked ahead."""
        page = await self._fetch(peer, since, 0)
        items = page.get("items")
        if not isinstance(items, list):
            return page, Checked(items=[], problems={}, verified={})
        return page, await anyio.to_thread.run_sync(self.applier.check_ahead, items)

    async def pull(self, peer: Peer, *, live: bool = False) -> None:
        """Apply ``peer``'s feed from its checkpoint until caught up; with ``live``, then
        wait (long poll) for one more change."""
        since = peer.checkpoint
        pending: asyncio.Task[tuple[dict[str, Any], Checked]] | None = None
        try:
            page, checked = await self._fetch_checked(peer, since)
            while True:
                more = page["next"] < page["head"]
                if more:
                    # Fetch the next page and check its signatures (on another thread)
                    # while this one is written.
                    pending = asyncio.ensure_future(self._fetch_checked(peer, page["next"]))
                await self._apply(peer, page, since, checked)
                since = page["next"]
                if pending is None:
                    break
                (page, checked), pending = await pending, None
            if live:
                await self._apply(peer, await self._fetch(peer, since, self.wait), since)
        except Compacted:
            await self.resync(peer)
        finally:
            if pending is not None:
                pending.cancel()

    async def _apply(
        self, peer: Peer, page: dict[str, Any], since: int, checked: Checked | None = None
    ) -> None:
        await anyio.to_thread.run_sync(
            lambda: self.applier.apply(
                peer,
                page["items"],
                since=since,
                next_seq=page["next"],
                head=page["head"],
                checked=checked,
            )
        )

    async def resync(self, peer: Peer) -> None:
        """Read ``peer``'s feed again from the start and delete here what it no longer
        has; the checkpoint moves only at the end, so a crash restarts the resync."""
        log.warning("feed of %s was compacted past %d: reading it again", peer.id, peer.checkpoint)
        seen: set[tuple[str, str]] = set()
        since, head = 0, 0
        while True:
            page = await self._fetch(peer, since, 0)
            outcome = await anyio.to_thread.run_sync(
                lambda p=page: self.applier.apply(
                    peer,
                    p["items"],
                    since=peer.checkpoint,
                    next_seq=p["next"],
                    head=p["head"],
                    advance=False,
                )
            )
            seen.update(outcome.seen)
            since, head = page["next"], page["head"]
            if since >= head:
                break
        await anyio.to_thread.run_sync(self._sweep, peer, seen, since, head)

    def _sweep(self, peer: Peer, seen: set[tuple[str, str]], through: int, head: int) -> None:
        keep = {key for entity, key in seen if entity == "capability"}
        self.applier.sweep(peer, keep, since=peer.checkpoint, to=through, head=head)

    # ------------------------------------------------------------ push

    async def push(self, peer: Peer, cursor: dict[str, Any], *, live: bool = False) -> None:
        """Send this node's feed to its parent from the parent's checkpoint until it is
        caught up; with ``live``, first wait for a local change when there is none."""
        if "checkpoint" not in cursor:
            resp = await self.client.get(
                f"{peer.url}/v1/cascade/checkpoint", headers=self._headers(peer)
            )
            if resp.status_code != 200:
                raise SyncError(f"{peer.id} answered {_problem(resp)}")
            cursor["checkpoint"] = resp.json()["checkpoint"]
        while True:
            since = cursor["checkpoint"]
            try:
                page = await anyio.to_thread.run_sync(
                    self.feed.page, since, self.batch, Reader("parent")
                )
            except Compacted:
                # The parent is further behind than this node's log reaches: send it
                # everything again, then what this node still has (the rest goes).
                log.warning("%s is behind the compacted log (%d): resending all", peer.id, since)
                head = await anyio.to_thread.run_sync(self.feed.head)
                body = {"since": since, "next": since, "head": head, "items": [], "reset": True}
                await self._ingest(peer, body, cursor)
                continue
            if page.next <= since and cursor.get("resync_pending"):
                manifest = await anyio.to_thread.run_sync(self.feed.manifest)
                body = {"since": since, "next": since, "head": page.head, "items": []}
                await self._ingest(peer, {**body, "manifest": manifest}, cursor)
                continue
            if page.next <= since:
                await anyio.to_thread.run_sync(self.peers.pushed, peer.id)
                if live:
                    await self._local_change(peer.id, since)
                return
            body = {"since": since, "next": page.next, "head": page.head}
            await self._ingest(peer, body, cursor, page.items)

    async def _ingest(
        self,
        peer: Peer,
        body: dict[str, Any],
        cursor: dict[str, Any],
        items: list[dict[str, Any]] | None = None,
    ) -> None:
        rest = {k: v for k, v in body.items() if k != "items"}
        resp = await self.client.post(
            f"{peer.url}/v1/cascade/ingest",
            content=push_body(rest, body.get("items", items or [])),
            headers={**self._headers(peer), "Content-Type": "application/json"},
        )
        answer = resp.json() if resp.headers.get("content-type", "").endswith("json") else {}
        if resp.status_code == 409 and "checkpoint" in answer:
            cursor["checkpoint"] = answer["checkpoint"]  # resend from where the parent is
            return
        if resp.status_code != 200:
            raise SyncError(f"{peer.id} answered {_problem(resp)}")
        cursor["checkpoint"] = answer["checkpoint"]
        cursor["resync_pending"] = answer.get("resync_pending", False)

    async def _local_change(self, peer_id: str, since: int) -> None:
        """Return when this node's log grows past ``since``, when woken, or after
        ``wait`` seconds."""
        event = self._wake.setdefault(peer_id, anyio.Event())
        with anyio.move_on_after(self.wait):
            async with anyio.create_task_group() as tg:

                async def woken() -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(woken)
                await self.feed.watcher.wait_past(since, self.wait)
                tg.cancel_scope.cancel()

    # ------------------------------------------------------------ on demand

    async def sync(self, peer_id: str) -> None:
        """Catch up with ``peer_id`` now (``yunnao cascade sync``)."""
        peer = await anyio.to_thread.run_sync(self.peers.get, peer_id)
        if peer is None:
            raise NotFound(f"no linked node {peer_id}")
        for attempt in range(3):
            try:
                if peer.pull and peer.url:
                    await self.pull(peer)
                if peer.push and peer.url:
                    await self.push(peer, {})
                break
            except CheckpointMoved:
                # The node's own loop applied a page at the same time: read it again.
                peer = await anyio.to_thread.run_sync(self.peers.get, peer_id)
                if peer is None or attempt == 2:
                    raise
        self.wake(peer_id)
