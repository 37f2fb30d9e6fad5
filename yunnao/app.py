"""Assemble one node: store, migrations, node key, catalog API, health and OpenAPI."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from yunnao import __version__, catalog_ui
from yunnao.cascade import api as cascade_api
from yunnao.cascade import assertions, compaction
from yunnao.cascade.apply import Applier
from yunnao.cascade.feed import Feed
from yunnao.cascade.history import LagHistory
from yunnao.cascade.metrics import CascadeCollector
from yunnao.cascade.peers import PeerKeys, PeerStore
from yunnao.cascade.sync import Replicator
from yunnao.plugins.errors import Unauthorized, Unavailable, YunnaoError
from yunnao.plugins.loader import Plugins
from yunnao.registry import api, audit_api, db, keys_api, migrate, openapi, tokens
from yunnao.registry.access import Action, require
from yunnao.registry.apikeys import ApiKeys, is_api_key
from yunnao.registry.audit import AuditLog, AuditMiddleware
from yunnao.registry.auth import AuthMiddleware, identity_of
from yunnao.registry.oidc import OidcConfig, OidcVerifier
from yunnao.registry.problems import EXCEPTION_HANDLERS
from yunnao.registry.publishing import Publisher
from yunnao.registry.request_id import RequestIdMiddleware
from yunnao.registry.schemas import Health
from yunnao.registry.store import RegistryStore
from yunnao.runtimes.adapters import builtin as builtin_runtimes
from yunnao.runtimes.adapters.base import RuntimeContext
from yunnao.runtimes.adapters.loading import load_runnable
from yunnao.runtimes.adapters.manager import Runtimes
from yunnao.runtimes.gateway import api as gateway_api
from yunnao.runtimes.gateway import metrics_view, usage_api, v2
from yunnao.runtimes.gateway.core import Gateway
from yunnao.runtimes.gateway.jobs import Jobs
from yunnao.runtimes.gateway.metrics import Metrics
from yunnao.runtimes.gateway.outbound import OutboundGuard
from yunnao.runtimes.gateway.ratelimit import limiter_for
from yunnao.runtimes.gateway.usage import UsageLog

from .settings import Settings

log = logging.getLogger("yunnao.node")


def model_store(settings: Settings) -> Any:
    """The node's MLflow: a configured tracking server, or the embedded one."""
    from yunnao.registry.models import ModelStore

    if settings.mlflow_tracking_uri:
        return ModelStore(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    return ModelStore.embedded(settings.data_dir)


def load_plugins(settings: Settings) -> Plugins:
    """The built-in runtimes and the installed plugins; each plugin that fails is logged
    with its cause and left out."""
    plugins = Plugins()
    plugins.add(builtin_runtimes, name="yunnao-runtimes", source="built-in")
    if settings.plugins:
        plugins.load_entry_points()
    for target in settings.plugin_targets:
        try:
            plugins.load_target(target)
        except LookupError as exc:
            log.warning("plugin %s not loaded: %s", target, exc)
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


def single_sign_on(settings: Settings) -> OidcVerifier | None:
    """The verifier of the configured identity provider's tokens, if there is one."""
    if not settings.oidc_issuer:
        return None
    return OidcVerifier(
        OidcConfig(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            leeway=settings.oidc_leeway,
            role_claim=settings.oidc_role_claim,
            node_claim=settings.oidc_node_claim,
            department_claim=settings.oidc_department_claim,
        )
    )


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
    models = model_store(settings)
    publisher = Publisher(store, models)
    context = RuntimeContext(
        node_id=settings.node_id,
        data_dir=settings.data_dir.resolve(),
        tracking_uri=models.tracking_uri,
        registry_uri=models.registry_uri,
        load_model=lambda uri: load_runnable(uri, models.tracking_uri, models.registry_uri),
        capabilities=plugins.capabilities,
    )
    peers = PeerStore(store, key)
    peer_keys = PeerKeys(peers)
    context.peer_url = lambda node: peer_keys.url(node)
    context.assertion = lambda node, caller, **bound: assertions.issue(
        key, node_id=settings.node_id, audience=node, purpose="invoke", caller=caller, **bound
    )
    runtimes = Runtimes(plugins.runtimes, settings.runtimes, context)
    metrics = Metrics()
    usage = UsageLog(engine)

    def alias_lookup(namespace: str, name: str, alias: str) -> str | None:
        uri = models.alias_version(namespace, name, alias)
        return None if uri is None else store.version_of_model(namespace, name, uri)

    gateway = Gateway(
        store,
        runtimes,
        plugins,
        usage,
        metrics,
        alias_lookup=alias_lookup,
        limiter=limiter_for(engine),
        caller_limit=settings.rate_limit,
        anonymous_limit=settings.rate_limit_anonymous,
    )
    jobs = Jobs(
        engine,
        gateway,
        metrics,
        workers=settings.job_workers,
        lease_grace=settings.job_lease_grace,
        max_attempts=settings.job_max_attempts,
        outbound=OutboundGuard(settings.callback_allow),
    )

    sso = single_sign_on(settings)

    api_keys = ApiKeys(engine, settings.node_id)
    audit = AuditLog(engine)

    def verify(token: str) -> Any:
        if is_api_key(token):
            return api_keys.verify(token)
        issuer = assertions.issuer_of(token)
        if sso is not None and issuer == settings.oidc_issuer:
            return sso.verify(token)
        if issuer is None or issuer == settings.node_id:
            return tokens.verify(public_key, settings.node_id, token)
        peer_key = peer_keys.key(issuer)
        if peer_key is None:
            raise Unauthorized(
                f"token issued by {issuer!r}, which this node does not accept (neither this "
                "node, its identity provider, nor a linked node)"
            )
        return assertions.verify(
            peer_key,
            peer=issuer,
            node_id=settings.node_id,
            token=token,
            relation=peer_keys.relation(issuer),
        )

    feed = Feed(engine, settings.node_id, key, share_internal=settings.cascade_share_internal)
    applier = Applier(settings.node_id, key, store.transaction)
    replicator = Replicator(
        feed=feed,
        applier=applier,
        peers=peers,
        assertion=lambda node: assertions.issue(
            key, node_id=settings.node_id, audience=node, purpose="cascade"
        ),
        batch=settings.cascade_batch,
        wait=settings.cascade_wait,
    )
    metrics.registry.register(CascadeCollector(peers))

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

    async def prometheus(request: Request) -> Response:
        # Operators only; labels name capabilities: each shows only to whom the policy
        # lets discover it.
        identity = identity_of(request)
        require(identity, Action.READ_NODE, settings.node_id)
        for rtype, health in (await runtimes.health()).items():
            metrics.runtime_up.labels(rtype).set(1 if health.ok else 0)
        text = await anyio.to_thread.run_sync(
            metrics_view.exposition, metrics.registry, identity, engine
        )
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    # The invocation routes first: they take the most traffic, and routes match in order.
    endpoints = (
        gateway_api.ENDPOINTS
        + v2.ENDPOINTS
        + api.ENDPOINTS
        + keys_api.ENDPOINTS
        + usage_api.ENDPOINTS
        + audit_api.ENDPOINTS
        + cascade_api.ENDPOINTS
    )
    spec = openapi.document(
        endpoints,
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
        },
    )

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.publish_plugins:
            await anyio.to_thread.run_sync(publish_new, publisher, plugins)
        await anyio.to_thread.run_sync(store.warm)  # the first search should not pay for it
        async with anyio.create_task_group() as tg:
            tg.start_soon(usage.run)
            tg.start_soon(audit.run)
            if settings.job_workers:
                tg.start_soon(jobs.run)
            if settings.cascade_sync:
                tg.start_soon(replicator.run)
            tg.start_soon(lag_history.run)
            if settings.cascade_keep_days is not None:
                tg.start_soon(compaction.run_hourly, feed, settings.cascade_keep_days)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        await runtimes.close()
        engine.dispose()

    lag_history = LagHistory(peers)

    app = Starlette(
        routes=[
            *api.routes(endpoints),
            *catalog_ui.routes(),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                AuditMiddleware,
                log=audit,
                actions={**{e.handler: e.operation_id for e in endpoints}, **catalog_ui.ACTIONS},
            ),
            Middleware(
                AuthMiddleware,
                verify=verify,
                verify_session=lambda t: tokens.verify_session(public_key, settings.node_id, t),
            ),
            # A linked node's assertion serves only its purpose and route, once.
            Middleware(assertions.AssertionUse),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.catalog = api.Catalog(
        store=store,
        max_body_bytes=settings.max_body_bytes,
        publisher=publisher,
        capabilities=plugins.capabilities,
    )
    app.state.invoker = gateway_api.Invoker(
        gateway=gateway,
        jobs=jobs,
        default_timeout=settings.invoke_timeout,
        max_timeout=settings.max_invoke_timeout,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.cascade = cascade_api.Cascade(
        node_id=settings.node_id,
        title=settings.node_title,
        public_key=tokens.public_key_text(key),
        feed=feed,
        peers=peers,
        applier=applier,
        replicator=replicator,
    )
    app.state.settings = settings
    app.state.api_keys = api_keys
    app.state.audit = audit
    app.state.node_key = key
    app.state.sso = sso
    app.state.verify = verify
    app.state.lag_history = lag_history
    app.state.usage_engine = engine
    app.state.stopping = threading.Event()  # set when the server begins to shut down
    return app
