"""Usage statistics for assessment: calls, errors, latency and callers per day, by
capability, department (namespace) or node, from the usage records."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
import sqlalchemy as sa

from yunnao.registry import names
from yunnao.registry.tables import UsageRecord

Grouping = Literal["capability", "department", "node"]

_usage = UsageRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class UsageRow:
    day: date
    key: str  # namespace/name, namespace, or node id
    calls: int
    ok: int  # answered 2xx
    refused: int  # 4xx: bad input, not found, denied, quota
    errors: int  # 5xx: the capability or its runtime failed, timed out or was down
    p50_ms: float
    p99_ms: float
    callers: int  # distinct callers (anonymous counts as one)


def _key(by: Grouping, namespace: str, name: str) -> str:
    if by == "capability":
        return f"{namespace}/{name}"
    if by == "department":
        return namespace
    return names.namespace_node(namespace)


def report(
    engine: sa.Engine,
    *,
    since: date,
    until: date,
    by: Grouping = "capability",
    namespaces: list[str] | None = None,
) -> list[UsageRow]:
    """Rows per (day, key) for calls on days ``since`` up to and excluding ``until``
    (UTC), in the namespaces under ``namespaces`` (None: all)."""
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.combine(until, time(), tzinfo=UTC)
    stmt = sa.select(
        _usage.c.at, _usage.c.namespace, _usage.c.name, _usage.c.status,
        _usage.c.latency_ms, _usage.c.caller,
    ).where(_usage.c.at >= start, _usage.c.at < end)  # fmt: skip
    groups: dict[tuple[date, str], list[tuple[int, float, str | None]]] = defaultdict(list)
    with engine.connect() as conn:
        for at, namespace, name, status, latency, caller in conn.execute(stmt):
            if namespaces is not None and not any(names.in_scope(namespace, s) for s in namespaces):
                continue
            groups[(at.date(), _key(by, namespace, name))].append((status, latency, caller))
    rows = []
    for (day, key), calls in sorted(groups.items()):
        statuses = np.fromiter((c[0] for c in calls), dtype=np.int32, count=len(calls))
        latency = np.fromiter((c[1] for c in calls), dtype=np.float64, count=len(calls))
        rows.append(
            UsageRow(
                day=day,
                key=key,
                calls=len(calls),
                ok=int(((statuses >= 200) & (statuses < 300)).sum()),
                refused=int(((statuses >= 400) & (statuses < 500)).sum()),
                errors=int((statuses >= 500).sum()),
                p50_ms=round(float(np.percentile(latency, 50)), 3),
                p99_ms=round(float(np.percentile(latency, 99)), 3),
                callers=len({c[2] for c in calls}),
            )
        )
    return rows


def default_period(today: date | None = None) -> tuple[date, date]:
    """The last seven days, today included."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=6), today + timedelta(days=1)
