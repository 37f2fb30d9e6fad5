"""``yunnao assessment``: the assessment (考核评价) of a node's districts or departments
for a period, as a table, CSV or XLSX (``GET /v1/assessment``), for the quarterly
report."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from .common import NodeClient, admin_options, admin_token, console, print_json, send

PERCENT = ("availability", "error_rate")
SHOWN = (
    ("capabilities", "已发布"),
    ("current", "期内更新"),
    ("shared", "向上共享"),
    ("calls", "调用"),
    ("same_department", "本部门"),
    ("other_department", "其他部门"),
    ("other_node", "其他区县"),
    ("availability", "可用率"),
    ("p50_ms", "P50 ms"),
    ("p99_ms", "P99 ms"),
    ("error_rate", "错误率"),
    ("refused", "拒绝"),
    ("rejected", "被拒条目"),
)


def _cell(key: str, value: object) -> str:
    if value is None:
        return "—"
    if key in PERCENT:
        return f"{100 * float(value):.1f}%"  # type: ignore[arg-type]
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


@click.command()
@click.option(
    "--from", "start", help="First day, YYYY-MM-DD (Beijing time)  [default: 29 days ago]"
)
@click.option("--to", "end", help="Last day, inclusive  [default: today]")
@click.option(
    "--by", type=click.Choice(["district", "department"]), default="district", show_default=True
)
@click.option(
    "--sort", default="calls", show_default=True, help="Rank by this figure; -NAME ascending"
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "xlsx"]), default="table",
    show_default=True,
)  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file")
@admin_options
def assessment(
    start: str | None,
    end: str | None,
    by: str,
    sort: str,
    fmt: str,
    output: str | None,
    node: NodeClient,
) -> None:
    """Per district (node) or department: capabilities published, kept current and
    shared upward, calls served (same department / other departments / other
    districts), availability, p50/p99, error rate, refused calls and rejected cascade
    entries. Needs an admin's or auditor's token (or the node's key on its machine)."""
    params = {"from": start, "to": end, "by": by, "sort": sort}
    params = {k: v for k, v in params.items() if v}
    if fmt in ("csv", "xlsx"):
        if fmt == "xlsx" and not output:
            raise click.UsageError("--format xlsx needs -o FILE")
        bearer = admin_token(node.token, node.node_id, node.data_dir, node.url)
        resp = send(node.url, bearer, "GET", "/v1/assessment", params={**params, "format": fmt})
        if output:
            Path(output).write_bytes(resp.content)
            console.print(f"wrote {output}", highlight=False)
        else:
            sys.stdout.write(resp.content.decode("utf-8-sig"))
        return
    report = node.request("GET", "/v1/assessment", params=params)
    if node.as_json:
        print_json(report)
        return
    table = Table(title=f"考核评价 {report['from']} — {report['to']} ({report['node']}, 北京时间)")
    table.add_column("#", justify="right")
    table.add_column("区县" if by == "district" else "部门", no_wrap=True)
    for _key, heading in SHOWN:
        table.add_column(heading, justify="right")
    for i, row in enumerate(report["items"], start=1):
        name = row["title_zh"] or row["title_en"]
        label = f"{name} [dim]{row['id']}[/dim]" if name else row["id"]
        table.add_row(str(i), label, *(_cell(k, row[k]) for k, _ in SHOWN))
    total = report["total"]
    table.add_row("", "[bold]合计[/bold]", *(_cell(k, total[k]) for k, _ in SHOWN))
    if output:
        with open(output, "w", encoding="utf-8") as out:
            from rich.console import Console

            Console(file=out, width=200).print(table)
    else:
        console.print(table)
