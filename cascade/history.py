"""Lag over time, per linked node, for the operator pages: sampled every few seconds
into a ring buffer of this process (the last hour by default). Prometheus keeps the
long history (``yunnao_cascade_lag_entries``); this is the glance without it."""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread
import sqlalchemy as sa

from .peers import PeerStatus, PeerStore

log = logging.getLogger("yunnao.cascade")


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the epoch
    lag_entries: int
    lag_seconds: float | None


class LagHistory:
    def __init__(self, peers: PeerStore, *, keep: int = 360) -> None:
        self.peers = peers
        self.keep = keep
        self._samples: dict[str, collections.deque[Sample]] = {}

    def sample(self) -> None:
        now = time.time()
        peers = self.peers.all()
        for peer in peers:
            status = PeerStatus.of(peer)
            ring = self._samples.setdefault(peer.id, collections.deque(maxlen=self.keep))
            ring.append(Sample(now, status.lag_entries, status.lag_seconds))
        for gone in set(self._samples) - {p.id for p in peers}:
            del self._samples[gone]

    def of(self, peer: str) -> list[Sample]:
        return list(self._samples.get(peer, ()))

    async def run(self, interval: float = 10.0) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.sample)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("sampling cascade lag failed: %s", exc)
            await anyio.sleep(interval)
