"""``yunnao node`` and ``yunnao namespace``: the titles people read instead of ids.

Each command talks to the node over HTTP. Run on the node's machine, it signs its own
short admin token with the node key; elsewhere, give ``--token`` (or a saved profile):
an admin or operator token of the node, or, for a department, an author token scoped
to it.
"""

from __future__ import annotations

from typing import Any

import click

from .common import NodeClient, admin_options, console, print_json

_title_options = (
    click.option("--title-zh", help="The Chinese title, e.g. 市南区交通运输局"),
    click.option("--title-en", help="The English title, e.g. Shinan Transport Bureau"),
)


def title_options(fn: Any) -> Any:
    for opt in reversed(_title_options):
        fn = opt(fn)
    return fn


def _patch(title_zh: str | None, title_en: str | None) -> dict[str, str]:
    body = {k: v for k, v in (("title_zh", title_zh), ("title_en", title_en)) if v is not None}
    if not body:
        raise click.UsageError("give --title-zh, --title-en or both")
    return body


def _show(data: dict[str, Any], node: NodeClient) -> None:
    if node.as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['id']}[/bold]", highlight=False)
    console.print(f"  中文     {data['title_zh'] or '-'}", highlight=False)
    console.print(f"  English  {data['title_en'] or '-'}", highlight=False)


@click.group("node")
def node_group() -> None:
    """This node's titles (青岛市 / Qingdao): what pages show instead of its id."""


@node_group.command("show")
@admin_options
def node_show(node: NodeClient) -> None:
    """Show this node's id and titles."""
    _show(node.request("GET", "/v1/node"), node)


@node_group.command("set")
@title_options
@admin_options
def node_set(title_zh: str | None, title_en: str | None, node: NodeClient) -> None:
    """Set this node's titles; the cascade carries them to the nodes above.

    \b
    e.g. yunnao node set --title-zh 市南区 --title-en "Shinan District"
    """
    _show(node.request("PATCH", "/v1/node", json=_patch(title_zh, title_en)), node)


@click.group("namespace")
def namespace_group() -> None:
    """This node's departments (namespaces) and their titles."""


@namespace_group.command("list")
@admin_options
def namespace_list(node: NodeClient) -> None:
    """List the departments this node knows, with their titles."""
    data = node.request("GET", "/v1/namespaces")
    if node.as_json:
        print_json(data)
        return
    for item in data["items"]:
        titles = " / ".join(t for t in (item["title_zh"], item["title_en"]) if t) or "-"
        click.echo(f"{item['id']:<40} {titles}")


@namespace_group.command("show")
@click.argument("namespace")
@admin_options
def namespace_show(namespace: str, node: NodeClient) -> None:
    """Show a department's titles."""
    _show(node.request("GET", f"/v1/namespaces/{namespace}"), node)


@namespace_group.command("create")
@click.argument("namespace")
@title_options
@admin_options
def namespace_create(
    namespace: str, title_zh: str | None, title_en: str | None, node: NodeClient
) -> None:
    """Create one of this node's departments (or retitle it if it exists).

    \b
    e.g. yunnao namespace create sd.qd.shinan.traffic --title-zh 市南区交通运输局
    """
    body = {k: v for k, v in (("title_zh", title_zh), ("title_en", title_en)) if v is not None}
    _show(node.request("PUT", f"/v1/namespaces/{namespace}", json=body), node)


@namespace_group.command("set")
@click.argument("namespace")
@title_options
@admin_options
def namespace_set(
    namespace: str, title_zh: str | None, title_en: str | None, node: NodeClient
) -> None:
    """Set the titles of one of this node's departments."""
    body = _patch(title_zh, title_en)
    _show(node.request("PATCH", f"/v1/namespaces/{namespace}", json=body), node)
