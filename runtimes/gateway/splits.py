"""Traffic splits: a canary, a shadow, and the rule that rolls them back by itself.

A capability's writers set a split at the node that owns it (``PUT .../split``, see
:mod:`~yunnao.runtimes.gateway.splits_api`). While it is set, a call that names the
capability alone (``name``, no version, no alias) goes to the ``canary`` version with
probability ``share`` (a random draw per call) and to the ``stable`` version otherwise
(by default the version that was current when the split was set, so that publishing the
canary, which makes it the newest, does not send it every call); every such call is
also mirrored to the ``shadow`` version, whose answer is dropped and
whose failure or slowness never reaches the caller (its usage is recorded with mode
``shadow``). A pinned call (``name@1.2.0``, ``name@latest``, ``name@production``) is
never split. A version reached through a split passes the same access check as the
version called pinned; one the caller could not call is not used for them.

Rollback: each gateway process counts the 5xx answers of the canary and shadow
versions over the rule's window, in memory (no store query on a call's path). Once a
version has at least ``min_calls`` calls in the window and its error rate passes
``max_error_rate``, the process rolls the split back in the store: it removes it, or,
while a version newer than ``stable`` is current (the canary itself, most often), keeps
it without canary and shadow as a pin on ``stable`` with a note saying why, until its
writers clear it. The write is conditional: when several processes decide at once,
the first one's is the one that counts, is logged and is audited as ``rollbackSplit``
(naming the capability, the version, its error rate and calls); the other processes
follow the store within the cache TTL, as resolution does.

The per-version figures that ``GET .../split`` shows come from the usage records
(``usage_record``) over the window, not from memory: they cover every process of the
node and survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import anyio.to_thread
import sqlalchemy as sa

from yunnao.plugins.errors import FieldError, Forbidden, ValidationFailed, YunnaoError
from yunnao.registry.audit import AuditLog, Event
from yunnao.registry.db import read_session
from yunnao.registry.names import namespace_node
from yunnao.registry.store import RegistryStore
from yunnao.registry.tables import TrafficSplit, UsageRecord, utcnow

from ..adapters.base import Target
from .calls import Call
from .usage import UsageLog

if TYPE_CHECKING:
    from .core import Gateway

log = logging.getLogger("yunnao.gateway.splits")

ROLLBACK_ACTION = "rollbackSplit"
MAX_SHADOWS = 256  # shadow calls in flight per process; more are dropped, never queued
CALLABLE = ("published", "deprecated")  # what a split may send calls to

_table = TrafficSplit.__table__  # type: ignore[attr-defined]
_usage = UsageRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rule:
    """When a split rolls back: a version's 5xx rate over ``window`` seconds passes
    ``max_error_rate`` with at least ``min_calls`` calls in it."""

    max_error_rate: float = 0.05
    min_calls: int = 50
    window: float = 300.0


@dataclass(frozen=True)
class Split:
    namespace: str
    name: str
    stable: str | None = None  # None until set: the current version
    canary: str | None = None
    share: float = 0.0
    shadow: str | None = None
    rule: Rule = field(default_factory=Rule)
    set_by: str | None = None
    set_at: datetime | None = None
    note: str | None = None  # why it was rolled back

    @property
    def watched(self) -> tuple[str, ...]:
        return tuple(v for v in (self.canary, self.shadow) if v is not None)


@dataclass(frozen=True)
class VersionFigures:
    version: str
    role: str  # stable, canary, shadow or current
    calls: int
    errors: int  # 5xx answers
    p50_ms: float | None
    p99_ms: float | None


def _row_split(row: Any) -> Split:
    rule = Rule(row.max_error_rate, row.min_calls, row.window_s)
    return Split(
        row.namespace, row.name, row.stable, row.canary, row.share, row.shadow, rule,
        row.set_by, row.set_at, row.note,
    )  # fmt: skip


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class Splits:
    """The splits of one node: stored, cached per process, routed, watched."""

    def __init__(
        self,
        store: RegistryStore,
        audit: AuditLog | None = None,
        usage: UsageLog | None = None,
        *,
        cache_ttl: float = 2.0,
    ) -> None:
        self.store = store
        self.audit = audit
        self.usage = usage
        self.cache_ttl = cache_ttl
        self._cache: dict[tuple[str, str], tuple[float, int, Split | None]] = {}
        # (namespace, name, version) -> its answers in the window, and how many failed
        self._seen: dict[tuple[str, str, str], deque[tuple[float, bool]]] = {}
        self._failed: dict[tuple[str, str, str], int] = {}
        self._rolling: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.draw = random.random  # a test may make the draw deterministic

    # ------------------------------------------------------------ the store

    def get(self, namespace: str, name: str) -> Split | None:
        """The stored split of ``namespace/name`` (no access check)."""
        with read_session(self.store.engine) as s:
            row = s.get(TrafficSplit, (namespace, name))
            return None if row is None else _row_split(row)

    def check(self, split: Split) -> Split:
        """``split`` with its stable version (default: the current one), or the refusal:
        403 for another node's namespace, 404 for a capability that does not exist, 422
        (naming the field) for versions that cannot serve."""
        self.owned(split.namespace)
        current = self.store.resolve(split.namespace, split.name).version.version
        if split.canary is None and split.shadow is None:
            raise ValidationFailed(
                "a split needs a canary, a shadow or both",
                errors=[FieldError("canary", "give canary or shadow")],
            )
        stable = split.stable or current
        given = (("stable", stable), ("canary.version", split.canary),
                 ("shadow.version", split.shadow))  # fmt: skip
        for where, number in given:
            if number is None:
                continue
            if where != "stable" and number == stable:
                problem = f"{number} is the stable version; name another"
            else:
                problem = self._unservable(split.namespace, split.name, number)
            if problem is not None:
                raise ValidationFailed(f"{where}: {problem}", errors=[FieldError(where, problem)])
        return dataclasses.replace(split, stable=stable)

    def _unservable(self, namespace: str, name: str, number: str) -> str | None:
        try:
            status = self.store.resolve(namespace, name, number).version.status
        except YunnaoError:
            return f"no version {number}"
        if status in CALLABLE:
            return None
        return f"{number} is {status}; a split needs a published or deprecated version"

    def owned(self, namespace: str) -> None:
        """Refuse (403) a namespace of another node: its split is set where it lives."""
        owner = namespace_node(namespace)
        if owner != self.store.node_id:
            raise Forbidden(
                f"namespace {namespace!r} belongs to node {owner!r}; set its split there"
            )

    def put(self, split: Split) -> Split:
        """Check and store ``split`` (replacing any), for every process of the node."""
        stored = dataclasses.replace(self.check(split), set_at=utcnow(), note=None)
        values = {
            "stable": stored.stable, "canary": stored.canary, "share": stored.share,
            "shadow": stored.shadow, "max_error_rate": stored.rule.max_error_rate,
            "min_calls": stored.rule.min_calls, "window_s": stored.rule.window,
            "set_by": stored.set_by, "set_at": stored.set_at, "note": None,
        }  # fmt: skip
        key = {"namespace": split.namespace, "name": split.name}
        with self.store.transaction() as s:
            conn = s.connection()
            done = conn.execute(
                _table.update()
                .where(_table.c.namespace == split.namespace, _table.c.name == split.name)
                .values(**values)
            ).rowcount
            if not done:
                conn.execute(_table.insert().values(**key, **values))
        self._forget(split.namespace, split.name)
        return stored

    def remove(self, namespace: str, name: str) -> bool:
        """Remove the split of ``namespace/name``; whether there was one."""
        where = (_table.c.namespace == namespace, _table.c.name == name)
        with self.store.transaction() as s:
            removed = s.connection().execute(_table.delete().where(*where)).rowcount
        self._forget(namespace, name)
        return bool(removed)

    def roll_back(self, split: Split, note: str) -> bool:
        """Remove ``split``'s canary and shadow if the store still holds them (whether
        this call did): the whole split when ``stable`` is the current version, else
        only them, leaving a pin on ``stable`` with ``note``."""
        ns, name = split.namespace, split.name
        where = [_table.c.namespace == ns, _table.c.name == name, _table.c.stable == split.stable]
        for column, value in ((_table.c.canary, split.canary), (_table.c.shadow, split.shadow)):
            where.append(column.is_(None) if value is None else column == value)
        current = self.store.resolve(ns, name).version.version
        with self.store.transaction() as s:
            conn = s.connection()
            if current == split.stable:
                done = conn.execute(_table.delete().where(*where)).rowcount
            else:
                pin = {"canary": None, "share": 0.0, "shadow": None, "note": note[:500]}
                done = conn.execute(_table.update().where(*where).values(**pin)).rowcount
        self._forget(ns, name)
        return bool(done)

    def _forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)
        for key in [k for k in self._seen if k[:2] == (namespace, name)]:
            del self._seen[key]
            self._failed.pop(key, None)

    async def current(self, namespace: str, name: str) -> Split | None:
        """The split calls follow: cached for ``cache_ttl`` (this process's own writes
        at once, other processes' within the TTL)."""
        key = (namespace, name)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic() and hit[1] == self.store.generation:
            return hit[2]
        generation = self.store.generation
        split = await anyio.to_thread.run_sync(self.get, namespace, name)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.cache_ttl, generation, split)
        return split

    # ------------------------------------------------------------ routing

    async def route(
        self, gateway: Gateway, identity: Any, namespace: str, name_ref: str, call: Call
    ) -> tuple[Call, Call | None]:
        """The version this call goes to, and the shadow it is mirrored to (or None).
        Only a call naming the capability alone is split; each version a split sends
        it to is resolved for the caller as if they had named it."""
        if "@" in name_ref:
            return call, None
        split = await self.current(namespace, name_ref)
        if split is None:
            return call, None
        chosen = call
        if split.stable and split.stable != call.target.version:
            chosen = await self._resolved(
                gateway, identity, namespace, name_ref, split.stable, call
            )
        if split.canary and split.canary != chosen.target.version and self.draw() < split.share:
            chosen = await self._resolved(
                gateway, identity, namespace, name_ref, split.canary, chosen
            )
        shadow = None
        if split.shadow and split.shadow != chosen.target.version:
            shadow = await self._resolved(
                gateway, identity, namespace, name_ref, split.shadow, None
            )
        return chosen, shadow

    @staticmethod
    async def _resolved(
        gateway: Gateway, identity: Any, namespace: str, name: str, version: str, fallback: Any
    ) -> Any:
        try:
            return await gateway.resolve(identity, namespace, f"{name}@{version}")
        except YunnaoError as exc:  # retired since, or not the caller's to call
            log.info("split of %s/%s skips %s: %s", namespace, name, version, exc.detail)
            return fallback

    def mirror(self, gateway: Gateway, identity: Any, shadow: Call, data: Any, **kw: Any) -> None:
        """Send ``data`` to the shadow version in the background; its answer is dropped."""
        if len(self._tasks) >= MAX_SHADOWS:
            log.warning("shadow call of %s dropped: too many in flight", shadow.target.id)
            return
        with contextlib.suppress(Exception):  # an uncopyable input is passed as it is
            data = copy.deepcopy(data)
        task = asyncio.get_running_loop().create_task(
            self._shadow(gateway, identity, shadow, data, kw)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _shadow(gateway: Gateway, identity: Any, shadow: Call, data: Any, kw: Any) -> None:
        # A failure is recorded (usage, metrics, log) by invoke; never the caller's concern.
        with contextlib.suppress(YunnaoError):
            await gateway.invoke(identity, shadow, data, mode="shadow", **kw)

    # ------------------------------------------------------------ rollback

    def observe(self, target: Target, status: int) -> None:
        """Count one answer of ``target`` (called for every call): a canary's or
        shadow's 5xx rate over the window may roll the split back."""
        key = (target.namespace, target.name)
        hit = self._cache.get(key)
        split = hit[2] if hit is not None else None
        if split is None or target.version not in split.watched or key in self._rolling:
            return
        now = time.monotonic()
        slot = (*key, target.version)
        seen = self._seen.setdefault(slot, deque())
        failed = self._failed.get(slot, 0) + (status >= 500)
        seen.append((now, status >= 500))
        while seen and seen[0][0] < now - split.rule.window:
            failed -= seen.popleft()[1]  # a running count: no pass over the window per call
        self._failed[slot] = failed
        calls = len(seen)
        if calls < split.rule.min_calls:
            return
        rate = failed / calls
        if rate > split.rule.max_error_rate:
            self._rolling.add(key)
            task = asyncio.get_running_loop().create_task(
                self._roll_back(split, target.version, rate, calls)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _roll_back(self, split: Split, version: str, rate: float, calls: int) -> None:
        key = (split.namespace, split.name)
        rule = split.rule
        role = "canary" if version == split.canary else "shadow"
        note = (
            f"rolled back at {utcnow().isoformat(timespec='seconds')}: {role} {version} "
            f"answered 5xx to {rate:.1%} of {calls} calls in {rule.window:g} s "
            f"(the rule allows {rule.max_error_rate:.1%})"
        )
        try:
            done = await anyio.to_thread.run_sync(self.roll_back, split, note)
        except Exception:
            log.exception("could not roll back the split of %s/%s", *key)
            return
        finally:
            self._rolling.discard(key)
        if not done:
            return  # another process decided first, or the split changed meanwhile
        log.warning("the traffic split of %s/%s is %s", *key, note)
        if self.audit is not None:
            terms = {role: version, "error_rate": f"{rate:.4f}", "calls": calls,
                     "max_error_rate": rule.max_error_rate, "window": rule.window}  # fmt: skip
            path = f"/v1/capabilities/{split.namespace}/{split.name}/split?{urlencode(terms)}"
            self.audit.record(
                Event(
                    actor=None, issuer=None, role="system", peer=None, action=ROLLBACK_ACTION,
                    method="DELETE", path=path, status=200,
                )
            )  # fmt: skip

    # ------------------------------------------------------------ figures

    def figures(self, split: Split, current: str) -> list[VersionFigures]:
        """Per-version calls, 5xx answers and latency over the rule's window, from the
        usage records of every process of the node."""
        since = utcnow() - timedelta(seconds=split.rule.window)
        roles = {current: "current"}
        roles.update({v: "stable" for v in [split.stable] if v})
        roles.update({v: "canary" for v in [split.canary] if v})
        roles.update({v: "shadow" for v in [split.shadow] if v})
        query = (
            sa.select(_usage.c.version, _usage.c.status, _usage.c.latency_ms)
            .where(
                _usage.c.namespace == split.namespace,
                _usage.c.name == split.name,
                _usage.c.at >= since,
                _usage.c.version.in_(list(roles)),
            )
            .order_by(_usage.c.at.desc())
            .limit(200_000)
        )
        by: dict[str, list[tuple[int, float]]] = {v: [] for v in roles}
        with self.store.engine.connect() as conn:
            for version, status, latency in conn.execute(query):
                by[version].append((status, latency))
        out = []
        for version, rows in by.items():
            ordered = sorted(latency for _, latency in rows)
            out.append(
                VersionFigures(
                    version, roles[version], len(rows), sum(1 for s, _ in rows if s >= 500),
                    _percentile(ordered, 0.5), _percentile(ordered, 0.99),
                )
            )  # fmt: skip
        return out
