"""``GET /metrics``: the Prometheus exposition, for the node's operators and admins
(``read-node``); each capability's series shows only to a reader the policy lets
discover it (:mod:`.metrics_view`). Reading it first refreshes each runtime's ``up``
gauge from its health check."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from yunnao.registry.access import Action, require
from yunnao.registry.identity.middleware import identity_of

from ..adapters.manager import Runtimes
from . import metrics_view
from .metrics import Metrics

OPENAPI_PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (invocations, latency, jobs, runtimes); "
            "needs an operator or admin token of this node",
            "tags": ["node"],
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "text exposition format"},
                "401": {"description": "Authentication required"},
                "403": {"description": "Forbidden"},
            },
        }
    },
}


def route(*, node_id: str, runtimes: Runtimes, metrics: Metrics, engine: sa.Engine) -> Route:
    """The ``/metrics`` route of node ``node_id``."""

    async def prometheus(request: Request) -> Response:
        # Operators only; labels name capabilities: each shows only to whom the policy
        # lets discover it.
        identity = identity_of(request)
        require(identity, Action.READ_NODE, node_id)
        for rtype, health in (await runtimes.health()).items():
            metrics.runtime_up.labels(rtype).set(1 if health.ok else 0)
        text = await anyio.to_thread.run_sync(
            metrics_view.exposition, metrics.registry, identity, engine
        )
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", prometheus, methods=["GET"])
