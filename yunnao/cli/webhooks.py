"""``yunnao webhook``: subscriptions to a namespace's or the node's events, over HTTP.

A namespace's authors subscribe it (versions published, deprecated, retired; access
requested, granted, refused); a node's operators subscribe the node (all of that, and
entries arriving by cascade, linked nodes unreachable and back). Deliveries are signed
in the Standard Webhooks format with the secret ``add`` prints once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from yunnao.registry.clock import BEIJING

from .common import Remote, console, print_json, remote_options


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


@click.group("webhook")
def webhook() -> None:
    """Webhooks: change notifications for a namespace or this node, signed."""


@webhook.command("add")
@click.argument("scope")
@click.argument("target", metavar="URL")
@click.option("--event", "events", multiple=True, required=True, metavar="TYPE",
              help="An event type (repeat it); `yunnao webhook list` names them all")  # fmt: skip
@click.option("--description", default="", help="What the receiver is")
@remote_options
def add(
    scope: str, target: str, events: tuple[str, ...], description: str, remote: Remote,
    as_json: bool,
) -> None:  # fmt: skip
    """Subscribe SCOPE (a namespace of the node, or the node's id) to events, delivered
    to URL. Prints the signing secret: this once.

    \b
    Example:
        yunnao webhook add sd.qd.traffic https://apps.qd.gov.cn/hooks/yunnao \\
            --event version.published --event version.retired
    """
    body = {"scope": scope, "url": target, "events": list(events), "description": description}
    made = remote.request("POST", "/v1/webhooks", json=body)
    if as_json:
        print_json(made)
        return
    console.print(f"webhook [bold]{made['id']}[/bold] for {scope} → {target}", highlight=False)
    console.print(f"events: {', '.join(made['events'])}", highlight=False)
    console.print(
        f"secret (shown this once; verify deliveries with it): [bold]{made['secret']}[/bold]",
        highlight=False,
    )


@webhook.command("list")
@click.option("--scope", help="Only this namespace's or node's subscriptions")
@remote_options
def list_(scope: str | None, remote: Remote, as_json: bool) -> None:
    """The subscriptions you may manage, with their pending and failed deliveries."""
    data = remote.request("GET", "/v1/webhooks", params={"scope": scope} if scope else None)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"webhooks: {len(data['items'])}", title_justify="left")
    for column in ("id", "scope", "url", "events", "pending", "failed"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for h in data["items"]:
        table.add_row(h["id"], h["scope"], h["url"], ", ".join(h["events"]), str(h["pending"]),
                      str(h["failed"]))  # fmt: skip
    console.print(table)
    console.print("event types: " + ", ".join(data["events"]), highlight=False)


@webhook.command("remove")
@click.argument("webhook_id", metavar="ID")
@remote_options
def remove(webhook_id: str, remote: Remote, as_json: bool) -> None:
    """Remove a subscription (nothing more is sent) and its delivery log."""
    remote.request("DELETE", f"/v1/webhooks/{webhook_id}")
    if as_json:
        print_json({"removed": webhook_id})
    else:
        console.print(f"removed webhook {webhook_id}", highlight=False)


@webhook.command("test")
@click.argument("webhook_id", metavar="ID")
@remote_options
def test(webhook_id: str, remote: Remote, as_json: bool) -> None:
    """Send a webhook.test event to the subscription (see it with `deliveries`)."""
    got = remote.request("POST", f"/v1/webhooks/{webhook_id}/test")
    if as_json:
        print_json(got)
    else:
        console.print(f"queued test delivery {got['id']}", highlight=False)


@webhook.command("deliveries")
@click.argument("webhook_id", metavar="ID")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=int, default=20, show_default=True)
@remote_options
def deliveries(
    webhook_id: str, state: str | None, limit: int, remote: Remote, as_json: bool
) -> None:
    """A subscription's deliveries, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    data = remote.request("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"deliveries of {webhook_id}", title_justify="left")
    for column in ("id", "event", "state", "attempts", "created (Beijing)", "last error"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for d in data["items"]:
        table.add_row(d["id"], d["event"], d["state"], str(d["attempts"]), _when(d["created_at"]),
                      d.get("last_error") or "")  # fmt: skip
    console.print(table)


@webhook.command("redeliver")
@click.argument("webhook_id", metavar="ID")
@click.argument("delivery_id", metavar="DELIVERY")
@remote_options
def redeliver(webhook_id: str, delivery_id: str, remote: Remote, as_json: bool) -> None:
    """Send a delivery again now, with the same webhook-id."""
    got = remote.request("POST", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
    if as_json:
        print_json(got)
    else:
        console.print(f"delivery {got['id']} queued again", highlight=False)
