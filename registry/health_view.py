"""The ``health`` object of a capability as callers see it (API and pages): whether its
origin can be reached now, with its recent p50 latency and success rate from the daily
usage aggregates. Not part of any content hash or ETag."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.requests import Request

from . import usage_daily
from .db import read_session
from .health import HealthBoard, NodeHealth, NodeState
from .names import in_scope
from .schemas import CapabilityHealth
from .tables import Node
from .titles import Titles

# ---------------------------------------------------------------- titles


def title_lookup(titles: Titles, ttl: float = 30.0) -> Callable[[str], str | None]:
    """A node's Chinese (else English) title, read at most every ``ttl`` seconds."""
    cache: dict[str, Any] = {"at": -1e9, "known": {}}

    def lookup(node: str) -> str | None:
        now = time.monotonic()
        if now - cache["at"] > ttl:
            cache["known"], cache["at"] = titles.known(), now
        named = cache["known"].get(node)
        return (named.zh or named.en) if named is not None else None

    return lookup


# ---------------------------------------------------------------- a capability's health


def hop_for(board: HealthBoard, origin: str, parent: str | None) -> str | None:
    """The linked node calls of ``origin``'s capabilities go through: the child whose
    subtree holds it, else the parent (None for this node's own)."""
    here = board.node_id
    if origin == here:
        return None
    if in_scope(origin, here):
        return ".".join(origin.split(".")[: len(here.split(".")) + 1])
    return parent


def origin_health(board: HealthBoard, origin: str, parent: str | None) -> NodeHealth:
    """The health a capability of ``origin`` shows: its origin's, or (when nothing is
    known of the origin) the hop's; down when either is down."""
    if origin == board.node_id:
        return board.get(origin)
    found = board.get(origin)
    hop = hop_for(board, origin, parent)
    through = board.get(hop) if hop and hop != origin else None
    if through is not None and (
        through.state == NodeState.DOWN or found.state == NodeState.UNKNOWN
    ):
        return NodeHealth(
            node=origin,
            state=through.state,
            since=through.since,
            checked_at=through.checked_at,
            via=hop,
        )
    return found


def capability_health(
    board: HealthBoard, origin: str, parent: str | None, stats: Any = None
) -> CapabilityHealth:
    """The ``health`` object of a capability of node ``origin``; ``stats``: its
    :class:`~yunnao.registry.usage_daily.RecentStats` (None: no calls known)."""
    health = origin_health(board, origin, parent)
    return CapabilityHealth(
        reachable=health.state != NodeState.DOWN,
        state=health.state.value,
        checked_at=health.checked_at,
        since=health.since,
        p50_ms=getattr(stats, "p50_ms", None),
        success_rate=getattr(stats, "success_rate", None),
        calls=getattr(stats, "calls", 0) or 0,
    )


def recent_stats(engine: sa.Engine, keys: Iterable[tuple[str, str]]) -> dict[Any, Any]:
    """Recent usage of ``keys`` (namespace, name) from the daily aggregates."""
    return usage_daily.recent(engine, list(keys))


def parent_of(engine: sa.Engine, node_id: str) -> str | None:
    with read_session(engine) as s:
        row = s.get(Node, node_id)
        return row.parent_id if row is not None else None


def with_health(request: Request, items: list[Any]) -> None:
    """Set the ``health`` of each capability representation in ``items`` (in place;
    nothing when this app keeps no health board)."""
    board: HealthBoard | None = getattr(request.app.state, "health", None)
    engine = getattr(request.app.state, "usage_engine", None)
    if board is None or engine is None or not items:
        return
    stats = recent_stats(engine, [(c.namespace, c.name) for c in items])
    parent = parent_of(engine, board.node_id)
    for cap in items:
        cap.health = capability_health(
            board, cap.origin_node, parent, stats.get((cap.namespace, cap.name))
        )


async def add_health(request: Request, items: list[Any]) -> None:
    await anyio.to_thread.run_sync(with_health, request, items)
