"""The node's own routes: liveness (``/healthz``), readiness (``/readyz``: the store
answers and its schema is current) and the OpenAPI document (``/openapi.json``), with
the OpenAPI entries of the first two (the catalog's routes describe themselves through
their :class:`~yunnao.registry.api.Endpoint`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from yunnao.plugins.errors import Unavailable

from . import migrate
from .schemas import Health

OPENAPI_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness",
            "tags": ["node"],
            "responses": {"200": {"description": "alive"}},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness (store reachable, schema current)",
            "tags": ["node"],
            "responses": {
                "200": {"description": "ready"},
                "503": {"description": "not ready"},
            },
        }
    },
}


def check_ready(engine: sa.Engine) -> None:
    """:class:`Unavailable` unless the registry database answers and its schema is the
    one this code needs."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        at = migrate.current(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise Unavailable(f"registry database unreachable: {type(exc).__name__}") from None
    if at != migrate.head():
        raise Unavailable(f"registry schema is at {at}, needs {migrate.head()}")


def routes(
    *,
    node_id: str,
    version: str,
    engine: sa.Engine,
    spec: dict[str, Any],
    details: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> list[Route]:
    """``/healthz``, ``/readyz`` (with ``details()``, e.g. the sandbox's state, when
    given) and ``/openapi.json`` (serving ``spec``), in that order."""

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            Health(status="ok", node=node_id, version=version).model_dump(exclude_none=True)
        )

    async def readyz(request: Request) -> Response:
        await anyio.to_thread.run_sync(check_ready, engine)
        body = Health(status="ready", node=node_id).model_dump(exclude_none=True)
        if details is not None:
            body["details"] = await details()
        return JSONResponse(body)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
