"""Live reachability of the nodes in this node's tree, and a circuit breaker per node.

One :class:`HealthBoard` per node process (``app.state.health``) holds what this node
knows now, in memory:

- **States.** Each linked peer's state comes from the prober
  (:mod:`yunnao.cascade.prober`): ``ok`` when it answers in time, ``late`` when it
  answers but its cascade lags, ``down`` when two probes in a row failed (or one after a
  forwarded call to it failed). Nodes further down come from each child's own answer,
  marked ``via`` that child, and only those strictly below it (a district speaks only
  for its own subtree, :meth:`HealthBoard.adopt`); a node reached through a peer that is
  down is down as well.
- **The breaker.** Calls forwarded to a node ask :meth:`HealthBoard.allow` first. A
  connection error or time-out of a forwarded call, or a failed probe, *opens* the
  breaker at once: calls are refused (the caller gets a 503 within the second) for
  ``open_for`` seconds; then it is *half-open*: exactly one trial call at a time goes
  through, and its success (or a probe answered in time) *closes* it again.

Everything is guarded by one lock, so the request path (threads or the event loop) and
the prober may use it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .clock import BEIJING
from .names import in_scope

MAX_REPORTED = 5000  # nodes taken from one child's answer (more are ignored)


class NodeState(StrEnum):
    OK = "ok"  # 正常
    LATE = "late"  # 延迟
    DOWN = "down"  # 不可达
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeHealth:
    """What this node knows of one node now."""

    node: str
    state: NodeState
    since: datetime | None = None  # when it entered this state
    checked_at: datetime | None = None  # the last probe (or report) it is based on
    latency_ms: float | None = None
    detail: str | None = None
    lag: int | None = None  # entries behind in the cascade
    via: str | None = None  # the linked peer it is reached through (None: self, direct peer)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state.value,
            "since": _iso(self.since),
            "checked_at": _iso(self.checked_at),
            "latency_ms": self.latency_ms,
            "detail": self.detail,
            "lag": self.lag,
            "via": self.via,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def beijing_clock(at: datetime) -> str:
    """``HH:MM:SS`` of ``at`` in Beijing time."""
    return at.astimezone(BEIJING).strftime("%H:%M:%S")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Node:
    """The mutable record behind one node's :class:`NodeHealth`."""

    state: NodeState = NodeState.UNKNOWN
    since: datetime | None = None
    checked_at: datetime | None = None
    latency_ms: float | None = None
    detail: str | None = None
    lag: int | None = None
    via: str | None = None
    probe_failures: int = 0  # in a row
    call_failed: bool = False  # a forwarded call failed since the last good probe
    open_until: float | None = None  # monotonic; None: the breaker is closed
    trial: bool = False  # a half-open trial call is on its way
    extra: dict[str, Any] = field(default_factory=dict)

    def enter(self, state: NodeState, at: datetime) -> None:
        if state != self.state:
            self.state, self.since = state, at

    def view(self, node: str) -> NodeHealth:
        return NodeHealth(
            node=node,
            state=self.state,
            since=self.since,
            checked_at=self.checked_at,
            latency_ms=self.latency_ms,
            detail=self.detail,
            lag=self.lag,
            via=self.via,
        )


class HealthBoard:
    """Node states and breakers, in memory (see the module's docstring).

    ``title``: a node's title for messages (None: its id alone)."""

    def __init__(
        self,
        node_id: str,
        *,
        open_for: float = 5.0,
        title: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.open_for = open_for
        self.title = title
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._started = _now()

    # ------------------------------------------------------------ reads

    def _get(self, node: str) -> _Node:
        found = self._nodes.get(node)
        if found is None:
            found = self._nodes[node] = _Node()
        return found

    def _view(self, node: str) -> NodeHealth:
        if node == self.node_id:
            # This node answers whoever asks; nothing probes it (so its capabilities'
            # representations stay the same between reads).
            return NodeHealth(node=node, state=NodeState.OK, since=self._started)
        record = self._nodes.get(node)
        if record is None:
            return NodeHealth(node=node, state=NodeState.UNKNOWN)
        health = record.view(node)
        if record.via is not None and health.state != NodeState.DOWN:
            through = self._nodes.get(record.via)
            if through is not None and through.state == NodeState.DOWN:
                health = replace(
                    health,
                    state=NodeState.DOWN,
                    since=through.since,
                    detail=f"reached through node {record.via}, which is unreachable",
                )
        return health

    def get(self, node: str) -> NodeHealth:
        """``node``'s health now (``unknown`` for a node never probed nor reported)."""
        with self._lock:
            return self._view(node)

    def snapshot(self) -> dict[str, NodeHealth]:
        """Every node this node knows the health of, this node included, by id."""
        with self._lock:
            ids = [self.node_id, *(n for n in self._nodes if n != self.node_id)]
            return {n: self._view(n) for n in ids}

    def reachable(self, node: str) -> bool:
        """False when ``node``, or the peer it is reached through, is down."""
        return self.get(node).state != NodeState.DOWN

    def name(self, node: str) -> str:
        """``node`` by id, with its title when one is known: ``sd.qd.shinan (市南区)``."""
        title = None
        if self.title is not None:
            try:
                title = self.title(node)
            except Exception:  # a title is a nicety: never fail a call for it
                title = None
        return f"{node} ({title})" if title else node

    def why_down(self, node: str) -> str:
        """A sentence for callers: which node, and since when (Beijing time)."""
        health = self.get(node)
        since = health.since if health.state == NodeState.DOWN else None
        with self._lock:
            record = self._nodes.get(node)
            opened = record is not None and record.open_until is not None
        if since is None and opened and record is not None:
            since = record.checked_at
        when = f" since {beijing_clock(since)} (Beijing time)" if since else ""
        return f"node {self.name(node)} is unreachable{when}"

    # ------------------------------------------------------------ the breaker

    def allow(self, node: str) -> bool:
        """Whether a call may go to ``node`` now: yes while its breaker is closed; no
        while it is open; once ``open_for`` seconds have passed, yes for exactly one
        trial call at a time (half-open)."""
        with self._lock:
            record = self._nodes.get(node)
            if record is None or record.open_until is None:
                return True
            if self._clock() < record.open_until or record.trial:
                return False
            record.trial = True
            return True

    def is_open(self, node: str) -> bool:
        """Whether ``node``'s breaker is open or half-open."""
        with self._lock:
            record = self._nodes.get(node)
            return record is not None and record.open_until is not None

    def success(self, node: str) -> None:
        """A call to ``node`` got an answer (any answer: the node is there)."""
        with self._lock:
            record = self._get(node)
            record.open_until, record.trial = None, False
            record.call_failed = False
            if record.state == NodeState.DOWN:
                now = _now()
                record.enter(NodeState.OK, now)
                record.checked_at, record.detail = now, None

    def failure(self, node: str, detail: str) -> None:
        """A call to ``node`` could not connect or timed out: open its breaker now."""
        with self._lock:
            record = self._get(node)
            record.open_until = self._clock() + self.open_for
            record.trial = False
            record.call_failed = True
            record.detail = detail

    def release(self, node: str) -> None:
        """A trial call ended without telling (it was cancelled): let another try."""
        with self._lock:
            record = self._nodes.get(node)
            if record is not None:
                record.trial = False

    # ------------------------------------------------------------ probes

    def probed(
        self,
        node: str,
        ok: bool,
        latency_ms: float | None,
        detail: str | None,
        *,
        lag: int | None = None,
        late: bool = False,
    ) -> NodeHealth:
        """The result of probing linked peer ``node``: answered in time (``ok``; ``late``
        when its cascade lags) or not. A failed probe opens the breaker at once; the
        node is down after two failed probes in a row, or one after a failed call."""
        now = _now()
        with self._lock:
            record = self._get(node)
            record.via = None
            record.checked_at = now
            record.latency_ms = latency_ms
            record.detail = detail
            if ok:
                record.probe_failures = 0
                record.call_failed = False
                record.open_until, record.trial = None, False
                record.lag = lag
                record.enter(NodeState.LATE if late else NodeState.OK, now)
            else:
                record.probe_failures += 1
                record.open_until = self._clock() + self.open_for
                if record.probe_failures >= 2 or record.call_failed:
                    record.enter(NodeState.DOWN, now)
            return self._view(node)

    def adopt(self, child: str, nodes: Any) -> int:
        """Take linked child ``child``'s own view of its subtree (its answer's list of
        node health objects): only nodes strictly below ``child`` are taken, marked
        ``via`` it, replacing what it said before; whatever else it claims (itself, a
        sibling, this node or above) is ignored. The number of nodes taken."""
        taken: dict[str, _Node] = {}
        for item in nodes[:MAX_REPORTED] if isinstance(nodes, list) else []:
            if not isinstance(item, Mapping):
                continue
            node = item.get("node")
            if not isinstance(node, str) or node == child or not in_scope(node, child):
                continue
            try:
                state = NodeState(item.get("state"))
            except ValueError:
                state = NodeState.UNKNOWN
            latency, lag, detail = item.get("latency_ms"), item.get("lag"), item.get("detail")
            taken[node] = _Node(
                state=state,
                since=_parse_time(item.get("since")),
                checked_at=_parse_time(item.get("checked_at")),
                latency_ms=float(latency) if isinstance(latency, int | float) else None,
                detail=str(detail)[:500] if isinstance(detail, str) else None,
                lag=int(lag) if isinstance(lag, int) else None,
                via=child,
            )
        with self._lock:
            for node in [n for n, r in self._nodes.items() if r.via == child]:
                if node not in taken:
                    del self._nodes[node]
            for node, record in taken.items():
                old = self._nodes.get(node)
                if old is not None and old.via is None:
                    continue  # a node this one probes itself (never from hearsay)
                if old is not None:  # keep the breaker of calls forwarded towards it
                    record.open_until, record.trial = old.open_until, old.trial
                self._nodes[node] = record
        return len(taken)

    def forget(self, node: str) -> None:
        """Drop ``node`` (unlinked) and what was reported through it."""
        with self._lock:
            for other in [n for n, r in self._nodes.items() if n == node or r.via == node]:
                del self._nodes[other]

    def subtree(self, root: str | None = None) -> list[NodeHealth]:
        """The health of every known node strictly below ``root`` (default: this node):
        what this node answers its parent's probe with."""
        root = root or self.node_id
        return [h for n, h in sorted(self.snapshot().items()) if n != root and in_scope(n, root)]
