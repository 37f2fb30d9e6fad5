"""Daily usage aggregates: one origin node's calls of a capability on a day (Beijing
time), by outcome and by where the callers came from, with a latency histogram.

A node computes its own rows from its usage records (:func:`refresh`); its parent holds
the rows its signed ``usage`` feed items carry up the cascade. Rows add up exactly over
days, capabilities, departments and nodes; percentiles come from the summed histograms
(:func:`percentile`), at the histogram's resolution.

- Outcomes: ``ok`` 2xx; ``refused`` 401, 403, 429 (not allowed, over a limit);
  ``invalid`` any other 4xx (the caller's input); ``errors`` 5xx (the capability or its
  runtime failed, was down or timed out). ``calls`` is their sum.
- Callers: ``other_node`` when the call was forwarded by a linked node or its caller
  belongs to another node; else ``same_department`` when the caller's department is the
  capability's namespace; else ``other_department`` (anonymous callers too). ``calls`` is
  their sum as well.
- ``latency_hist[i]`` counts the calls that ran (``ok`` and ``errors``: refused and
  invalid calls are answered before anything runs) taking at most ``BUCKETS_MS[i]`` and
  more than ``BUCKETS_MS[i - 1]``; it always has ``len(BUCKETS_MS)`` counts.
- A capability that may not leave its node (classification ``restricted``) is summed
  into its namespace's row with name ``""``: its name never reaches another node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import select

from yunnao.registry.clock import BEIJING
from yunnao.registry.db import read_session, row_write
from yunnao.registry.names import namespace_node
from yunnao.registry.tables import CapabilityRow, UsageDaily, UsageRecord, utcnow

# Upper bounds (ms) of the latency histogram's buckets; the last takes everything slower.
BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, math.inf,
)  # fmt: skip

COUNTS = (
    "calls", "ok", "errors", "refused", "invalid",
    "same_department", "other_department", "other_node",
)  # fmt: skip

_usage = UsageRecord.__table__  # type: ignore[attr-defined]
_daily = UsageDaily.__table__  # type: ignore[attr-defined]


def beijing_day(at: datetime) -> str:
    """The day (``YYYY-MM-DD``, Asia/Shanghai) that ``at`` falls on; a naive ``at`` is
    read as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(BEIJING).date().isoformat()


def day_bounds(day: str) -> tuple[datetime, datetime]:
    """The UTC instants a Beijing day starts and ends at (end exclusive)."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=BEIJING)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def last_days(days: int, *, now: datetime | None = None) -> list[str]:
    """The last ``days`` Beijing days up to and including today, oldest first."""
    today = date.fromisoformat(beijing_day(now or utcnow()))
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def status_class(status: int) -> str:
    """The outcome column a call's HTTP status counts in."""
    if 200 <= status < 300:
        return "ok"
    if status in (401, 403, 429):
        return "refused"
    if 400 <= status < 500:
        return "invalid"
    return "errors"


def bucket(latency_ms: float) -> int:
    """The index of the histogram bucket a latency falls in."""
    for i, bound in enumerate(BUCKETS_MS):
        if latency_ms <= bound:
            return i
    return len(BUCKETS_MS) - 1  # NaN


def empty_hist() -> list[int]:
    return [0] * len(BUCKETS_MS)


def add_hist(into: list[int], other: Sequence[int]) -> list[int]:
    """Add ``other`` into ``into`` (in place; returned). A histogram of another length
    (not one of these buckets) adds nothing."""
    if len(other) == len(into):
        for i, n in enumerate(other):
            into[i] += n
    return into


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``q``-th call of ``hist``; ``q``
    in [0, 1] (0.5 for p50, 0.99 for p99; a value above 1 reads as percent, 99 as 0.99).
    None when the histogram holds no calls (or is not of these buckets). A call in the
    last, unbounded bucket reads as the last finite bound (30000 ms: "at least"), so the
    result is always a finite number fit for JSON."""
    if len(hist) != len(BUCKETS_MS):
        return None
    total = sum(hist)
    if total <= 0:
        return None
    if q > 1:
        q = q / 100
    rank = max(1, math.ceil(min(max(q, 0.0), 1.0) * total))
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return float(BUCKETS_MS[i]) if math.isfinite(BUCKETS_MS[i]) else float(BUCKETS_MS[-2])
    return float(BUCKETS_MS[-2])


# ---------------------------------------------------------------- reading


def rows(
    engine: sa.Engine, start_day: str, end_day: str, *, nodes: Iterable[str] | None = None
) -> list[UsageDaily]:
    """The rows of days ``start_day`` to ``end_day`` (inclusive, ``YYYY-MM-DD``): this
    node's own and those carried up from below; only those of ``nodes`` when given.
    Ordered by node, day, namespace, name."""
    stmt = select(UsageDaily).where(UsageDaily.day >= start_day, UsageDaily.day <= end_day)
    if nodes is not None:
        wanted = sorted(set(nodes))
        if not wanted:
            return []
        stmt = stmt.where(UsageDaily.node.in_(wanted))  # type: ignore[attr-defined]
    stmt = stmt.order_by(UsageDaily.node, UsageDaily.day, UsageDaily.namespace, UsageDaily.name)
    with read_session(engine) as session:
        return list(session.exec(stmt))


@dataclass
class RecentStats:
    calls: int
    success_rate: float | None  # ok / (ok + errors): of the calls that ran; None: none ran
    p50_ms: float | None


def recent(
    engine: sa.Engine, keys: Iterable[tuple[str, str]], *, days: int = 7
) -> dict[tuple[str, str], RecentStats]:
    """(namespace, name) -> its calls over the last ``days`` Beijing days (today
    included), from its origin node's rows: this node's own rows for its own
    capabilities, the rows carried up the cascade for those of nodes below. A
    capability whose origin's rows do not reach this node (a parent's or sibling's, seen
    by a follower; a restricted one, folded) counts this node's own usage records of it
    instead: the calls made or forwarded here. Every key asked for is in the answer (0
    calls, None rates when there were none)."""
    wanted = set(keys)
    totals: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    spaces = sorted({ns for ns, _ in wanted})
    first = last_days(days)[0]
    if spaces:
        stmt = sa.select(
            _daily.c.node, _daily.c.namespace, _daily.c.name, _daily.c.calls, _daily.c.ok,
            _daily.c.errors, _daily.c.latency_hist,
        ).where(_daily.c.day >= first, _daily.c.namespace.in_(spaces))  # fmt: skip
        with engine.connect() as conn:
            for node, ns, name, calls, ok, errors, hist in conn.execute(stmt):
                if (ns, name) not in wanted or node != namespace_node(ns):
                    continue  # not asked for, or not its origin's own figures
                got = totals.setdefault((ns, name), ([0, 0, 0], empty_hist()))
                got[0][0] += calls
                got[0][1] += ok
                got[0][2] += errors
                add_hist(got[1], hist or [])
    local = wanted - set(totals)
    if local:
        totals.update(_from_records(engine, local, day_bounds(first)[0]))
    out = {}
    for key in wanted:
        (calls, ok, errors), hist = totals.get(key, ([0, 0, 0], empty_hist()))
        ran = ok + errors
        out[key] = RecentStats(calls, ok / ran if ran else None, percentile(hist, 0.5))
    return out


def _from_records(
    engine: sa.Engine, keys: set[tuple[str, str]], since: datetime
) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """[calls, ok, errors] and the latency histogram of ``keys`` from this node's usage
    records since ``since``."""
    u = _usage.c
    ran = sa.or_(u.status < 400, u.status >= 500)
    stmt = (
        sa.select(
            u.namespace, u.name, sa.case((ran, _bucket_expr(u.latency_ms)), else_=-1).label("b"),
            sa.func.count(),
            sa.func.sum(sa.case((sa.and_(u.status >= 200, u.status < 300), 1), else_=0)),
            sa.func.sum(sa.case((u.status >= 500, 1), else_=0)),
        )
        .where(
            # (namespace, name, at) is an index: only these capabilities' records are read
            u.namespace.in_(sorted({ns for ns, _ in keys})),
            u.name.in_(sorted({name for _, name in keys})),
            u.at >= since,
        )
        .group_by(u.namespace, u.name, "b")
    )  # fmt: skip
    out: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    with engine.connect() as conn:
        for ns, name, b, calls, ok, errors in conn.execute(stmt):
            if (ns, name) not in keys:
                continue
            got = out.setdefault((ns, name), ([0, 0, 0], empty_hist()))
            got[0][0] += int(calls)
            got[0][1] += int(ok or 0)
            got[0][2] += int(errors or 0)
            if b is not None and b >= 0:
                got[1][int(b)] += int(calls)
    return out


# ---------------------------------------------------------------- computing


def _bucket_expr(latency: sa.ColumnElement[float]) -> sa.ColumnElement[int]:
    finite = [b for b in BUCKETS_MS if math.isfinite(b)]
    return sa.case(*((latency <= b, i) for i, b in enumerate(finite)), else_=len(BUCKETS_MS) - 1)


def compute(engine: sa.Engine, node_id: str, day: str) -> dict[tuple[str, str], dict]:
    """This node's own rows of ``day`` from its usage records: (namespace, name) ->
    {the counts, "latency_hist"}; restricted capabilities (and any no longer known
    here) summed under name ""."""
    start, end = day_bounds(day)
    u = _usage.c
    status = u.status
    ran = sa.or_(status < 400, status >= 500)
    other_node = sa.or_(
        u.forwarded_by.is_not(None), sa.and_(u.caller_node.is_not(None), u.caller_node != node_id)
    )
    same_dept = sa.and_(sa.not_(other_node), u.caller_department == u.namespace)

    def count(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((cond, 1), else_=0))

    b = _bucket_expr(u.latency_ms)
    stmt = (
        sa.select(
            u.namespace, u.name, sa.case((ran, b), else_=-1).label("bucket"),
            sa.func.count().label("calls"),
            count(sa.and_(status >= 200, status < 300)).label("ok"),
            count(status >= 500).label("errors"),
            count(status.in_((401, 403, 429))).label("refused"),
            count(sa.and_(status >= 400, status < 500, status.not_in((401, 403, 429)))).label(
                "invalid"
            ),
            count(same_dept).label("same_department"),
            count(other_node).label("other_node"),
        )
        .where(u.at >= start, u.at < end, u.namespace.startswith(node_id + ".", autoescape=True))
        .group_by(u.namespace, u.name, "bucket")
    )  # fmt: skip
    with engine.connect() as conn:
        grouped = [r for r in conn.execute(stmt) if namespace_node(r.namespace) == node_id]
        spaces = sorted({r.namespace for r in grouped})
        shared: set[tuple[str, str]] = set()
        if spaces:
            c = CapabilityRow.__table__.c  # type: ignore[attr-defined]
            shared = {
                (ns, name)
                for ns, name in conn.execute(
                    sa.select(c.namespace, c.name).where(
                        c.namespace.in_(spaces), c.classification != "restricted"
                    )
                )
            }
    out: dict[tuple[str, str], dict] = {}
    for r in grouped:
        key = (r.namespace, r.name) if (r.namespace, r.name) in shared else (r.namespace, "")
        row = out.setdefault(key, {**dict.fromkeys(COUNTS, 0), "latency_hist": empty_hist()})
        for col in ("calls", "ok", "errors", "refused", "invalid", "same_department",
                    "other_node"):  # fmt: skip
            row[col] += int(getattr(r, col) or 0)
        row["other_department"] += (
            int(r.calls) - int(r.same_department or 0) - int(r.other_node or 0)
        )
        if r.bucket is not None and r.bucket >= 0:
            row["latency_hist"][int(r.bucket)] += int(r.calls)
    return out


def _same(row: sa.Row, figures: dict) -> bool:
    return all(getattr(row, c) == figures[c] for c in COUNTS) and list(
        row.latency_hist or []
    ) == list(figures["latency_hist"])


def replace_day(
    engine: sa.Engine, node: str, day: str, figures: dict[tuple[str, str], dict]
) -> int:
    """Make ``node``'s rows of ``day`` exactly ``figures`` ((namespace, name) -> counts
    and "latency_hist"), writing only what differs; the number of rows inserted,
    updated or deleted (0: nothing changed)."""
    with row_write(engine) as conn:
        return replace_rows(conn, node, day, figures)


def replace_rows(
    conn: sa.Connection, node: str, day: str, figures: dict[tuple[str, str], dict]
) -> int:
    """:func:`replace_day` in the caller's transaction (a cascade item applied)."""
    d = _daily.c
    now = utcnow()
    written = 0
    have = {
        (r.namespace, r.name): r
        for r in conn.execute(sa.select(_daily).where(d.node == node, d.day == day))
    }
    for key in have:
        if key not in figures:
            conn.execute(
                _daily.delete().where(
                    d.node == node, d.day == day, d.namespace == key[0], d.name == key[1]
                )
            )
            written += 1
    for (ns, name), figs in figures.items():
        old = have.get((ns, name))
        if old is not None and _same(old, figs):
            continue
        values = {c: int(figs[c]) for c in COUNTS}
        values["latency_hist"] = [int(n) for n in figs["latency_hist"]]
        values["updated_at"] = now
        if old is None:
            conn.execute(
                _daily.insert().values(node=node, day=day, namespace=ns, name=name, **values)
            )
        else:
            conn.execute(
                _daily.update()
                .where(d.node == node, d.day == day, d.namespace == ns, d.name == name)
                .values(**values)
            )
        written += 1
    return written


def entry_rows(conn: sa.Connection, node: str, day: str) -> list[dict]:
    """``node``'s rows of ``day`` as a usage feed item carries them (sorted)."""
    d = _daily.c
    stmt = sa.select(_daily).where(d.node == node, d.day == day).order_by(d.namespace, d.name)
    return [
        {
            "namespace": r.namespace,
            "name": r.name,
            **{c: int(getattr(r, c)) for c in COUNTS},
            "latency_hist": [int(n) for n in r.latency_hist or []],
        }
        for r in conn.execute(stmt)
    ]


def figures_of(entry_rows: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """The rows of a usage feed item as :func:`replace_rows` takes them."""
    return {(r["namespace"], r["name"]): r for r in entry_rows}


def refresh_days(engine: sa.Engine, node_id: str, days: Iterable[str]) -> dict[str, int]:
    """Recompute this node's own rows of ``days`` from its usage records; day -> rows
    written (0: unchanged)."""
    return {day: replace_day(engine, node_id, day, compute(engine, node_id, day)) for day in days}


def refresh(engine: sa.Engine, node_id: str, *, days: int = 2) -> int:
    """Recompute this node's own rows for the last ``days`` Beijing days (today
    included) from its usage records, writing those that changed; rows written."""
    return sum(refresh_days(engine, node_id, last_days(days)).values())
