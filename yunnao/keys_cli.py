"""``yunnao key``: API keys for machine callers (create, list, revoke)."""

from __future__ import annotations

import click
from rich.table import Table

from .admin_client import NodeClient, admin_options
from .cli import _print_json, console


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
    type=click.Choice(["consumer", "author", "operator", "auditor", "admin"]),
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
        _print_json(made)
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
        _print_json(data)
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
        _print_json(data)
    else:
        console.print(f"revoked {data['id']} ({data['name']})")
