"""``yunnao split``: a capability's traffic split (canary, shadow, automatic rollback),
over HTTP at the node that owns it."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from .common import Remote, console, print_json, remote_options, split_ref


def _path(ref: str) -> str:
    path, version = split_ref(ref)
    if version:
        raise click.BadParameter(
            "a split is set on NAMESPACE/NAME, without a version", param_hint="REF"
        )
    return f"/v1/capabilities/{path}/split"


def _show(data: dict[str, Any]) -> None:
    name = f"{data['namespace']}/{data['name']}"
    parts = [f"stable {data['stable']}"]
    if data.get("canary"):
        parts.append(f"canary {data['canary']['version']} ({data['canary']['share']:.1%})")
    if data.get("shadow"):
        parts.append(f"shadow {data['shadow']['version']} (mirrored)")
    rule = data["rollback"]
    console.print(f"[bold]{name}[/bold]: " + ", ".join(parts), highlight=False)
    if data.get("note"):
        console.print(f"[yellow]{data['note']}[/yellow]", highlight=False)
    console.print(
        f"rolls back above {rule['max_error_rate']:.1%} 5xx once a version has "
        f"{rule['min_calls']} calls in {rule['window']:g} s; set by {data.get('set_by') or '?'}",
        highlight=False,
    )
    table = Table(title=f"last {rule['window']:g} s", title_justify="left")
    for column in ("version", "role", "calls", "5xx", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("version", "role") else "right")
    for v in data["versions"]:
        table.add_row(
            v["version"], v["role"], str(v["calls"]), str(v["errors"]),
            "" if v["p50_ms"] is None else f"{v['p50_ms']:.1f}",
            "" if v["p99_ms"] is None else f"{v['p99_ms']:.1f}",
        )  # fmt: skip
    console.print(table)


@click.group("split")
def split() -> None:
    """Traffic splits: send a share of a capability's calls to a canary version, mirror
    them to a shadow version, and roll back by itself when a version fails.

    Only calls that name the capability alone (NAMESPACE/NAME, no @version or alias)
    are split. Set and clear need an author or admin token of the namespace, at the node
    that owns it.
    """


@split.command("show")
@click.argument("ref", metavar="NAMESPACE/NAME")
@remote_options
def show(ref: str, remote: Remote, as_json: bool) -> None:
    """The split of NAMESPACE/NAME with each version's calls, 5xx answers and latency
    over the rollback window."""
    data = remote.request("GET", _path(ref))
    print_json(data) if as_json else _show(data)


@split.command("set")
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("--stable", metavar="VERSION",
              help="The version the other calls go to  [default: the current one]")  # fmt: skip
@click.option("--canary", metavar="VERSION", help="The version a share of the calls goes to")
@click.option("--share", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="The canary's share of the calls (1: all of them, still watched)")  # fmt: skip
@click.option("--shadow", metavar="VERSION", help="A version every call is mirrored to")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Roll back when a new version's 5xx share passes this")  # fmt: skip
@click.option("--min-calls", type=click.IntRange(1), default=50, show_default=True,
              help="... with at least this many of its calls in the window")  # fmt: skip
@click.option("--window", type=click.FloatRange(0, 86_400, min_open=True), default=300,
              show_default=True, help="The window, in seconds")  # fmt: skip
@remote_options
def set_(
    ref: str, stable: str | None, canary: str | None, share: float, shadow: str | None,
    max_error_rate: float, min_calls: int, window: float, remote: Remote, as_json: bool,
) -> None:  # fmt: skip
    """Set (or replace) the split of NAMESPACE/NAME. Its versions must be published or
    deprecated. Publishing a version makes it current, so name the version to keep with
    --stable when the canary is the newest.

    \b
    Example: 10% to 1.1.0, the rest to 1.0.0, every call mirrored to 1.2.0
        yunnao split set sd.qd.traffic/flow-forecast --stable 1.0.0 \\
            --canary 1.1.0 --share 0.1 --shadow 1.2.0
    """
    if canary is None and shadow is None:
        raise click.UsageError("give --canary, --shadow or both")
    body: dict[str, Any] = {
        "rollback": {"max_error_rate": max_error_rate, "min_calls": min_calls, "window": window}
    }
    if stable:
        body["stable"] = stable
    if canary:
        body["canary"] = {"version": canary, "share": share}
    if shadow:
        body["shadow"] = {"version": shadow}
    data = remote.request("PUT", _path(ref), json=body)
    print_json(data) if as_json else _show(data)


@split.command("clear")
@click.argument("ref", metavar="NAMESPACE/NAME")
@remote_options
def clear(ref: str, remote: Remote, as_json: bool) -> None:
    """Remove the split of NAMESPACE/NAME: every call goes to the current version."""
    remote.request("DELETE", _path(ref))
    if as_json:
        print_json({"cleared": ref})
    else:
        console.print(f"cleared the split of {ref}", highlight=False)
