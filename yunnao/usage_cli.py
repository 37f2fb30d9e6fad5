"""``yunnao usage``: the usage report of a node, for assessment."""

from __future__ import annotations

import click
from rich.table import Table

from .admin_client import NodeClient, admin_options
from .cli import _print_json, console


@click.command()
@click.option("--since", help="First day, YYYY-MM-DD (UTC)  [default: 6 days ago]")
@click.option("--until", help="The day after the last, YYYY-MM-DD  [default: tomorrow]")
@click.option(
    "--by",
    type=click.Choice(["capability", "department", "node"]),
    default="capability",
    show_default=True,
)
@admin_options
def usage(since: str | None, until: str | None, by: str, node: NodeClient) -> None:
    """Calls, answers, latency and callers per day (of the namespaces the token covers)."""
    params = {
        "by": by,
        **({"since": since} if since else {}),
        **({"until": until} if until else {}),
    }
    data = node.request("GET", "/v1/usage", params=params)
    if node.as_json:
        _print_json(data)
        return
    table = Table(title=f"usage {data['since']} – {data['until']} by {by}", title_justify="left")
    table.add_column("day", no_wrap=True)
    table.add_column(by, no_wrap=True)
    for column in ("calls", "ok", "4xx", "5xx", "p50 ms", "p99 ms", "callers"):
        table.add_column(column, justify="right")
    for r in data["items"]:
        table.add_row(
            r["day"], r["key"], str(r["calls"]), str(r["ok"]), str(r["refused"]),
            str(r["errors"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["callers"]),
        )  # fmt: skip
    console.print(table)
