"""The ``yunnao`` command line: run a node, migrate its store, search and show the
catalog of any node over HTTP, and mint node-signed tokens."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table

from yunnao import __version__

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from .settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # pydantic prefixes a validator's own message with "Value error, ".
        msgs = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise click.UsageError(msgs) from None


def node_options(fn: Any, *, store: bool = True) -> Any:
    """Options that locate a node's local state (its key and, with ``store``, its store)."""
    for opt in reversed(
        [
            click.option(
                "--node-id",
                envvar="YUNNAO_NODE_ID",
                help="This node's dotted id, e.g. sd.qd.shinan  [env YUNNAO_NODE_ID; "
                "default: local]",
            ),
            click.option(
                "--data-dir",
                envvar="YUNNAO_DATA_DIR",
                type=click.Path(file_okay=False),
                help="Directory for embedded state: SQLite store, node key  "
                "[env YUNNAO_DATA_DIR; default: ./var]",
            ),
            click.option(
                "--database-url",
                envvar="YUNNAO_DATABASE_URL",
                help="SQLAlchemy URL of the registry store, e.g. "
                "postgresql+psycopg://user@host/db  [env YUNNAO_DATABASE_URL; default: "
                "SQLite in the data dir]",
            ),
        ][: 3 if store else 2]
    ):
        fn = opt(fn)
    return fn


def client_options(fn: Any) -> Any:
    """Options for commands that talk to a node over HTTP."""
    for opt in reversed(
        [
            click.option(
                "--url",
                envvar="YUNNAO_URL",
                default=DEFAULT_URL,
                show_default=True,
                help="Base URL of the node  [env YUNNAO_URL]",
            ),
            click.option(
                "--token",
                envvar="YUNNAO_TOKEN",
                help="Bearer token (see `yunnao token create`)  [env YUNNAO_TOKEN]",
            ),
            click.option(
                "--json",
                "as_json",
                is_flag=True,
                help="Print the node's JSON response, for scripts",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def _request(
    url: str, token: str | None, method: str, path: str, *, timeout: float = 30, **kwargs: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            resp = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach node at {url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            prob = resp.json()
            detail = f"{prob.get('title', 'error')}: {prob.get('detail', '')}"
            for e in prob.get("errors", []):
                detail += f"\n  {e.get('field')}: {e.get('message')}"
        except ValueError:
            detail = resp.text[:500]
        raise click.ClickException(f"{resp.status_code} {detail}")
    return resp.json() if resp.content else None


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="yunnao")
def main() -> None:
    """Yunnao (云脑): the capability marketplace of a city cloud brain.

    Run a registry node, publish and find algorithms and models, and link district,
    city and province nodes. Every option can also be set through the environment
    variable shown in its help.
    """
    # MLflow prints run URLs to stdout (where --json output goes) and installs its own
    # log handlers; Yunnao reports progress itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


@main.command()
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
    log_level: str,
) -> None:
    """Run a registry node.

    With no options it runs on embedded defaults: a SQLite store and a node key under
    ./var (the store is created and upgraded on start). With --database-url pointing at
    PostgreSQL, run `yunnao db upgrade` first: a shared store is never migrated implicitly.
    """
    import logging

    import uvicorn

    from .app import SchemaOutOfDate, create_app

    settings = _settings(
        node_id=node_id,
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        publish_plugins=publish_plugins,
        plugin_targets=list(plugin_targets) or None,
        ui_dev_signin=ui_dev_signin,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    node_log = logging.getLogger("yunnao")
    node_log.addHandler(handler)
    node_log.setLevel(log_level.upper())
    node_log.propagate = False
    try:
        app = create_app(settings)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    err_console.print(
        f"[bold]Yunnao[/bold] node [cyan]{settings.node_id}[/cyan] on "
        f"http://{host}:{port}  (store: {_redact(settings.db_url)})"
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

    class NodeServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Long polls (the cascade feed) answer at once instead of holding up the stop.
            app.state.stopping.set()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False)
    NodeServer(config).run()


def _redact(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


@main.group()
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

    settings = _settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
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

    settings = _settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    engine = registry_db.create_engine(settings.db_url)
    try:
        at = migrate.current(engine)
    finally:
        engine.dispose()
    head = migrate.head()
    state = "up to date" if at == head else "needs `yunnao db upgrade`"
    click.echo(f"at {at or 'empty'}, newest {head}: {state}")


FACET_OPTIONS = (
    "domain",
    "node",
    "namespace",
    "runtime",
    "classification",
    "status",
    "kind",
    "tag",
)


@main.command()
@click.argument("query", required=False, default="")
@click.option(
    "--domain", multiple=True, help="governance | livelihood | economy | other (repeat to OR)"
)
@click.option("--node", multiple=True, help="Origin node id (repeat to OR)")
@click.option("--namespace", multiple=True, help="Owning namespace (repeat to OR)")
@click.option("--runtime", multiple=True, help="inprocess | bentoml | rayserve | triton | remote")
@click.option("--classification", multiple=True, help="public | internal | restricted")
@click.option(
    "--status",
    multiple=True,
    help="draft | published | deprecated | retired (default: published, deprecated)",
)
@click.option("--kind", multiple=True, help="algorithm | model")
@click.option("--tag", multiple=True, help="Tag that must be present (repeat to AND)")
@click.option(
    "--sort",
    type=click.Choice(["relevance", "name", "-name", "updated", "-updated"]),
    help="Order (default: relevance with a query, else newest first)",
)
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--per-page", type=int, default=20, show_default=True)
@click.option("--facets", "show_facets", is_flag=True, help="Also print facet counts")
@client_options
def search(
    query: str,
    sort: str | None,
    page: int,
    per_page: int,
    show_facets: bool,
    url: str,
    token: str | None,
    as_json: bool,
    **facets: tuple[str, ...],
) -> None:
    """Search a node's catalog: full text plus facet filters.

    Example: yunnao search 交通 --domain governance --tag traffic
    """
    params: list[tuple[str, Any]] = [("q", query), ("page", page), ("per_page", per_page)]
    if sort:
        params.append(("sort", sort))
    for facet in FACET_OPTIONS:
        params += [(facet, v) for v in facets.get(facet, ())]
    data = _request(url, token, "GET", "/v1/capabilities", params=params)
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"{data['total']} capabilities (page {data['page']})", title_justify="left")
    table.add_column("capability", no_wrap=True)  # ids must stay copyable
    for column in ("version", "title", "domain", "class.", "status"):
        table.add_column(column)
    for item in data["items"]:
        table.add_row(
            item["id"],
            item["latest_version"] or "",
            item["title"],
            item["domain"],
            item["classification"],
            item["status"],
        )
    console.print(table)
    if show_facets:
        for facet, counts in data["facets"].items():
            if counts:
                console.print(
                    f"[bold]{facet}[/bold]: " + ", ".join(f"{k} ({v})" for k, v in counts.items())
                )


@main.command()
@click.argument("ref", metavar="NAMESPACE/NAME[@VERSION]")
@client_options
def show(ref: str, url: str, token: str | None, as_json: bool) -> None:
    """Show one capability, or one version of it with its schemas."""
    path, _, version = ref.partition("@")
    if path.count("/") != 1:
        raise click.BadParameter(
            "expected NAMESPACE/NAME or NAMESPACE/NAME@VERSION", param_hint="REF"
        )
    target = f"/v1/capabilities/{path}" + (f"/versions/{version}" if version else "")
    data = _request(url, token, "GET", target)
    if as_json:
        _print_json(data)
        return
    if version:
        console.print(
            f"[bold]{data['id']}[/bold]  [{data['status']}]  runtime {data['runtime']['type']}"
        )
        console.print("[bold]input schema[/bold]")
        console.print_json(data=data["input_schema"])
        console.print("[bold]output schema[/bold]")
        console.print_json(data=data["output_schema"])
        if data.get("model_uri"):
            console.print(f"model: {data['model_uri']}")
        return
    console.print(f"[bold]{data['id']}[/bold]  {data['title']}")
    console.print(f"{data['summary']}\n")
    rows = [
        ("status", data["status"]),
        ("latest", data["latest_version"] or "-"),
        ("versions", ", ".join(data["versions"])),
        ("kind", data["kind"]),
        ("domain", data["domain"]),
        ("classification", data["classification"]),
        ("tags", ", ".join(data["tags"])),
        ("owner", data["owner"]),
        ("contact", data["contact"]),
        ("license", data["license"]),
        ("origin node", data["origin_node"]),
        ("updated", data["updated_at"]),
    ]
    table = Table(show_header=False, box=None)
    for k, v in rows:
        table.add_row(f"[dim]{k}[/dim]", str(v))
    console.print(table)
    if data["description"]:
        from rich.markdown import Markdown

        console.print(Markdown(data["description"]))


def _split_ref(ref: str) -> tuple[str, str]:
    path, at, version = ref.partition("@")
    if path.count("/") != 1 or (at and not version):
        raise click.BadParameter(
            "expected NAMESPACE/NAME, NAMESPACE/NAME@VERSION or NAMESPACE/NAME@ALIAS",
            param_hint="REF",
        )
    return path, version


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string: -i name=李雷


@main.command()
@click.argument("ref", metavar="NAMESPACE/NAME[@VERSION|@ALIAS]")
@click.argument("input_json", metavar="[INPUT]", required=False)
@click.option(
    "-i",
    "--input",
    "fields",
    multiple=True,
    metavar="FIELD=VALUE",
    help="One input field (repeatable); VALUE is JSON, or a string if it is not JSON",
)
@click.option("--timeout", type=float, help="Seconds the node may take (default: the node's)")
@click.option("--async", "run_async", is_flag=True, help="Queue it as a job and print the job id")
@click.option("--wait", is_flag=True, help="With --async: wait for the job and print its result")
@client_options
def invoke(
    ref: str,
    input_json: str | None,
    fields: tuple[str, ...],
    timeout: float | None,
    run_async: bool,
    wait: bool,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Call a capability and print its output.

    INPUT is the input object as JSON, or - to read it from stdin; or give fields one
    by one with -i. Examples:

    \b
      yunnao invoke local.urban/scene-stats -i 'image=[[0.1,0.1,0.9],[0.1,0.1,0.9],[0.1,0.1,0.9]]'
      yunnao invoke local.traffic/flow-forecast@1.0.0 - < counts.json
      yunnao invoke local.env/air-anomaly@production --async --wait - < readings.json
    """
    path, version = _split_ref(ref)
    data: Any = {}
    if input_json is not None:
        text = click.get_text_stream("stdin").read() if input_json == "-" else input_json
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="INPUT") from None
    for item in fields:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="-i")
        if not isinstance(data, dict):
            raise click.BadParameter("-i needs INPUT to be an object", param_hint="-i")
        data[key] = _parse_value(value)
    body: dict[str, Any] = {"input": data}
    if timeout is not None:
        body["timeout"] = timeout
    target = f"/v1/invoke/{path}" + (f"@{version}" if version else "")
    wait_s = (timeout or 300) + 10
    if not run_async:
        answer = _request(url, token, "POST", target, json=body, timeout=wait_s)
        _print_json(answer if as_json else answer["output"])
        return
    job = _request(url, token, "POST", target, json=body, headers={"Prefer": "respond-async"})
    if not wait:
        _print_json(job) if as_json else click.echo(job["id"])
        return
    with console.status(f"job {job['id']} {job['status']}") as status:
        while job["status"] not in ("succeeded", "failed"):
            time.sleep(0.5)
            job = _request(url, token, "GET", f"/v1/jobs/{job['id']}")
            status.update(f"job {job['id']} {job['status']}")
    if as_json:
        _print_json(job)
    elif job["status"] == "succeeded":
        _print_json(job["output"])
    else:
        error = job["error"]
        raise click.ClickException(f"{error['status']} {error['title']}: {error['detail']}")


@main.group()
def runtime() -> None:
    """See and change where capabilities run."""


@runtime.command("set")
@click.argument("ref", metavar="NAMESPACE/NAME@VERSION")
@click.argument("rtype", metavar="TYPE")
@click.option(
    "-c",
    "--config",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Binding option (repeatable), e.g. -c num_replicas=2; VALUE is JSON or a string",
)
@client_options
def runtime_set(
    ref: str, rtype: str, options: tuple[str, ...], url: str, token: str | None, as_json: bool
) -> None:
    """Bind a version to a runtime (inprocess, rayserve, bentoml, triton, ...) without
    republishing it. Needs an operator, author or admin token for its namespace."""
    path, version = _split_ref(ref)
    if not version:
        raise click.BadParameter("name the version: NAMESPACE/NAME@VERSION", param_hint="REF")
    config = {}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-c")
        config[key] = _parse_value(value)
    data = _request(
        url,
        token,
        "PUT",
        f"/v1/capabilities/{path}/versions/{version}/runtime",
        json={"type": rtype, "config": config},
    )
    if as_json:
        _print_json(data)
    else:
        console.print(f"{data['id']} now runs on [bold]{data['runtime']['type']}[/bold]")


@runtime.command("status")
@client_options
def runtime_status(url: str, token: str | None, as_json: bool) -> None:
    """The node's runtimes and their health."""
    data = _request(url, token, "GET", "/v1/runtimes")
    if as_json:
        _print_json(data)
        return
    for rtype in data["available"]:
        health = data["health"].get(rtype)
        state = "not started" if health is None else ("up" if health["ok"] else "DOWN")
        detail = f"  {health['detail']}" if health and health["detail"] else ""
        console.print(f"{rtype:<10} {state}{detail}")


@main.group()
def token() -> None:
    """Mint bearer tokens signed by this node's key."""


@token.command("create")
@node_options
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "operator", "author", "consumer", "auditor"]),
    help="What the holder may do; writes need admin or author",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="SCOPE",
    help="Namespace scope (repeatable); covers itself and everything under it, "
    "e.g. sd.qd.traffic, or a node id for all its departments",
)
@click.option(
    "--subject",
    default=lambda: os.environ.get("USER", "operator"),
    show_default="$USER",
    help="Who the token is for (recorded in the token)",
)
@click.option(
    "--department",
    metavar="DEPT",
    help="The holder's department, e.g. sd.qd.traffic (matched by capabilities' access rules)",
)
@click.option(
    "--ttl", default="30d", show_default=True, help="Lifetime: a number with s, m, h or d, e.g. 12h"
)
@click.option("--json", "as_json", is_flag=True, help="Print token and claims as JSON")
def token_create(
    node_id: str | None,
    data_dir: str | None,
    database_url: str | None,
    role: str,
    namespaces: tuple[str, ...],
    subject: str,
    department: str | None,
    ttl: str,
    as_json: bool,
) -> None:
    """Create a token, signed with the node key in the data dir.

    Run it on the node's machine (it reads the node key). Example:

        yunnao token create --role author --namespace sd.qd.traffic
    """
    from yunnao.registry import names, tokens

    settings = _settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    for scope in namespaces:
        if not names.is_node_id(scope):
            raise click.BadParameter(f"{scope!r}: {names.NAMESPACE_RULE}", param_hint="--namespace")
    if department is not None and not names.is_namespace(department):
        raise click.BadParameter(
            f"{department!r}: {names.NAMESPACE_RULE}", param_hint="--department"
        )
    lifetime = _parse_ttl(ttl)
    key = tokens.load_or_create_key(settings.key_path)
    jwt_text = tokens.issue(
        key,
        node_id=settings.node_id,
        subject=subject,
        role=role,
        scopes=list(namespaces),
        ttl=lifetime,
        department=department,
    )
    if as_json:
        _print_json(
            {
                "token": jwt_text,
                "node": settings.node_id,
                "subject": subject,
                "role": role,
                "namespaces": list(namespaces),
                "department": department,
                "expires_in_seconds": int(lifetime.total_seconds()),
            }
        )
    else:
        click.echo(jwt_text)


def mlflow_option(fn: Any) -> Any:
    return click.option(
        "--mlflow-uri",
        envvar="YUNNAO_MLFLOW_TRACKING_URI",
        help="MLflow tracking server or database URI  [env YUNNAO_MLFLOW_TRACKING_URI; "
        "default: embedded MLflow under the data dir]",
    )(fn)


@main.group()
def plugins() -> None:
    """Inspect the plugins this installation can load."""


@plugins.command("list")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--json", "as_json", is_flag=True, help="Print plugins and problems as JSON")
def plugins_list(targets: tuple[str, ...], as_json: bool) -> None:
    """List the installed plugins (entry-point group `yunnao`), what each contributes and
    where it comes from, and every plugin that failed to load with its cause.

    TARGETs (a .py file, a package directory, a module or a distribution) are loaded
    too, to check a plugin before installing it. Exits 1 if any plugin failed.
    """
    loaded = _load_plugins(targets)
    if as_json:
        _print_json(
            {
                "plugins": [vars(info) for info in loaded.infos.values()],
                "problems": [vars(p) for p in loaded.problems],
            }
        )
    else:
        table = Table(title=f"{len(loaded.infos)} plugins", title_justify="left")
        for column in ("plugin", "from", "capabilities", "runtimes"):
            table.add_column(column)
        for info in loaded.infos.values():
            table.add_row(
                info.name,
                info.source,
                ", ".join(info.capabilities) or "-",
                ", ".join(info.runtimes) or "-",
            )
        console.print(table)
        for problem in loaded.problems:
            err_console.print(f"[red]failed[/red] {problem}", soft_wrap=True)
    if loaded.problems:
        sys.exit(1)


def _load_plugins(targets: tuple[str, ...], *, entry_points: bool = True) -> Any:
    from yunnao.plugins.loader import Plugins

    loaded = Plugins()
    if entry_points:
        loaded.load_entry_points()
    for target in targets:
        try:
            loaded.load_target(target)
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    return loaded


@main.command()
@click.argument("target")
@click.option(
    "--capability",
    "names_",
    multiple=True,
    metavar="NAME",
    help="Publish only this capability of the target (repeatable; default: all)",
)
@click.option(
    "--namespace",
    help="Namespace to publish into  [default: <node id>.<plugin's entry-point name>]",
)
@click.option(
    "--status",
    type=click.Choice(["published", "draft"]),
    default="published",
    show_default=True,
    help="Lifecycle status of the new versions (drafts are seen only by their authors)",
)
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    help="MLflow alias to point at the new version (repeatable)  "
    "[default: production, or none for a draft]",
)
@click.option("--no-alias", is_flag=True, help="Set no MLflow alias")
@click.option(
    "--bentoml",
    "bentoml_service",
    is_flag=True,
    help="TARGET is a BentoML service (module:Class): register each of its APIs as a "
    "capability bound to the bentoml runtime (needs --namespace and --version)",
)
@click.option(
    "--working-dir",
    type=click.Path(file_okay=False, exists=True),
    help="With --bentoml: the directory to import the service from  [default: .]",
)
@click.option("--version", "version", help="With --bentoml: the version to publish, e.g. 1.0.0")
@click.option(
    "--classification",
    type=click.Choice(["public", "internal", "restricted"]),
    help="With --bentoml: who may discover and call them  [default: internal]",
)
@click.option(
    "--service-url",
    help="With --bentoml: call an already running service at this URL instead of having "
    "the node start `bentoml serve`",
)
@node_options
@mlflow_option
@click.option("--json", "as_json", is_flag=True, help="Print the published versions as JSON")
def publish(
    target: str,
    names_: tuple[str, ...],
    namespace: str | None,
    status: str,
    aliases: tuple[str, ...],
    no_alias: bool,
    bentoml_service: bool,
    working_dir: str | None,
    version: str | None,
    classification: str | None,
    service_url: str | None,
    node_id: str | None,
    data_dir: str | None,
    database_url: str | None,
    mlflow_uri: str | None,
    as_json: bool,
) -> None:
    """Publish the capabilities of a plugin into this node's registry, through MLflow.

    TARGET is a .py file, a package directory, an importable module or an installed
    distribution. Each capability is validated, logged to MLflow as a pyfunc model
    (code, artifacts, pinned requirements, signature), registered as a new version of
    the model `namespace.name` with its aliases, and recorded in the registry; if a
    step fails, what earlier steps made is removed. Run it where the node's store and
    MLflow are reachable (the node's machine, on embedded defaults). Examples:

    With --bentoml, TARGET is a BentoML service instead: each API becomes a capability
    (schemas from the API signatures, description from its docstring) bound to the
    `bentoml` runtime, recorded in the registry; the service's code stays where it is.

    \b
        yunnao publish yunnao-example-traffic        # an installed distribution
        yunnao publish ./my_plugin.py --namespace local.env
        yunnao publish --bentoml service:NoiseService --working-dir examples/bento \\
            --namespace local.env --version 1.0.0
    """
    import logging

    if bentoml_service:
        _publish_bentoml(
            target,
            names_=names_,
            namespace=namespace,
            version=version,
            status=status,
            working_dir=working_dir,
            service_url=service_url,
            classification=classification or "internal",
            settings=_settings(node_id=node_id, data_dir=data_dir, database_url=database_url),
            as_json=as_json,
        )
        return
    if working_dir or version or service_url or classification:
        raise click.UsageError(
            "--working-dir, --version, --classification and --service-url go with --bentoml"
        )

    from yunnao.plugins.errors import YunnaoError
    from yunnao.registry.publishing import STEPS, Publisher

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # progress says what happens

    from .app import SchemaOutOfDate, model_store, prepare_store

    settings = _settings(
        node_id=node_id,
        data_dir=data_dir,
        database_url=database_url,
        mlflow_tracking_uri=mlflow_uri,
    )
    loaded = _load_plugins((), entry_points=False)
    try:
        added = loaded.load_target(target)
    except LookupError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    for problem in loaded.problems:
        err_console.print(f"[red]failed[/red] {problem}", soft_wrap=True)
    caps = [c for c in loaded.capabilities.values() if c.plugin in added]
    if names_:
        missing = set(names_) - {c.name for c in caps}
        if missing:
            raise click.BadParameter(
                f"{', '.join(sorted(missing))} not in {target} "
                f"(it has: {', '.join(c.name for c in caps) or 'none'})",
                param_hint="--capability",
            )
        caps = [c for c in caps if c.name in names_]
    if not caps:
        raise click.ClickException(f"{target} contributes no capabilities")
    try:
        engine = prepare_store(settings)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    from yunnao.registry.store import RegistryStore

    store = RegistryStore(engine, settings.node_id)
    publisher = Publisher(store, model_store(settings))
    results, failures = [], 0
    for cap in caps:
        ns = namespace or publisher.default_namespace(cap)
        if ns is None:
            raise click.UsageError(
                f"plugin {cap.plugin!r} names no department: give --namespace "
                f"(e.g. {settings.node_id}.traffic)"
            )
        label = f"{ns}/{cap.name}@{cap.version}"
        with Progress(
            SpinnerColumn(),
            "[progress.description]{task.description}",
            BarColumn(),
            "{task.completed}/{task.total}",
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            task = progress.add_task(label, total=len(STEPS))

            def step(what: str, task: Any = task, label: str = label) -> None:
                done = STEPS.index(what)
                progress.update(task, completed=done, description=f"{label}: {what}")

            try:
                out = publisher.publish(
                    cap,
                    namespace=ns,
                    status=status,
                    aliases=() if no_alias else (aliases or None),
                    step=step,
                )
            except YunnaoError as exc:
                failures += 1
                progress.stop()
                err_console.print(f"[red]✗[/red] {label}: {exc.detail}", soft_wrap=True)
                for e in exc.errors:
                    err_console.print(f"    {e.field}: {e.message}")
                continue
        results.append(out)
        if not as_json:
            err_console.print(
                f"[green]✓[/green] {label} → {out.model_uri}"
                + (f" (aliases: {', '.join(out.aliases)})" if out.aliases else ""),
                soft_wrap=True,
            )
    engine.dispose()
    if as_json:
        _print_json([r.version.model_dump(mode="json") for r in results])
    if failures:
        sys.exit(1)


def _publish_bentoml(
    service: str,
    *,
    names_: tuple[str, ...],
    namespace: str | None,
    version: str | None,
    status: str,
    working_dir: str | None,
    service_url: str | None,
    classification: str,
    settings: Any,
    as_json: bool,
) -> None:
    """Register the APIs of a BentoML service as capabilities bound to the bentoml runtime."""
    from pathlib import Path

    from pydantic import ValidationError

    from yunnao.plugins.errors import YunnaoError, field_errors
    from yunnao.registry.schemas import PublishRequest
    from yunnao.registry.store import RegistryStore
    from yunnao.runtimes.bentoml_services import service_capabilities

    from .app import SchemaOutOfDate, prepare_store

    if not namespace or not version:
        raise click.UsageError("--bentoml needs --namespace and --version")
    with err_console.status(f"reading the APIs of {service}"):
        try:
            specs = service_capabilities(service, Path(working_dir or ".").resolve())
        except (ValueError, ImportError) as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    if names_:
        specs = [s for s in specs if s["name"] in names_]
    if not specs:
        raise click.ClickException(f"{service} has no API that can be published")
    try:
        engine = prepare_store(settings)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    store = RegistryStore(engine, settings.node_id)
    results, failures = [], 0
    for spec in specs:
        name = spec.pop("name")
        if service_url:
            spec["runtime"] = {
                "type": "bentoml",
                "config": {"url": service_url, "api": spec["runtime"]["config"]["api"]},
            }
        label = f"{namespace}/{name}@{version}"
        try:
            request = PublishRequest(
                version=version, status=status, classification=classification, **spec
            )
            results.append(store.publish(namespace, name, request))
        except ValidationError as exc:
            failures += 1
            errors = field_errors(exc)
            err_console.print(f"[red]✗[/red] {label}: " + "; ".join(
                f"{e.field}: {e.message}" for e in errors), soft_wrap=True)  # fmt: skip
            continue
        except YunnaoError as exc:
            failures += 1
            err_console.print(f"[red]✗[/red] {label}: {exc.detail}", soft_wrap=True)
            continue
        if not as_json:
            err_console.print(f"[green]✓[/green] {label} → bentoml {service}", soft_wrap=True)
    engine.dispose()
    if as_json:
        _print_json([r.model_dump(mode="json") for r in results])
    if failures:
        sys.exit(1)


def _parse_ttl(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise click.BadParameter(
            f"{text!r}: use a positive number with s, m, h or d, e.g. 12h", param_hint="--ttl"
        )
    return timedelta(seconds=int(number) * units[unit])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


from .audit_cli import audit  # noqa: E402
from .cascade_cli import cascade  # noqa: E402  (the groups use the helpers above)
from .demo import demo  # noqa: E402
from .keys_cli import key  # noqa: E402
from .usage_cli import usage  # noqa: E402

main.add_command(cascade)
main.add_command(key)
main.add_command(audit)
main.add_command(usage)
main.add_command(demo)
