"""``yunnao access``: access requests (权限申请) over HTTP, from any machine.

Someone who may find a capability but not call it asks for access (``request``) and
follows the decision (``mine``); the capability's department, its authors and admins,
lists pending requests (``list``) and approves (``approve``, optionally until a time)
or refuses with a reason (``refuse``). A request for a capability of another node goes,
through the node asked, to the node that owns it, where it is decided.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from yunnao.registry.clock import BEIJING

from .common import Remote, console, parse_ttl, print_json, remote_options, split_ref

STATES = {"pending": "待审批", "approved": "已批准", "refused": "未通过", "withdrawn": "已撤回"}


def parse_expiry(text: str | None) -> str | None:
    """``--expires``: a duration from now (30d, 12h) or a date or time (2027-03-31, or
    2027-03-31T18:00; Beijing time unless it names a zone), as ISO 8601 UTC."""
    if text is None:
        return None
    if text[-1:] in ("s", "m", "h", "d") and text[:-1].isdigit():
        return (datetime.now(UTC) + parse_ttl(text)).isoformat()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give a duration (30d, 12h) or a date or time (2027-03-31)",
            param_hint="--expires",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=BEIJING)
    return when.astimezone(UTC).isoformat()


def _beijing(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def state_text(item: dict[str, Any]) -> str:
    """待审批 / 已批准 (until …) / 未通过：reason."""
    text = STATES.get(item["status"], item["status"])
    if item["status"] == "approved" and item.get("expires_at"):
        text += f" (until {_beijing(item['expires_at'])})"
    if item["status"] == "refused" and item.get("decision_reason"):
        text += f"：{item['decision_reason']}"
    return text


def _cap(ref: str) -> str:
    path, version = split_ref(ref)
    if version:
        raise click.BadParameter("expected NAMESPACE/NAME, without @VERSION", param_hint="REF")
    return path


def _table(items: list[dict[str, Any]], title: str, *, requester: bool = True) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["id", "capability"] + (["requester", "node"] if requester else [])
    for column in (*columns, "reason", "asked", "state"):
        table.add_column(column, no_wrap=column in ("id", "asked"), overflow="fold")
    for item in items:
        who = [item["requester"], item["requester_node"]] if requester else []
        cap = item["capability"] + (f"\n{item['title']}" if item.get("title") else "")
        table.add_row(
            item["id"], cap, *who, item["reason"], _beijing(item["created_at"]), state_text(item)
        )
    return table


def _show(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(item)
        return
    console.print(
        f"{item['id']}  {item['capability']}  [bold]{state_text(item)}[/bold]", highlight=False
    )


@click.group("access")
def access() -> None:
    """Access requests (权限申请): ask to call a capability, and decide others' requests."""


@access.command("request")
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("--reason", required=True, help="Why you need to call it (shown to the deciders)")
@click.option("--expires", help="Until when: a duration (30d) or a date (2027-03-31, Beijing)")
@remote_options
def request(ref: str, reason: str, expires: str | None, remote: Remote, as_json: bool) -> None:
    """Ask for access to a capability you may find but not call.

    \b
    Example:
        yunnao access request sd.qd.shinan.env/air-anomaly --reason "季度报表" --expires 90d
    """
    body: dict[str, Any] = {"reason": reason}
    if (when := parse_expiry(expires)) is not None:
        body["expires_at"] = when
    _show(
        remote.request("POST", f"/v1/capabilities/{_cap(ref)}/access-requests", json=body), as_json
    )


@access.command("mine")
@click.argument("ref", metavar="NAMESPACE/NAME")
@remote_options
def mine(ref: str, remote: Remote, as_json: bool) -> None:
    """Your requests for a capability and their decisions."""
    path = _cap(ref)
    data = remote.request("GET", f"/v1/capabilities/{path}/access-requests/mine")
    if as_json:
        print_json(data)
        return
    console.print(_table(data["items"], f"{path}: your requests", requester=False))


@access.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "refused", "withdrawn", "all"]),
    default="pending",
    show_default=True,
)
@click.option("--namespace", help="Only this department (and those below it)")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@remote_options
def list_requests(
    status: str, namespace: str | None, page: int, remote: Remote, as_json: bool
) -> None:
    """Requests for your departments' capabilities (authors and admins)."""
    params: dict[str, Any] = {"page": page, "per_page": 50}
    if status != "all":
        params["status"] = status
    if namespace:
        params["namespace"] = namespace
    data = remote.request("GET", "/v1/access-requests", params=params)
    if as_json:
        print_json(data)
        return
    console.print(_table(data["items"], f"access requests ({status}): {data['total']}"))


@access.command("approve")
@click.argument("request_id", metavar="ID")
@click.option("--expires", help="Grant until: a duration (30d) or a date; default: as asked")
@remote_options
def approve(request_id: str, expires: str | None, remote: Remote, as_json: bool) -> None:
    """Approve a request: the requester is granted access (until --expires, if given)."""
    body = {} if expires is None else {"expires_at": parse_expiry(expires)}
    _show(remote.request("POST", f"/v1/access-requests/{request_id}/approve", json=body), as_json)


@access.command("refuse")
@click.argument("request_id", metavar="ID")
@click.option("--reason", required=True, help="Why (the requester sees it)")
@remote_options
def refuse(request_id: str, reason: str, remote: Remote, as_json: bool) -> None:
    """Refuse a request, with a reason the requester sees."""
    body = {"reason": reason}
    _show(remote.request("POST", f"/v1/access-requests/{request_id}/refuse", json=body), as_json)


@access.command("withdraw")
@click.argument("request_id", metavar="ID")
@remote_options
def withdraw(request_id: str, remote: Remote, as_json: bool) -> None:
    """Withdraw your own pending request."""
    _show(remote.request("POST", f"/v1/access-requests/{request_id}/withdraw"), as_json)
