"""``yunnao audit``: check the audit log's hash chain, export its events."""

from __future__ import annotations

import sys

import click

from .admin_client import NodeClient, admin_options
from .cli import _print_json, _settings, console, node_options


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
    exits 1 when it is broken. Keep the printed head hash elsewhere to anchor the chain."""
    from yunnao.registry import db
    from yunnao.registry.audit import AuditLog

    settings = _settings(node_id=node_id, data_dir=data_dir, database_url=database_url)
    engine = db.create_engine(settings.db_url)
    try:
        verdict = AuditLog(engine).verify()
    finally:
        engine.dispose()
    if as_json:
        _print_json(
            {
                "ok": verdict.ok,
                "events": verdict.events,
                "head": verdict.head,
                "broken_at": verdict.broken_at,
                "reason": verdict.reason,
            }
        )
    elif verdict.ok:
        console.print(f"[green]intact[/green]: {verdict.events} events, head {verdict.head}")
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
