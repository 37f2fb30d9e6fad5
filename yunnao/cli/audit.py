"""``yunnao audit`` and ``yunnao usage``: the audit log (verify its hash chain, export
its events) and usage reports, for auditors and assessors."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from .common import NodeClient, admin_options, console, node_options, node_settings, print_json


@click.group()
def audit() -> None:
    """The audit log: every write, invocation and refusal, hash-chained."""


@audit.command("verify")
@node_options
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON")
def verify(
    node_id: str | None, data_dir: str | None, database_url: str | None, as_json: bool
) -> None:
    """Walk the whole chain in the node's store (run it where the store is reachable);
    exits 1 when it is broken. Keep the printed head hash elsewhere to anchor the chain.
    A chain pruned by retention (YUNNAO_AUDIT_KEEP_DAYS) is verified from its newest
    prune's anchor."""
    from yunnao.registry import db
    from yunnao.registry.audit import AuditLog

    settings = node_settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    engine = db.create_engine(settings.db_url)
    try:
        verdict = AuditLog(engine).verify()
    finally:
        engine.dispose()
    if as_json:
        print_json(
            {
                "ok": verdict.ok,
                "events": verdict.events,
                "head": verdict.head,
                "broken_at": verdict.broken_at,
                "reason": verdict.reason,
                "pruned_through": verdict.pruned_through,
                "pruned_before": (
                    verdict.pruned_before.isoformat() if verdict.pruned_before else None
                ),
            }
        )
    elif verdict.ok:
        console.print(f"[green]intact[/green]: {verdict.events} events, head {verdict.head}")
        if verdict.pruned_before is not None:
            console.print(
                f"events up to {verdict.pruned_through} (older than "
                f"{verdict.pruned_before:%Y-%m-%d %H:%M} UTC) were removed by retention; "
                "the chain is verified from there"
            )
    else:
        console.print(
            f"[red]BROKEN[/red] at event {verdict.broken_at}: {verdict.reason} "
            f"({verdict.events} events before it chain correctly)"
        )
    if not verdict.ok:
        sys.exit(1)


@audit.command("export")
@click.option("--since", type=int, default=0, show_default=True, help="Events after this seq")
@click.option("--actor", help="Only this caller's events")
@click.option("--action", help="Only this operation, e.g. publishVersion")
@admin_options
def export(since: int, actor: str | None, action: str | None, node: NodeClient) -> None:
    """Print events as JSON lines (all of them, page by page), e.g. > audit.jsonl."""
    import json

    while True:
        params = {"since": since, "limit": 10_000, "actor": actor, "action": action}
        page = node.request(
            "GET", "/v1/audit", params={k: v for k, v in params.items() if v is not None}
        )
        for event in page["items"]:
            click.echo(json.dumps(event, ensure_ascii=False))
        if not page["items"]:
            return
        since = page["next"]


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
        print_json(data)
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
