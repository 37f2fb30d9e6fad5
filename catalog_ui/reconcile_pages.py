"""The operator page's reconciliation: compare this node's copy of a linked node's
entries with that node's feed (``yunnao cascade diff``), and, for admins, repair."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from yunnao.cascade.reconcile import Reconciler
from yunnao.registry.access import Action, require
from yunnao.registry.identity.middleware import identity_of

from .pages import _check_origin, _page, _render


def _reconciler(request: Request) -> Reconciler:
    cascade = request.app.state.cascade
    return Reconciler(cascade.feed.engine, cascade.node_id, cascade.peers, cascade.applier,
                      cascade.replicator)  # fmt: skip


@_page
async def diff(request: Request) -> Response:
    settings = request.app.state.settings
    require(identity_of(request), Action.READ_NODE, settings.node_id)
    found = await _reconciler(request).diff(request.path_params["peer"])
    return _render(request, "reconcile.html", result=found)


@_page
async def repair(request: Request) -> Response:
    _check_origin(request)
    settings = request.app.state.settings
    require(identity_of(request), Action.MANAGE_NODE, settings.node_id)
    found = await _reconciler(request).diff(request.path_params["peer"], repair=True)
    return _render(request, "reconcile.html", result=found)


def routes() -> list[BaseRoute]:
    return [
        Route("/ops/peers/{peer}/diff", diff, methods=["GET"]),
        Route("/ops/peers/{peer}/repair", repair, methods=["POST"]),
    ]
