"""Prometheus metrics of the cascade, read from the peers' stored status at scrape time
(so every process sharing the store reports the same, current figures)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .peers import PeerStatus, PeerStore


class CascadeCollector(Collector):
    def __init__(self, peers: PeerStore) -> None:
        self.peers = peers

    def collect(self) -> Iterator[Metric]:
        labels = ["peer", "relation"]
        lag = GaugeMetricFamily(
            "yunnao_cascade_lag_entries",
            "Changes of a linked node's feed not applied here yet",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            "yunnao_cascade_lag_seconds",
            "Seconds since this node last had everything of a linked node's feed",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "yunnao_cascade_last_sync_timestamp_seconds",
            "When the last sync with a linked node succeeded",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "yunnao_cascade_failures", "Consecutive failed syncs with a linked node", labels=labels
        )
        applied = CounterMetricFamily(
            "yunnao_cascade_applied", "Entries applied from a linked node", labels=labels
        )
        rejected = CounterMetricFamily(
            "yunnao_cascade_rejected",
            "Entries a linked node sent that were rejected (signature, ownership, policy)",
            labels=labels,
        )
        for peer in self.peers.all():
            status = PeerStatus.of(peer)
            values = [peer.id, peer.relation]
            lag.add_metric(values, status.lag_entries)
            if status.lag_seconds is not None:
                lag_s.add_metric(values, status.lag_seconds)
            if peer.last_sync_at is not None:
                last.add_metric(values, peer.last_sync_at.timestamp())
            failures.add_metric(values, peer.failures)
            applied.add_metric(values, peer.applied)
            rejected.add_metric(values, peer.rejected)
        yield from (lag, lag_s, last, failures, applied, rejected)
