"""Prometheus metrics of the gateway (served at ``/metrics``).

Each node app has its own registry, so several apps can live in one process (tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From half a millisecond (an in-process call) to a minute (a slow model).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
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
