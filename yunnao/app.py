"""Assemble one node: store, migrations, node key, catalog API, health and OpenAPI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from yunnao import __version__
from yunnao.plugins.errors import Unavailable, YunnaoError
from yunnao.plugins.loader import Plugins
from yunnao.registry import api, db, migrate, openapi, tokens
from yunnao.registry.auth import AuthMiddleware
from yunnao.registry.problems import EXCEPTION_HANDLERS
from yunnao.registry.publishing import Publisher
from yunnao.registry.schemas import Health
from yunnao.registry.store import RegistryStore

from .settings import Settings

log = logging.getLogger("yunnao.node")


def model_store(settings: Settings) -> Any:
    """The node's MLflow: a configured tracking server, or the embedded one."""
    from yunnao.registry.models import ModelStore

    if settings.mlflow_tracking_uri:
        return ModelStore(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    return ModelStore.embedded(settings.data_dir)


def load_plugins(settings: Settings) -> Plugins:
    """The installed plugins; each one that fails is logged with its cause and left out."""
    plugins = Plugins()
    if settings.plugins:
        plugins.load_entry_points()
    for problem in plugins.problems:
        log.warning("%s", problem)
    return plugins


def publish_new(publisher: Publisher, plugins: Plugins) -> None:
    """Publish each loaded capability whose version this node does not have yet, into
    its plugin's department; a failure is logged and the node starts anyway."""
    for cap in plugins.capabilities.values():
        namespace = publisher.default_namespace(cap)
        if namespace is None:
            log.warning("not publishing %s: plugin %r names no department", cap.name, cap.plugin)
            continue
        if cap.version in publisher.store.version_numbers(namespace, cap.name):
            continue
        try:
            published = publisher.publish(cap, namespace=namespace)
        except YunnaoError as exc:
            log.warning("could not publish %s/%s: %s", namespace, cap.name, exc.detail)
        else:
            log.info("published %s as %s", published.version.id, published.model_uri)


class SchemaOutOfDate(RuntimeError):
    """The store's schema is not the one this code needs (run ``yunnao db upgrade``)."""


def prepare_store(settings: Settings) -> sa.Engine:
    """An engine on an up-to-date schema. The embedded SQLite store is upgraded in place;
    a shared (PostgreSQL) store must be upgraded on purpose with ``yunnao db upgrade``,
    so that many gateways starting at once never race to migrate it."""
    engine = db.create_engine(settings.db_url)
    if db.is_sqlite(engine):
        migrate.upgrade(engine)
    else:
        at, want = migrate.current(engine), migrate.head()
        if at != want:
            engine.dispose()
            raise SchemaOutOfDate(
                f"the registry database is at schema {at or 'none'}, this node needs {want}: "
                "run `yunnao db upgrade` first"
            )
    return engine


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    plugins = load_plugins(settings)
    engine = prepare_store(settings)
    key = tokens.load_or_create_key(settings.key_path)
    public_key = key.public_key()
    store = RegistryStore(engine, settings.node_id)
    store.ensure_node(title=settings.node_title, public_key=tokens.public_key_text(key))
    publisher = Publisher(store, model_store(settings))

    def verify(token: str) -> Any:
        return tokens.verify(public_key, settings.node_id, token)

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            Health(status="ok", node=settings.node_id, version=__version__).model_dump(
                exclude_none=True
            )
        )

    def _check_ready() -> None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            at = migrate.current(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise Unavailable(f"registry database unreachable: {type(exc).__name__}") from None
        if at != migrate.head():
            raise Unavailable(f"registry schema is at {at}, needs {migrate.head()}")

    async def readyz(request: Request) -> Response:
        await anyio.to_thread.run_sync(_check_ready)
        return JSONResponse(
            Health(status="ready", node=settings.node_id).model_dump(exclude_none=True)
        )

    spec = openapi.document(
        api.ENDPOINTS,
        title=f"Yunnao node {settings.node_id}",
        version=__version__,
        extra_paths={
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
        },
    )

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.publish_plugins:
            await anyio.to_thread.run_sync(publish_new, publisher, plugins)
        await anyio.to_thread.run_sync(store.warm)  # the first search should not pay for it
        yield
        engine.dispose()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *api.routes(),
        ],
        middleware=[Middleware(AuthMiddleware, verify=verify)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.catalog = api.Catalog(
        store=store,
        max_body_bytes=settings.max_body_bytes,
        publisher=publisher,
        capabilities=plugins.capabilities,
    )
    app.state.settings = settings
    return app
