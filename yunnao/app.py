"""Assemble one node: the composition root.

:func:`create_app` builds the parts (store, node key, models, runtimes, gateway, jobs,
credentials, cascade), connects them, mounts their routes in order and runs their
background tasks for the app's lifetime; each part's logic lives in its own package.

Why one module: this is the one place where the parts meet. Each line builds a part
from the settings or hands one part to another; split up, the order in which they
depend on each other (and which process runs which loop) would be spread over files.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.middleware import Middleware

from yunnao import __version__, catalog_ui
from yunnao.cascade import api as cascade_api
from yunnao.cascade import compaction
from yunnao.cascade.apply import Applier
from yunnao.cascade.feed import Feed
from yunnao.cascade.history import LagHistory
from yunnao.cascade.metrics import CascadeCollector
from yunnao.cascade.peers import PeerKeys, PeerStore
from yunnao.cascade.prober import Prober
from yunnao.cascade.sync import Replicator
from yunnao.cascade.usage_items import UsageRollup
from yunnao.plugins.errors import YunnaoError
from yunnao.plugins.loader import Plugins
from yunnao.registry import api, audit_api, db, keys_api, migrate, names_api, node_api, openapi
from yunnao.registry.access_forwarding import Forwarder
from yunnao.registry.access_requests import AccessRequests
from yunnao.registry.access_requests_api import ENDPOINTS as ACCESS_REQUEST_ENDPOINTS
from yunnao.registry.assessment_api import ENDPOINTS as ASSESSMENT_ENDPOINTS
from yunnao.registry.audit import AuditLog, AuditMiddleware
from yunnao.registry.health import HealthBoard
from yunnao.registry.health_api import ENDPOINTS as HEALTH_ENDPOINTS
from yunnao.registry.health_view import title_lookup
from yunnao.registry.identity import tokens
from yunnao.registry.identity.apikeys import ApiKeys
from yunnao.registry.identity.assertions import AssertionIssuer
from yunnao.registry.identity.credentials import Credentials
from yunnao.registry.identity.middleware import AssertionUse, AuthMiddleware
from yunnao.registry.identity.oidc import OidcConfig, OidcVerifier
from yunnao.registry.identity.replay import OneTimeIds, SharedOneTimeIds
from yunnao.registry.leadership import Leadership, leader_lock
from yunnao.registry.outbound import OutboundGuard
from yunnao.registry.packages import api as packages_api
from yunnao.registry.packages.environments import Environments
from yunnao.registry.packages.jobs import PublishJobs
from yunnao.registry.packages.publish import UploadPublisher
from yunnao.registry.problems import EXCEPTION_HANDLERS
from yunnao.registry.publishing import Publisher
from yunnao.registry.request_id import RequestIdMiddleware
from yunnao.registry.retention import Retention
from yunnao.registry.store import RegistryStore
from yunnao.registry.store_watch import ChangeWatch
from yunnao.registry.titles import Titles
from yunnao.registry.webhooks.api import ENDPOINTS as WEBHOOK_ENDPOINTS
from yunnao.registry.webhooks.delivery import Deliverer
from yunnao.registry.webhooks.events import peer_event
from yunnao.registry.webhooks.subscriptions import Webhooks
from yunnao.runtimes.adapters import builtin as builtin_runtimes
from yunnao.runtimes.adapters.base import RuntimeContext
from yunnao.runtimes.adapters.loading import load_runnable
from yunnao.runtimes.adapters.manager import Runtimes
from yunnao.runtimes.adapters.sandbox.status import EnvironmentUsage, sandbox_status
from yunnao.runtimes.gateway import api as gateway_api
from yunnao.runtimes.gateway import metrics_api, pipelines, splits_api, usage_api, v2
from yunnao.runtimes.gateway.core import Gateway
from yunnao.runtimes.gateway.idempotency import Idempotency
from yunnao.runtimes.gateway.jobs import Jobs
from yunnao.runtimes.gateway.metrics import Metrics
from yunnao.runtimes.gateway.ratelimit import limiter_for
from yunnao.runtimes.gateway.ratelimit_sqlite import SqliteLimiter
from yunnao.runtimes.gateway.splits import Splits
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


def runtime_context(
    settings: Settings,
    plugins: Plugins,
    models: Any,
    peer_keys: PeerKeys,
    assertions: AssertionIssuer,
) -> RuntimeContext:
    """What the runtimes may use from this node: its MLflow, its plugins' capabilities,
    and (for the remote runtime) its linked nodes' URLs and its assertions to them."""
    context = RuntimeContext(
        node_id=settings.node_id,
        data_dir=settings.data_dir.resolve(),
        tracking_uri=models.tracking_uri,
        registry_uri=models.registry_uri,
        load_model=lambda uri: load_runnable(uri, models.tracking_uri, models.registry_uri),
        capabilities=plugins.capabilities,
    )
    context.peer_url = peer_keys.url
    context.assertion = assertions.invoke
    return context


async def step_call(
    gateway: Gateway,
    identity: Any,
    namespace: str,
    name_ref: str,
    inputs: Any,
    *,
    timeout: float,
    request_id: str | None = None,
) -> Any:
    """One step of a pipeline: a call through the gateway as the pipeline's caller."""
    answer = await gateway.call(
        identity, namespace, name_ref, inputs, timeout=timeout, request_id=request_id
    )
    return answer.output


def alias_lookup(store: RegistryStore, models: Any) -> Callable[[str, str, str], str | None]:
    """The version an MLflow alias of a capability's model points at (None: no such alias
    or no version of this node registered that model)."""

    def lookup(namespace: str, name: str, alias: str) -> str | None:
        uri = models.alias_version(namespace, name, alias)
        return None if uri is None else store.version_of_model(namespace, name, uri)

    return lookup


Task = Callable[[], Awaitable[Any]]


def one_time_ids(settings: Settings, engine: sa.Engine) -> OneTimeIds:
    """Where linked nodes' one-time assertion ids are kept: in this process when it alone
    serves the node, else also in the store, for every process serving it (a PostgreSQL
    store may be shared by gateways on other machines)."""
    if settings.workers > 1 or not db.is_sqlite(engine):
        return SharedOneTimeIds(engine)
    return OneTimeIds()


async def readiness_details(
    runtimes: Runtimes, env_usage: EnvironmentUsage, leadership: Leadership | None = None
) -> dict[str, Any]:
    """``/readyz``'s details: the sandbox department code runs in, and which process
    leads the store (never failing the probe: what cannot be found out is said instead)."""
    out: dict[str, Any] = {}
    try:
        out["sandbox"] = await sandbox_status(runtimes, env_usage)
    except Exception as exc:
        log.exception("readiness details")
        out["sandbox"] = {"error": f"{type(exc).__name__}: {exc}"}
    if leadership is not None:
        out["leadership"] = await anyio.to_thread.run_sync(leadership.describe)
    return out


def lifespan(
    settings: Settings,
    *,
    publisher: Publisher,
    plugins: Plugins,
    store: RegistryStore,
    background: list[Task],
    runtimes: Runtimes,
    engine: sa.Engine,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Startup (publish new plugin versions, warm the search), the ``background`` tasks
    while the app runs, then shutdown (runtimes closed, store disposed)."""

    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        if settings.publish_plugins:
            await anyio.to_thread.run_sync(publish_new, publisher, plugins)
        await anyio.to_thread.run_sync(store.warm)  # the first search should not pay for it
        async with anyio.create_task_group() as tg:
            for task in background:
                tg.start_soon(task)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        await runtimes.close()
        engine.dispose()

    return run


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    node_id = settings.node_id

    # The parts: the store and this node's key, models, runtimes, gateway and jobs.
    plugins = load_plugins(settings)
    engine = prepare_store(settings)
    key = tokens.load_or_create_key(settings.key_path)
    store = RegistryStore(engine, node_id)
    store.ensure_node(title=settings.node_title, public_key=tokens.public_key_text(key))
    models = model_store(settings)
    publisher = Publisher(store, models)
    assertions = AssertionIssuer(key, node_id)
    peers = PeerStore(store, key)
    peer_keys = PeerKeys(peers)
    # Live health of the linked nodes and the circuit breakers of calls forwarded to them.
    health = HealthBoard(
        node_id,
        open_for=settings.breaker_open_for,
        title=title_lookup(Titles(engine, node_id)),
    )
    context = runtime_context(settings, plugins, models, peer_keys, assertions)
    context.health = health
    runtimes = Runtimes(plugins.runtimes, settings.runtimes, context)
    metrics = Metrics()
    usage = UsageLog(engine)
    gateway = Gateway(
        store,
        runtimes,
        plugins,
        usage,
        metrics,
        alias_lookup=alias_lookup(store, models),
        # Several processes on one SQLite store share their buckets through it too.
        limiter=SqliteLimiter(engine)
        if settings.workers > 1 and db.is_sqlite(engine)
        else limiter_for(engine),
        caller_limit=settings.rate_limit,
        anonymous_limit=settings.rate_limit_anonymous,
    )
    context.call = partial(step_call, gateway)  # a pipeline's steps: calls as the caller
    outbound = OutboundGuard(settings.callback_allow)  # job callbacks, webhooks
    jobs = Jobs(
        engine,
        gateway,
        metrics,
        workers=settings.job_workers,
        lease_grace=settings.job_lease_grace,
        max_attempts=settings.job_max_attempts,
        outbound=outbound,
    )
    # Webhooks: subscriptions, and the leader's sender of their outbox.
    webhooks = Webhooks(engine, node_id, outbound)
    deliverer = Deliverer(
        engine, outbound, base=settings.webhook_retry_base, max_delay=settings.webhook_retry_max,
        give_up_after=settings.webhook_give_up_after, user_agent=f"Yunnao-Webhooks/{__version__}",
    )  # fmt: skip

    # Identity: every credential a caller may present, and the audit trail.
    sso = single_sign_on(settings)
    api_keys = ApiKeys(engine, node_id)
    credentials = Credentials(
        node_id=node_id,
        public_key=key.public_key(),
        api_keys=api_keys,
        linked=peer_keys,
        sso=sso,
    )
    audit = AuditLog(engine)
    gateway.splits = Splits(store, audit, usage, cache_ttl=gateway.cache_ttl)  # canaries

    # The cascade: this node's feed, applying its peers' entries, and the sync loops.
    feed = Feed(engine, node_id, key, share_internal=settings.cascade_share_internal)
    store.after_write(feed.watcher.notify)  # this process's writes wake long polls at once
    store.signer = feed.sign_logged  # own entries are signed when written, not when read
    applier = Applier(node_id, key, store.transaction, review=settings.cascade_review)
    replicator = Replicator(
        feed=feed,
        applier=applier,
        peers=peers,
        assertion=assertions.cascade,
        batch=settings.cascade_batch,
        wait=settings.cascade_wait,
    )
    metrics.registry.register(CascadeCollector(peers))
    lag_history = LagHistory(peers)
    prober = Prober(
        board=health,
        peers=peers,
        assertion=assertions.cascade,
        engine=engine,
        interval=settings.health_probe_interval,
        timeout=settings.health_probe_timeout,
        late_after=settings.health_late_after,
        recovered=replicator.wake,
        tally=lambda: leadership.held,  # only the leader writes the probe counts
        changed=lambda peer, up, why: webhooks.emit([peer_event(peer, up, why)]),
    )

    # Which process of those sharing the store runs its store-wide loops (duties below).
    leadership = Leadership(leader_lock(engine), {})

    # What /readyz and the operator page say about the sandbox.
    env_usage = EnvironmentUsage(settings.data_dir.resolve() / "packages" / "envs")

    # The routes, in order: the invocation routes first (they take the most traffic, and
    # routes match in order), then the catalog, the cascade, the pages and the node's own.
    endpoints = (
        gateway_api.ENDPOINTS
        + v2.ENDPOINTS
        + api.ENDPOINTS
        + keys_api.ENDPOINTS
        + names_api.ENDPOINTS
        + ACCESS_REQUEST_ENDPOINTS
        + usage_api.ENDPOINTS
        + splits_api.ENDPOINTS
        + audit_api.ENDPOINTS
        + HEALTH_ENDPOINTS
        + ASSESSMENT_ENDPOINTS
        + WEBHOOK_ENDPOINTS
        + packages_api.ENDPOINTS
        + cascade_api.ENDPOINTS
    )
    spec = openapi.document(
        endpoints,
        title=f"Yunnao node {node_id}",
        version=__version__,
        extra_paths={**node_api.OPENAPI_PATHS, **metrics_api.OPENAPI_PATHS},
    )
    routes = [
        *api.routes(endpoints),
        *catalog_ui.routes(),
        *node_api.routes(
            node_id=node_id,
            version=__version__,
            engine=engine,
            spec=spec,
            details=partial(readiness_details, runtimes, env_usage, leadership),
        ),
        metrics_api.route(node_id=node_id, runtimes=runtimes, metrics=metrics, engine=engine),
    ]

    # Publishing by upload: received archives become publish jobs, run one at a time.
    packages_dir = settings.data_dir.resolve() / "packages"
    uploads = packages_api.Uploads(
        jobs=PublishJobs(engine, packages_dir / "uploads"),
        max_bytes=settings.max_package_bytes,
    )
    upload_publisher = UploadPublisher(
        uploads.jobs,
        publisher,
        Environments(packages_dir / "envs", index_url=settings.package_index),
        packages_dir,
        max_bytes=settings.max_package_bytes,
        # One rule for department code, wherever it runs: the sandbox runtime's.
        enforce=bool(settings.runtimes.get("sandbox", {}).get("enforce", True)),
    )
    uploads.wake = upload_publisher.wake

    # Background tasks. Store-wide loops run in one process per store, the leader (see
    # registry.leadership); the others run in every process: write buffers, job workers
    # (claims are leased), probes for this process's breakers, lag samples, cache upkeep.
    usage_rollup = UsageRollup(engine, node_id, key, interval=settings.usage_rollup_interval)
    duties: dict[str, Task] = {"publish jobs": upload_publisher.run}
    if settings.cascade_sync:
        duties["replication"] = replicator.run
    if settings.cascade_keep_days is not None:
        duties["compaction"] = partial(compaction.run_hourly, feed, settings.cascade_keep_days)
    duties["usage rollup"] = usage_rollup.run
    duties["webhooks"] = deliverer.run
    retention = Retention(engine, audit, settings.usage_keep_days, settings.audit_keep_days)
    if retention.active:
        duties["retention"] = retention.run_hourly
    leadership.duties = duties
    background: list[Task] = [usage.run, audit.run, leadership.run]
    if settings.job_workers:
        background.append(jobs.run)
    background += [lag_history.run, prober.run, ChangeWatch(store, engine).run]

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                AuditMiddleware,
                log=audit,
                actions={**{e.handler: e.operation_id for e in endpoints}, **catalog_ui.ACTIONS},
            ),
            Middleware(
                AuthMiddleware,
                verify=credentials.verify,
                verify_session=credentials.verify_session,
            ),
            # A linked node's assertion serves only its purpose and route, once.
            Middleware(AssertionUse, seen=one_time_ids(settings, engine)),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan(
            settings,
            publisher=publisher,
            plugins=plugins,
            store=store,
            background=background,
            runtimes=runtimes,
            engine=engine,
        ),
    )

    # What the routes and pages read from the app.
    app.state.catalog = api.Catalog(
        store=store,
        max_body_bytes=settings.max_body_bytes,
        publisher=publisher,
        capabilities=plugins.capabilities,
        check_version=pipelines.version_check(store),
    )
    app.state.invoker = gateway_api.Invoker(
        gateway=gateway,
        jobs=jobs,
        idempotency=Idempotency(engine, window=settings.idempotency_window),
        default_timeout=settings.invoke_timeout,
        max_timeout=settings.max_invoke_timeout,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=max(settings.max_upload_bytes, settings.max_body_bytes),
    )
    app.state.cascade = cascade_api.Cascade(
        node_id=node_id,
        title=settings.node_title,
        public_key=tokens.public_key_text(key),
        feed=feed,
        peers=peers,
        applier=applier,
        replicator=replicator,
    )
    app.state.titles = Titles(engine, node_id)
    app.state.access_requests = AccessRequests(
        store, forward=Forwarder(peer_keys.url, assertions.invoke)
    )
    app.state.settings = settings
    app.state.api_keys = api_keys
    app.state.webhooks = webhooks
    app.state.audit = audit
    app.state.uploads = uploads
    app.state.env_usage = env_usage
    app.state.upload_publisher = upload_publisher
    app.state.node_key = key
    app.state.sso = sso
    app.state.verify = credentials.verify
    app.state.lag_history = lag_history
    app.state.health = health
    app.state.usage_engine = engine
    app.state.usage_rollup = usage_rollup
    app.state.leadership = leadership
    app.state.stopping = threading.Event()  # set when the server begins to shut down
    return app
