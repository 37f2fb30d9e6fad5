"""The federation overview (``/overview``), the landing page for signed-in staff: the
tree of nodes from this node's parent down with each node's state (正常 / 延迟 / 不可达 /
未知, from :class:`~yunnao.registry.health.HealthBoard` and the cascade's lag),
capabilities per node, department and domain (what the viewer may discover), calls per
day across the subtree from the daily usage aggregates, the most-called capabilities and
error rates per node. Times are Beijing time."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from yunnao.cascade.peers import PeerStatus
from yunnao.registry import access, search, usage_daily, visibility
from yunnao.registry.access import Action, Identity
from yunnao.registry.clock import BEIJING
from yunnao.registry.db import read_session
from yunnao.registry.identity.middleware import identity_of
from yunnao.registry.names import namespace_node
from yunnao.registry.tables import CapabilityRow, Node, UsageDaily

from . import charts, i18n
from .pages import _page, _render, _run

DAYS = 14
TOP = 10
# A node's state: its label (translated) and the page's class for its colour.
STATES = {s: f"state:{s}" for s in ("ok", "late", "down", "unknown")}


@dataclass(frozen=True)
class TreeNode:
    id: str
    depth: int
    state: str  # ok | late | down | unknown
    since: str | None  # Beijing time
    lag: int | None
    detail: str | None
    relation: str  # parent | self | child | below
    capabilities: int
    calls: int
    errors: int


def beijing(at: datetime | None, fmt: str = "%m-%d %H:%M") -> str | None:
    return at.astimezone(BEIJING).strftime(fmt) if at is not None else None


def in_subtree(node: str, top: str) -> bool:
    return node == top or node.startswith(top + ".")


def tree(
    node_id: str, known: dict[str, str | None], peers: list[PeerStatus]
) -> list[tuple[str, int, str]]:
    """(node, depth, relation) from this node's parent down: the parent, this node, then
    the nodes under it, each after its parent (depth-first, by id)."""
    parent = next((p.id for p in peers if p.relation == "parent"), None) or known.get(node_id)
    children: dict[str | None, list[str]] = defaultdict(list)
    below = sorted(n for n in known if n != node_id and in_subtree(n, node_id))
    for n in below:
        up = known.get(n)
        if up is None or not in_subtree(up, node_id):  # unknown parent: by its id
            up = n.rsplit(".", 1)[0] if "." in n else node_id
            while up not in known and up != node_id and "." in up:
                up = up.rsplit(".", 1)[0]
            if not in_subtree(up, node_id):
                up = node_id
        children[up].append(n)
    for p in peers:  # linked children not yet in the node table
        if p.relation == "child" and p.id not in below:
            children[node_id].append(p.id)
    out: list[tuple[str, int, str]] = []
    depth = 0
    if parent:
        out.append((parent, 0, "parent"))
        depth = 1
    seen: set[str] = set()

    def walk(n: str, d: int, relation: str) -> None:
        if n in seen:
            return
        seen.add(n)
        out.append((n, d, relation))
        for c in sorted(set(children.get(n, []))):
            walk(c, d + 1, "child" if n == node_id else "below")

    walk(node_id, depth, "self")
    return out


def seen_by(
    identity: Identity, engine: sa.Engine, node_id: str, rows: list[UsageDaily]
) -> list[UsageDaily]:
    """The rows whose calls ``identity`` may see, as every view of statistics asks
    (docs/security.md): those of capabilities it may discover; a department's summed
    calls of restricted capabilities (name "") as a restricted entry of that department."""
    shown = visibility.visible(identity, engine, {(r.namespace, r.name) for r in rows if r.name})

    def restricted_seen(r: UsageDaily) -> bool:
        entry = access.Entry(r.namespace, "restricted", local=r.node == node_id)
        return access.decide(identity, Action.DISCOVER, entry).allowed

    return [r for r in rows if ((r.namespace, r.name) in shown if r.name else restricted_seen(r))]


def _gather(request: Request) -> dict[str, Any]:
    app = request.app
    settings = app.state.settings
    node_id: str = settings.node_id
    identity = identity_of(request)
    engine = app.state.usage_engine
    peers = [PeerStatus.of(p) for p in app.state.cascade.peers.all()]
    with read_session(engine) as s:
        known = {n.id: n.parent_id for n in s.exec(select(Node)).all()}
    # Capabilities the viewer may discover, by node, department and domain.
    found = app.state.catalog.store.search(identity, search.SearchQuery(per_page=1))
    facets: dict[str, dict[str, int]] = found.facets
    # Calls per day across the subtree, per node and per capability.
    days = usage_daily.last_days(DAYS)
    rows = [r for r in usage_daily.rows(engine, days[0], days[-1]) if in_subtree(r.node, node_id)]
    rows = seen_by(identity, engine, node_id, rows)
    per_day: dict[str, list[int]] = {d: [0, 0, 0] for d in days}
    per_node: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_cap: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        tally = per_day.setdefault(r.day, [0, 0, 0])
        tally[0] += r.calls
        tally[1] += r.errors
        tally[2] += r.refused + r.invalid
        per_node[r.node][0] += r.calls
        per_node[r.node][1] += r.errors
        if r.name:
            per_cap[(r.namespace, r.name)] += r.calls
    ranked = sorted(per_cap.items(), key=lambda kv: (-kv[1], kv[0]))
    top: list[tuple[str, str, str, int]] = []
    if ranked:
        wanted = {k for k, _ in ranked[: TOP * 5]}
        with read_session(engine) as s:
            caps = s.exec(
                select(CapabilityRow).where(
                    col(CapabilityRow.namespace).in_({ns for ns, _ in wanted})
                )
            ).all()
            titles = {
                (c.namespace, c.name): c.title
                for c in caps
                if (c.namespace, c.name) in wanted and access.may_discover(identity, c)
            }
        top = [(ns, n, titles[(ns, n)], calls) for (ns, n), calls in ranked if (ns, n) in titles]
        top = top[:TOP]
    board = getattr(app.state, "health", None)
    lag_of = {p.id: p.lag_entries for p in peers}
    nodes: list[TreeNode] = []
    for n, depth, relation in tree(node_id, known, peers):
        h = board.get(n) if board is not None else None
        state = str(h.state) if h is not None else "unknown"
        lag = lag_of.get(n) if lag_of.get(n) is not None else (h.lag if h is not None else None)
        nodes.append(
            TreeNode(
                id=n,
                depth=depth,
                state=state if state in STATES else "unknown",
                since=beijing(h.since) if h is not None else None,
                lag=lag,
                detail=h.detail if h is not None else None,
                relation=relation,
                capabilities=sum(
                    c for origin, c in facets.get("node", {}).items() if in_subtree(origin, n)
                )
                if relation != "parent"
                else facets.get("node", {}).get(n, 0),
                calls=sum(v[0] for k, v in per_node.items() if in_subtree(k, n))
                if relation != "parent"
                else 0,
                errors=sum(v[1] for k, v in per_node.items() if in_subtree(k, n))
                if relation != "parent"
                else 0,
            )
        )
    return {
        "nodes": nodes,
        "facets": facets,
        "total": found.total,
        "days": days,
        "per_day": per_day,
        "per_node": dict(per_node),
        "top": top,
        "calls": sum(v[0] for v in per_day.values()),
        "now": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M"),
    }


@_page
async def overview(request: Request) -> Response:
    if not identity_of(request).authenticated:
        return RedirectResponse("/signin?next=/overview", status_code=303)
    data = await _run(_gather, request)
    lang = i18n.language(request)
    _ = i18n.translator(lang)
    from .names import Namer

    named = Namer.of(request, lang)
    labels = [d[5:] for d in data["days"]]
    per_day = data["per_day"]
    calls_chart = charts.bars(
        _("Calls per day (last {n} days, Beijing time)", n=DAYS),
        labels,
        [
            charts.Series(_("calls"), [float(per_day[d][0]) for d in data["days"]]),
            charts.Series(_("errors (5xx)"), [float(per_day[d][1]) for d in data["days"]]),
            charts.Series(
                _("refused or invalid (4xx)"), [float(per_day[d][2]) for d in data["days"]]
            ),
        ],
        x_label=_("day"),
        y_label=_("calls"),
        width=440,
    )
    top = data["top"]
    # Two districts often publish the same capability: name its node where a title repeats.
    seen = Counter(t[2] for t in top)
    top_labels = [
        t[2] if seen[t[2]] == 1 else f"{t[2]}（{named.title(namespace_node(t[0]))}）" for t in top
    ]
    top_chart = (
        charts.hbars(
            _("Most called capabilities"),
            top_labels,
            [float(t[3]) for t in top],
            name=_("calls, last {n} days", n=DAYS),
            label_w=196,
        )
        if top
        else None
    )
    rated = [
        (n, v[1] / v[0]) for n, v in sorted(data["per_node"].items()) if v[0]
    ]  # error rate per node with calls
    errors_chart = (
        charts.hbars(
            _("Error rate per node"),
            [named.title(n) for n, _r in rated],
            [100 * r for _n, r in rated],
            "%",
            name=_("calls failing with 5xx, last {n} days", n=DAYS),
            colour=1,
            value_format="{:.1f}",
        )
        if rated
        else None
    )
    facets = data["facets"]

    def counts(facet: str) -> list[tuple[str, int]]:
        return sorted(facets.get(facet, {}).items(), key=lambda kv: (-kv[1], kv[0]))

    return _render(
        request,
        "overview.html",
        nodes=data["nodes"],
        states=STATES,
        total=data["total"],
        by_node=counts("node"),
        by_department=counts("namespace"),
        by_domain=counts("domain"),
        calls=data["calls"],
        calls_chart=calls_chart,
        top=top,
        top_chart=top_chart,
        errors_chart=errors_chart,
        now=data["now"],
        days=DAYS,
        health_known=getattr(request.app.state, "health", None) is not None,
    )


def routes() -> list[BaseRoute]:
    return [Route("/overview", overview, methods=["GET"])]
