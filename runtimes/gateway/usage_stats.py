"""Usage statistics for assessment: calls, errors, latency and callers per day, by
capability, department (namespace) or node, from the usage records.

Which capabilities' calls a caller may count is the policy module's decision
(:func:`~yunnao.registry.visibility.visible`), the same as for search: a capability the
caller may not discover adds nothing to any row, whichever the grouping."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
import sqlalchemy as sa

from yunnao.registry import names, visibility
from yunnao.registry.access import Identity
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


def _under(scope: str) -> sa.ColumnElement[bool]:
    """Namespaces at or under ``scope`` (a prefilter; ``names.in_scope`` decides)."""
    return sa.or_(
        _usage.c.namespace == scope, _usage.c.namespace.startswith(scope + ".", autoescape=True)
    )


def report(
    engine: sa.Engine,
    *,
    since: date,
    until: date,
    by: Grouping = "capability",
    namespaces: list[str] | None = None,
    identity: Identity | None = None,
) -> list[UsageRow]:
    """Rows per (day, key) for calls on days ``since`` up to and excluding ``until``
    (UTC), in the namespaces under ``namespaces`` (None: all), of the capabilities
    ``identity`` may discover (None: all, for the node's own tools)."""
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.combine(until, time(), tzinfo=UTC)
    stmt = sa.select(
        _usage.c.at, _usage.c.namespace, _usage.c.name, _usage.c.status,
        _usage.c.latency_ms, _usage.c.caller,
    ).where(_usage.c.at >= start, _usage.c.at < end)  # fmt: skip
    if namespaces is not None:
        stmt = stmt.where(sa.or_(*(_under(s) for s in namespaces), sa.false()))
    with engine.connect() as conn:
        records = [
            r
            for r in conn.execute(stmt)
            if namespaces is None or any(names.in_scope(r[1], s) for s in namespaces)
        ]
    if identity is not None:
        seen = visibility.visible(identity, engine, {(r[1], r[2]) for r in records})
        records = [r for r in records if (r[1], r[2]) in seen]
    groups: dict[tuple[date, str], list[tuple[int, float, str | None]]] = defaultdict(list)
    for at, namespace, name, status, latency, caller in records:
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
