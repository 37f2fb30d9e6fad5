"""``yunnao cascade``: link this node to its parent and children, and watch the sync.

Each command talks to the node over HTTP. Run on the node's machine, it signs its own
short admin token with the node key (as ``yunnao token create`` would); elsewhere,
give ``--token`` (an admin token of that node for changes, operator for status).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import NodeClient as Node
from .common import admin_options as cascade_options
from .common import client_options, console, print_json, request_json


@click.group()
def cascade() -> None:
    """Link this node to its parent and children, and watch replication.

    \b
    Linking takes one command on each side, e.g. for district sd.qd.shinan:
      at the city:      yunnao cascade add-child sd.qd.shinan --child-url http://shinan:8000
      at the district:  yunnao cascade add-parent sd.qd --parent-url http://city:8000
    From then on the nodes stay in sync by themselves, through restarts and outages.
    """


def _link(node: Node, body: dict[str, Any]) -> None:
    data = node.request("POST", "/v1/cascade/peers", json=body)
    if node.as_json:
        print_json(data)
        return
    modes = [m for m in ("pull", "push") if data[m]]
    fingerprint = data["public_key"][:16]
    console.print(
        f"linked {data['relation']} [bold]{data['id']}[/bold] "
        f"({', '.join(modes) or 'it pushes here'}; key {fingerprint}…)"
    )


@cascade.command("node")
@client_options
def show_node(url: str, token: str | None, as_json: bool) -> None:
    """Show a node's id, public key, parent and children (what linking it needs)."""
    data = request_json(url, token, "GET", "/v1/cascade/node")
    if as_json:
        print_json(data)
        return
    console.print(f"node        {data['id']}  {data['title']}".rstrip())
    console.print(f"public key  {data['public_key']}")
    console.print(f"parent      {data['parent'] or '-'}")
    console.print(f"children    {', '.join(data['children']) or '-'}")


@cascade.command("add-child")
@click.argument("child")
@click.option("--child-url", "child_url", help="The child's base URL (to pull its feed)")
@click.option(
    "--public-key", help="The child's public key (64 hex digits); read from --child-url if left out"
)
@click.option(
    "--push-only",
    is_flag=True,
    help="The child pushes to this node (its network allows only outgoing connections); "
    "this node does not pull",
)
@cascade_options
def add_child(
    child: str,
    child_url: str | None,
    public_key: str | None,
    push_only: bool,
    node: Node,
) -> None:
    """Link CHILD (a node id one segment below this node's) as a child: its entries
    cascade up to this node, which re-exposes them to its own parent."""
    body = {"id": child, "relation": "child", "url": child_url, "public_key": public_key}
    body["pull"] = not push_only
    _link(node, body)


@cascade.command("add-parent")
@click.argument("parent")
@click.option("--parent-url", "parent_url", help="The parent's base URL")
@click.option(
    "--public-key",
    help="The parent's public key (64 hex digits); read from --parent-url if left out",
)
@click.option(
    "--push",
    is_flag=True,
    help="Send this node's changes to the parent (when the parent cannot reach this node)",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Also read the parent's catalog (its own and the siblings' shared capabilities)",
)
@cascade_options
def add_parent(
    parent: str,
    parent_url: str | None,
    public_key: str | None,
    push: bool,
    follow: bool,
    node: Node,
) -> None:
    """Link PARENT (a node id above this one) as this node's parent. By default the
    parent pulls this node's feed; --push sends it instead, --follow reads the parent's."""
    body = {
        "id": parent,
        "relation": "parent",
        "url": parent_url,
        "public_key": public_key,
        "pull": follow,
        "push": push,
    }
    _link(node, body)


@cascade.command("remove")
@click.argument("peer")
@cascade_options
def remove(peer: str, node: Node) -> None:
    """Unlink PEER (entries it sent stay until deleted at their origin)."""
    node.request("DELETE", f"/v1/cascade/peers/{peer}")
    console.print(f"unlinked {peer}")


def _age(value: str | None) -> str:
    if not value:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(value)).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _table(peers: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("peer", no_wrap=True)
    for column in ("relation", "mode", "applied through", "lag", "last sync", "rejected"):
        table.add_column(column)
    table.add_column("last error", overflow="fold")
    for p in peers:
        modes = [m for m in ("pull", "push") if p[m]] or (
            ["pushes here"] if p["relation"] == "child" else ["-"]
        )
        lag = "-"
        if p["lag_seconds"] is not None:
            lag = f"{p['lag_entries']} ({p['lag_seconds']:.1f} s)"
        error = ""
        if p["failures"]:
            error = f"[red]{p['failures']}× {p['last_error']}[/red]"
        table.add_row(
            p["id"],
            p["relation"],
            ", ".join(modes),
            f"{p['checkpoint']} / {p['head']}",
            lag,
            _age(p["last_sync_at"]),
            str(p["rejected"]),
            error,
        )
    return table


@cascade.command("status")
@cascade_options
def status(node: Node) -> None:
    """This node's parent and children: checkpoint, lag, last sync, errors, rejections."""
    data = node.request("GET", "/v1/cascade/peers")
    if node.as_json:
        print_json(data)
    elif not data["items"]:
        console.print(f"node {data['node']} is not linked to any node")
    else:
        console.print(_table(data["items"], f"node {data['node']}"))


@cascade.command("sync")
@click.argument("peers", nargs=-1, metavar="[PEER]...")
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds per peer")
@cascade_options
def sync(
    peers: tuple[str, ...],
    timeout: float,
    node: Node,
) -> None:
    """Catch up with PEERs now (default: every linked node) and show their status."""
    if not peers:
        peers = tuple(p["id"] for p in node.request("GET", "/v1/cascade/peers")["items"])
    results = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=node.as_json,
    ) as progress:
        for peer in peers:
            task = progress.add_task(f"syncing with {peer}", total=None)
            results.append(
                node.request(
                    "POST",
                    f"/v1/cascade/peers/{peer}/sync",
                    params={"timeout": timeout},
                    timeout=timeout + 10,
                )
            )
            progress.remove_task(task)
    if node.as_json:
        print_json({"items": results})
    else:
        console.print(_table(results, "synced"))


@cascade.command("diff")
@click.argument("peer")
@click.option("--repair", is_flag=True, help="Fetch again what differs and drop the extras")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds")
@cascade_options
def diff(peer: str, repair: bool, timeout: float, node: Node) -> None:
    """Compare this node's copy of PEER's entries with PEER's feed now: missing here,
    extra here, different (by content hash). Exits 1 when they differ (and were not
    repaired). Replication goes on meanwhile.

    \b
    Example:
        yunnao cascade diff sd.qd.shinan
        yunnao cascade diff sd.qd.shinan --repair
    """
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=node.as_json) as progress:  # fmt: skip
        progress.add_task(f"reading {peer}'s feed" + (" and repairing" if repair else ""))
        method, action = ("POST", "repair") if repair else ("GET", "diff")
        data = node.request(method, f"/v1/cascade/peers/{peer}/{action}", timeout=timeout)
    if node.as_json:
        print_json(data)
    else:
        found = {k: data[k] for k in ("missing", "extra", "different")}
        console.print(f"{peer}: {data['compared']} entries in its feed (head {data['head']})",
                      highlight=False)  # fmt: skip
        for kind, keys in found.items():
            if keys:
                console.print(f"[bold]{kind}[/bold] ({len(keys)}):", highlight=False)
                for key in keys[:200]:
                    console.print(f"  {key}", highlight=False)
                if len(keys) > 200:
                    console.print(f"  … {len(keys) - 200} more (--json for all)")
        held = data.get("held") or []
        if held:
            console.print(f"held for review here ({len(held)}): not in the catalog on purpose "
                          "(`yunnao review list`)", highlight=False)  # fmt: skip
        if not any(found.values()):
            console.print("[green]in agreement[/green]")
        elif data["repaired"]:
            console.print(f"repaired: {data['applied']} written again, {data['removed']} removed",
                          highlight=False)  # fmt: skip
            for why in data["rejected"]:
                console.print(f"  [red]rejected[/red] {why}", highlight=False)
    if any(data[k] for k in ("missing", "extra", "different")) and not data["repaired"]:
        sys.exit(1)


@cascade.command("rejections")
@click.option("--peer", help="Only entries sent by this linked node")
@click.option("--limit", type=int, default=20, show_default=True)
@cascade_options
def rejections(
    peer: str | None,
    limit: int,
    node: Node,
) -> None:
    """Entries linked nodes sent that were rejected, newest first, with the reason."""
    params: dict[str, Any] = {"limit": limit}
    if peer:
        params["peer"] = peer
    data = node.request("GET", "/v1/cascade/rejections", params=params)
    if node.as_json:
        print_json(data)
        return
    table = Table(title=f"{len(data['items'])} rejected entries", title_justify="left")
    for column in ("when", "from", "origin", "entry", "reason"):
        table.add_column(column, overflow="fold")
    for r in data["items"]:
        entry = f"{r['entity'] or '?'} {r['key'] or '?'}"
        table.add_row(_age(r["at"]), r["peer"], r["origin"] or "?", entry, r["reason"])
    console.print(table)
