"""Prometheus metrics of the gateway (served at ``/metrics``).

Each node app has its own registry, so several apps can live in one process (tests).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From half a millisecond (an in-process call) to a minute (a slow model).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._gauges: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "yunnao_invocations",
            "Capability invocations, by outcome (HTTP status)",
            ["capability", "version", "runtime", "mode", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "yunnao_invocation_seconds",
            "Time from accepted input to answer, gateway work included",
            ["capability", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "yunnao_invocations_in_flight",
            "Invocations being run now",
            ["runtime"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "yunnao_jobs",
            "Asynchronous jobs by event (queued, succeeded, failed, retried)",
            ["event"],
            registry=self.registry,
        )
        self.runtime_up = Gauge(
            "yunnao_runtime_up",
            "Whether a runtime answered its last health check (1) or not (0)",
            ["runtime"],
            registry=self.registry,
        )

    def in_flight_of(self, runtime: str) -> Any:
        gauge = self._gauges.get(runtime)
        if gauge is None:
            gauge = self._gauges[runtime] = self.in_flight.labels(runtime)
        return gauge

    def observe(
        self, capability: str, version: str, runtime: str, mode: str, status: int, seconds: float
    ) -> None:
        """Count one finished invocation and its latency."""
        key = (capability, version, runtime, mode, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds tuples: once per series
            children = (
                self.invocations.labels(capability, version, runtime, mode, str(status)),
                self.latency.labels(capability, runtime),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
