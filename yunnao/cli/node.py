"""``yunnao serve`` and ``yunnao db``: run a node, migrate and inspect its store."""

from __future__ import annotations

import gc
from typing import Any

import click

from .common import (
    err_console,
    node_options,
    node_settings,
)


@click.command()
@node_options
@click.option(
    "--host",
    envvar="YUNNAO_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 for all interfaces)  [env YUNNAO_HOST]",
)
@click.option(
    "--port",
    envvar="YUNNAO_PORT",
    default=8000,
    show_default=True,
    type=int,
    help="Port to listen on  [env YUNNAO_PORT]",
)
@click.option(
    "--publish-plugins",
    is_flag=True,
    default=None,
    envvar="YUNNAO_PUBLISH_PLUGINS",
    help="On start, publish every loaded capability whose version the registry lacks, "
    "into <node id>.<plugin>  [env YUNNAO_PUBLISH_PLUGINS]",
)
@click.option(
    "--plugin",
    "plugin_targets",
    multiple=True,
    metavar="TARGET",
    help="Also load this plugin: a package directory, a .py file or a module (repeatable; "
    "for trying a plugin before installing it)",
)
@click.option(
    "--ui-dev-signin/--no-ui-dev-signin",
    "ui_dev_signin",
    default=None,
    help="The web catalog's dev sign-in (anyone may choose who they are): only for a node "
    "listening on loopback; refused with any other --host. Default: on for embedded "
    "defaults on loopback  [env YUNNAO_UI_DEV_SIGNIN]",
)
@click.option(
    "--workers",
    envvar="YUNNAO_WORKERS",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving this node on one port and one store (the store-wide loops "
    "run in one of them)  [env YUNNAO_WORKERS]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Server log level",
)
def serve(
    node_id: str | None,
    data_dir: str | None,
    database_url: str | None,
    host: str,
    port: int,
    publish_plugins: bool | None,
    plugin_targets: tuple[str, ...],
    ui_dev_signin: bool | None,
    workers: int,
    log_level: str,
) -> None:
    """Run a registry node.

    With no options it runs on embedded defaults: a SQLite store and a node key under
    ./var (the store is created and upgraded on start). With --database-url pointing at
    PostgreSQL, run `yunnao db upgrade` first: a shared store is never migrated implicitly.
    With --workers N, N processes serve the node (see "More processes, more machines" in
    docs/operating.md).
    """
    import logging

    settings = node_settings(
        node_id=node_id,
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        publish_plugins=publish_plugins,
        plugin_targets=list(plugin_targets) or None,
        ui_dev_signin=ui_dev_signin,
        workers=workers,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    node_log = logging.getLogger("yunnao")
    node_log.addHandler(handler)
    node_log.setLevel(log_level.upper())
    node_log.propagate = False
    if settings.workers > 1:
        _serve_workers(settings, log_level)
        return
    app = _app(settings)
    _banner(settings)
    _serve(app, settings, log_level)


def _app(settings: Any) -> Any:
    from yunnao.app import SchemaOutOfDate, create_app

    try:
        return create_app(settings)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None


def _banner(settings: Any) -> None:
    host, port = settings.host, settings.port
    processes = f", {settings.workers} worker processes" if settings.workers > 1 else ""
    err_console.print(
        f"[bold]Yunnao[/bold] node [cyan]{settings.node_id}[/cyan] on "
        f"http://{host}:{port}  (store: {_redact(settings.db_url)}{processes})"
    )
    if settings.dev_signin:
        err_console.print(
            "[yellow]Dev sign-in is on[/yellow] (loopback only): anyone on this machine may "
            "sign in to the web catalog as anybody. Not for production."
        )
    elif settings.ui_dev_signin is None and not (settings.database_url or settings.oidc_issuer):
        err_console.print(
            f"Dev sign-in is off: this node listens on {host}, not on loopback "
            "(sign in with single sign-on, or call the API with node tokens or API keys)."
        )


def _serve(app: Any, settings: Any, log_level: str, sock: Any = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, on its own socket or on ``sock``."""
    import uvicorn

    class NodeServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Long polls (the cascade feed) answer at once instead of holding up the stop.
            app.state.stopping.set()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            # What the node loaded and made at startup lives as long as it does: out of
            # the cyclic collector's sight, whose full passes over it (about a million
            # objects) stalled every call in flight for 0.2-0.3 s under load.
            gc.collect()
            gc.freeze()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive,
    )
    NodeServer(config).run(sockets=None if sock is None else [sock])


def _serve_workers(settings: Any, log_level: str) -> None:
    """Bind the port, prepare the node once, then run ``settings.workers`` processes on
    it (:mod:`yunnao.supervisor`)."""
    import uvicorn

    from yunnao import supervisor

    sock = uvicorn.Config("-", host=settings.host, port=settings.port).bind_socket()
    code = supervisor.in_child(lambda: _prepared(settings))
    if code:
        sock.close()
        raise SystemExit(code)
    _banner(settings)
    # The workers publish nothing on start: the preparation did.
    each = settings.model_copy(update={"publish_plugins": False})
    supervisor.Supervisor(
        sock, settings.workers, lambda s: _serve(_app(each), each, log_level, s)
    ).run()


def _prepared(settings: Any) -> None:
    from yunnao import supervisor
    from yunnao.app import SchemaOutOfDate

    try:
        supervisor.prepare(settings)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None


def _redact(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


@click.group()
def db() -> None:
    """Manage the registry store's schema."""


@db.command("upgrade")
@node_options
@click.option("--revision", default="head", show_default=True, help="Target schema revision")
def db_upgrade(
    node_id: str | None, data_dir: str | None, database_url: str | None, revision: str
) -> None:
    """Create or migrate the registry store to the newest schema (safe to repeat)."""
    from yunnao.registry import db as registry_db
    from yunnao.registry import migrate

    settings = node_settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    engine = registry_db.create_engine(settings.db_url)
    try:
        before = migrate.current(engine)
        after = migrate.upgrade(engine, revision)
    finally:
        engine.dispose()
    click.echo(f"{_redact(settings.db_url)}: schema {before or 'empty'} -> {after}")


@db.command("current")
@node_options
def db_current(node_id: str | None, data_dir: str | None, database_url: str | None) -> None:
    """Print the store's schema revision and the newest one this version knows."""
    from yunnao.registry import db as registry_db
    from yunnao.registry import migrate

    settings = node_settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    engine = registry_db.create_engine(settings.db_url)
    try:
        at = migrate.current(engine)
    finally:
        engine.dispose()
    head = migrate.head()
    state = "up to date" if at == head else "needs `yunnao db upgrade`"
    click.echo(f"at {at or 'empty'}, newest {head}: {state}")
