"""``yunnao review``: the review of what child nodes share upward, over HTTP.

At a node that reviews (``YUNNAO_CASCADE_REVIEW=true``), capabilities arriving from its
districts wait until one of its reviewers approves them: only then are they in its
catalog and do they travel further up. A refusal's reason travels back down to the
district's page. Rules approve what matches on arrival.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from yunnao.registry.clock import BEIJING

from .common import Remote, console, print_json, remote_options, split_ref

STATES = {"pending": "审核中 pending", "approved": "已通过 approved", "refused": "未通过 refused"}


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _path(ref: str) -> str:
    path, version = split_ref(ref)
    if version:
        raise click.BadParameter("a capability (NAMESPACE/NAME), not a version", param_hint="REF")
    return path


@click.group("review")
def review() -> None:
    """Review what child nodes share upward: the queue, decisions and rules."""


@review.command("list")
@click.option("--state", type=click.Choice(["pending", "approved", "refused", "all"]),
              default="pending", show_default=True)  # fmt: skip
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0)
@remote_options
def list_(state: str, limit: int, offset: int, remote: Remote, as_json: bool) -> None:
    """The review queue (pending: oldest first) or past decisions. Needs a reviewer's
    or admin's token of the node."""
    data = remote.request(
        "GET", "/v1/cascade/reviews", params={"state": state, "limit": limit, "offset": offset}
    )
    if as_json:
        print_json(data)
        return
    if not data["enabled"]:
        console.print("[yellow]this node does not review (YUNNAO_CASCADE_REVIEW is off)[/yellow]")
    table = Table(title=f"{state}: {data['total']}", title_justify="left")
    for column in ("capability", "title", "from", "classification", "versions", "state",
                   "arrived (Beijing)", "decided by", "reason"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for r in data["items"]:
        table.add_row(
            f"{r['namespace']}/{r['name']}", r["title"] or "", r["origin_node"],
            r["classification"] or "", ", ".join(r["versions"]), STATES[r["state"]],
            _when(r["arrived_at"]), r["decided_by"] or "", r["reason"] or "",
        )  # fmt: skip
    console.print(table)


@review.command("show")
@click.argument("ref", metavar="NS/NAME")
@remote_options
def show(ref: str, remote: Remote, as_json: bool) -> None:
    """One capability in review, with the entries held for the decision."""
    data = remote.request("GET", f"/v1/cascade/reviews/{_path(ref)}")
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{ref}[/bold]  {data['title'] or ''}  ({STATES[data['state']]})",
                  highlight=False)  # fmt: skip
    console.print(f"from {data['origin_node']} through {data['via_node']}, "
                  f"arrived {_when(data['arrived_at'])}", highlight=False)  # fmt: skip
    cap = data.get("capability") or {}
    if cap.get("summary"):
        console.print(cap["summary"], highlight=False)
    for v in data["held_versions"]:
        fields = ", ".join(sorted((v.get("input_schema") or {}).get("properties", {})))
        console.print(f"  {v['version']} ({v['classification']}) input: {fields}",
                      highlight=False)  # fmt: skip
    if data["reason"]:
        console.print(f"reason: {data['reason']}", highlight=False)


@review.command("approve")
@click.argument("ref", metavar="NS/NAME")
@remote_options
def approve(ref: str, remote: Remote, as_json: bool) -> None:
    """Approve: the capability enters this node's catalog and travels further up."""
    data = remote.request("POST", f"/v1/cascade/reviews/{_path(ref)}/approve")
    if as_json:
        print_json(data)
    else:
        console.print(f"approved {ref}: {data['applied']} entries in the catalog",
                      highlight=False)  # fmt: skip


@review.command("refuse")
@click.argument("ref", metavar="NS/NAME")
@click.option("--reason", required=True, help="Why: the district sees it on its page")
@remote_options
def refuse(ref: str, reason: str, remote: Remote, as_json: bool) -> None:
    """Refuse, with a reason; a newer version from the district asks again."""
    data = remote.request("POST", f"/v1/cascade/reviews/{_path(ref)}/refuse",
                          json={"reason": reason})  # fmt: skip
    if as_json:
        print_json(data)
    else:
        console.print(f"refused {ref}: {reason}", highlight=False)


@review.command("status")
@click.argument("ref", metavar="NS/NAME")
@remote_options
def status(ref: str, remote: Remote, as_json: bool) -> None:
    """At a district: what the nodes above decided about one of its capabilities."""
    data = remote.request("GET", f"/v1/cascade/decisions/{_path(ref)}")
    if as_json:
        print_json(data)
        return
    if not data["items"]:
        console.print("no decision from a node above (none reviews, or the district does "
                      "not follow its parent)")  # fmt: skip
    for d in data["items"]:
        why = f": {d['reason']}" if d["reason"] else ""
        console.print(f"{d['reviewer']}: {STATES[d['state']]}{why}", highlight=False)


@review.command("rules")
@remote_options
def rules(remote: Remote, as_json: bool) -> None:
    """The rules that approve on arrival."""
    data = remote.request("GET", "/v1/cascade/review-rules")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"review rules: {len(data['items'])}", title_justify="left")
    for column in ("id", "namespace", "classification", "district", "by"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for r in data["items"]:
        table.add_row(r["id"], r["namespace"] or "*", r["classification"] or "*",
                      r["district"] or "*", r["created_by"] or "")  # fmt: skip
    console.print(table)


@review.command("rule-add")
@click.option("--namespace", help="A namespace, or a node: everything under it")
@click.option("--classification", type=click.Choice(["public", "internal"]))
@click.option("--district", help="A node id: it and the nodes below it")
@remote_options
def rule_add(
    namespace: str | None, classification: str | None, district: str | None, remote: Remote,
    as_json: bool,
) -> None:  # fmt: skip
    """Approve on arrival what matches every option given (an admin's token).

    \b
    Example (the parks department of 市南区, public entries only):
        yunnao review rule-add --namespace sd.qd.shinan.parks --classification public
    """
    body: dict[str, Any] = {"namespace": namespace, "classification": classification,
                            "district": district}  # fmt: skip
    made = remote.request("POST", "/v1/cascade/review-rules", json=body)
    if as_json:
        print_json(made)
    else:
        console.print(f"rule {made['id']} added", highlight=False)


@review.command("rule-remove")
@click.argument("rule_id", metavar="ID")
@remote_options
def rule_remove(rule_id: str, remote: Remote, as_json: bool) -> None:
    """Remove a rule (what it approved stays approved)."""
    remote.request("DELETE", f"/v1/cascade/review-rules/{rule_id}")
    if as_json:
        print_json({"removed": rule_id})
    else:
        console.print(f"removed rule {rule_id}", highlight=False)
