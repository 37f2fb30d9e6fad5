"""``yunnao search``, ``show``, ``publish`` and ``plugins``: the catalog from the command
line, and publishing a plugin's capabilities (or a BentoML service) at the node."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table

from .common import (
    client_options,
    console,
    err_console,
    load_plugins,
    mlflow_option,
    node_options,
    node_settings,
    print_json,
    request_json,
)
from .uploads import remote_publish

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


@click.command()
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
    data = request_json(url, token, "GET", "/v1/capabilities", params=params)
    if as_json:
        print_json(data)
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


@click.command()
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
    data = request_json(url, token, "GET", target)
    if as_json:
        print_json(data)
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


@click.group()
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
    loaded = load_plugins(targets)
    if as_json:
        print_json(
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


@click.command()
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
@remote_publish
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
    """Publish the capabilities of a plugin into this node's registry, through MLflow;
    or, naming a node (--url, --profile or a saved default profile), upload it there.

    At a node, TARGET is a project folder (built into a wheel here), a .whl, a .tar.gz
    or a built Bento (`bentoml export`, a .bento file); the node publishes it as a job
    whose log is printed as it goes (--namespace or the profile's namespace; an author
    token of it).

    Locally, TARGET is a .py file, a package directory, an importable module or an installed
    distribution. Each capability is validated, logged to MLflow as a pyfunc model
    (code, artifacts, pinned requirements, signature), registered as a new version of
    the model `namespace.name` with its aliases, and recorded in the registry; if a
    step fails, what earlier steps made is removed. Run it where the node's store and
    MLflow are reachable (the node's machine, on embedded defaults).

    With --bentoml, TARGET is a BentoML service instead: each API becomes a capability
    (schemas from the API signatures, description from its docstring) bound to the
    `bentoml` runtime, recorded in the registry; the service's code stays where it is.

    Examples:

    \b
        yunnao publish ./my-plugin --url https://node.example --token $TOKEN \\
            --namespace sd.qd.env                    # upload to a node
        yunnao publish dist/noise-1.0.0.bento        # an exported Bento, to the profile's node
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
            settings=node_settings(node_id=node_id, data_dir=data_dir, database_url=database_url),
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

    from yunnao.app import SchemaOutOfDate, model_store, prepare_store

    settings = node_settings(
        node_id=node_id,
        data_dir=data_dir,
        database_url=database_url,
        mlflow_tracking_uri=mlflow_uri,
    )
    loaded = load_plugins((), entry_points=False)
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
        print_json([r.version.model_dump(mode="json") for r in results])
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

    from yunnao.app import SchemaOutOfDate, prepare_store
    from yunnao.plugins.errors import YunnaoError, field_errors
    from yunnao.registry.schemas import PublishRequest
    from yunnao.registry.store import RegistryStore
    from yunnao.runtimes.adapters.bentoml.services import service_capabilities

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
        print_json([r.model_dump(mode="json") for r in results])
    if failures:
        sys.exit(1)
