"""``yunnao token`` and ``yunnao key``: node-signed tokens (on the node's machine) and API
keys for machine callers (create, list, revoke)."""

from __future__ import annotations

import os

import click
from rich.table import Table

from .common import (
    NodeClient,
    admin_options,
    console,
    node_options,
    node_settings,
    parse_ttl,
    print_json,
)


@click.group()
def token() -> None:
    """Mint bearer tokens signed by this node's key."""


@token.command("create")
@node_options
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "operator", "author", "consumer", "auditor", "reviewer"]),
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
    from yunnao.registry import names
    from yunnao.registry.identity import tokens

    settings = node_settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    for scope in namespaces:
        if not names.is_node_id(scope):
            raise click.BadParameter(f"{scope!r}: {names.NAMESPACE_RULE}", param_hint="--namespace")
    if department is not None and not names.is_namespace(department):
        raise click.BadParameter(
            f"{department!r}: {names.NAMESPACE_RULE}", param_hint="--department"
        )
    lifetime = parse_ttl(ttl)
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
        print_json(
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


@click.group()
def key() -> None:
    """API keys for applications: shown once, stored as a hash, revocable.

    \b
    yunnao key create dashboard --capability sd.qd.traffic/flow-forecast --expires-in-days 30
    yunnao key list
    yunnao key revoke 3f2a9c1b7d0e
    """


@key.command("create")
@click.argument("name")
@click.option("--subject", help="Who calls with it (recorded as the caller)  [default: app:NAME]")
@click.option(
    "--role",
    type=click.Choice(["consumer", "author", "operator", "auditor", "reviewer", "admin"]),
    default="consumer",
    show_default=True,
)
@click.option("--scope", "scopes", multiple=True, help="Namespace or node id it covers (repeat)")
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    metavar="NS/NAME",
    help="A capability (or NS/*) it may invoke (repeat; default: whatever its role may)",
)
@click.option("--rate-limit", help='Its own rate limit, e.g. "100/min" or "5000/day"')
@click.option("--expires-in-days", type=float, default=90, show_default=True)
@click.option("--no-expiry", is_flag=True, help="Valid until revoked")
@admin_options
def create(
    name: str,
    subject: str | None,
    role: str,
    scopes: tuple[str, ...],
    capabilities: tuple[str, ...],
    rate_limit: str | None,
    expires_in_days: float,
    no_expiry: bool,
    node: NodeClient,
) -> None:
    """Create an API key NAME; the key is printed once: store it now."""
    body = {
        "name": name,
        "subject": subject,
        "role": role,
        "scopes": list(scopes),
        "capabilities": list(capabilities),
        "rate_limit": rate_limit,
        "expires_in_days": None if no_expiry else expires_in_days,
    }
    made = node.request("POST", "/v1/keys", json=body)
    if node.as_json:
        print_json(made)
        return
    console.print(f"API key [bold]{made['id']}[/bold] for {made['subject']} ({made['role']}):")
    click.echo(made["key"])
    console.print("[yellow]shown this once: store it now[/yellow]", highlight=False)


@key.command("list")
@admin_options
def list_keys(node: NodeClient) -> None:
    """This node's API keys (never their secrets)."""
    data = node.request("GET", "/v1/keys")
    if node.as_json:
        print_json(data)
        return
    table = Table(title=f"{len(data['items'])} API keys", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("name", "subject", "role", "limits", "expires", "state"):
        table.add_column(column, overflow="fold")
    for k in data["items"]:
        limits = ", ".join(k["capabilities"] + k["scopes"]) or "-"
        state = "revoked" if k["revoked_at"] else "active"
        expires = (k["expires_at"] or "never")[:10]
        table.add_row(k["id"], k["name"], k["subject"], k["role"], limits, expires, state)
    console.print(table)


@key.command("revoke")
@click.argument("key_id")
@admin_options
def revoke(key_id: str, node: NodeClient) -> None:
    """Revoke the API key KEY_ID."""
    data = node.request("DELETE", f"/v1/keys/{key_id}")
    if node.as_json:
        print_json(data)
    else:
        console.print(f"revoked {data['id']} ({data['name']})")
