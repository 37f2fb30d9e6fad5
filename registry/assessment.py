"""The assessment (考核评价): for a period of Beijing days, per district (node) or per
department (namespace) of this node's subtree, what each built, shared, served and how
well. The figures and their rules (docs/ui.md "Assessment" says the same):

- ``capabilities``: live capabilities it owns (published or deprecated, not deleted),
  as this node's catalog holds them (a district's arrive through the cascade).
- ``current``: of those, the ones updated within the period (their last change: a new
  version, an edit, a lifecycle step; for an entry from below, the time its origin's
  signed feed item gives).
- ``shared``: of those, the ones its node's feed gives the parent: every live entry
  that is not ``restricted`` (restricted entries never leave their node).
- ``calls`` and their outcome (``ok`` 2xx, ``errors`` 5xx, ``refused`` 401/403/429,
  ``invalid`` other 4xx) and callers (``same_department``, ``other_department``,
  ``other_node``): sums of the daily usage aggregates (:mod:`.usage_daily`) of the
  period, this node's own and those its districts' signed feeds carried up; the city
  rolls up over all its districts from those.
- ``availability``: for another node, the share of this node's live probes of it that
  it answered (``probe_daily``, basis ``probes``); for this node itself, for a node
  never probed and for a department, the share of calls that did not fail with a 5xx
  (basis ``calls``); None without probes or calls.
- ``p50_ms`` / ``p99_ms``: percentiles of the merged latency histograms of the calls
  that ran (not those refused or invalid, 4xx), at their buckets' resolution (the
  bucket's upper bound); ``error_rate``: errors / calls.
- ``rejected``: cascade entries this node refused in the period (``cascade_rejection``)
  whose origin is that node (by department: whose key is in that department).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import col, select

from yunnao.plugins.errors import FieldError, ValidationFailed

from . import names, usage_daily
from .clock import BEIJING
from .db import read_session
from .tables import CapabilityRow, Namespace, Node, ProbeDaily, Rejection, UsageDaily

MAX_DAYS = 366
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)
LIVE = ("published", "deprecated")
Grouping = Literal["district", "department"]
COUNTS = (
    "calls", "ok", "errors", "refused", "invalid",
    "same_department", "other_department", "other_node",
)  # fmt: skip


@dataclass
class Figures:
    """One district's or department's figures for the period."""

    id: str
    node: str
    title_zh: str = ""
    title_en: str = ""
    capabilities: int = 0
    current: int = 0
    shared: int = 0
    calls: int = 0
    ok: int = 0
    errors: int = 0
    refused: int = 0
    invalid: int = 0
    same_department: int = 0
    other_department: int = 0
    other_node: int = 0
    availability: float | None = None
    availability_basis: str | None = None  # probes | calls
    p50_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    rejected: int = 0
    hist: list[int] = field(default_factory=list, repr=False)

    def out(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("hist")
        return data


# The columns of the ranking table and the exports, in order, with their Chinese and
# English headings (the exports' header row is "中文 (key)").
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "标识", "id"),
    ("title_zh", "名称", "title (zh)"),
    ("title_en", "英文名称", "title (en)"),
    ("node", "所属节点", "node"),
    ("capabilities", "已发布能力", "capabilities published"),
    ("current", "期内更新", "kept current"),
    ("shared", "向上共享", "shared upward"),
    ("calls", "调用次数", "calls served"),
    ("same_department", "本部门调用", "same department"),
    ("other_department", "其他部门调用", "other departments"),
    ("other_node", "其他区县调用", "other districts"),
    ("ok", "成功", "succeeded"),
    ("errors", "错误 (5xx)", "errors (5xx)"),
    ("refused", "拒绝 (401/403/429)", "refused"),
    ("invalid", "无效输入 (4xx)", "invalid input"),
    ("availability", "可用率", "availability"),
    ("availability_basis", "可用率依据", "availability basis"),
    ("p50_ms", "P50 (ms)", "p50 (ms)"),
    ("p99_ms", "P99 (ms)", "p99 (ms)"),
    ("error_rate", "错误率", "error rate"),
    ("rejected", "被拒级联条目", "rejected cascade entries"),
)
SORTABLE = tuple(
    k for k, *_ in COLUMNS if k not in ("id", "title_zh", "title_en", "node", "availability_basis")
)


@dataclass
class Report:
    node_id: str
    start: str
    end: str
    by: str
    sort: str
    rows: list[Figures]
    total: Figures

    def out(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "from": self.start,
            "to": self.end,
            "by": self.by,
            "sort": self.sort,
            "items": [r.out() for r in self.rows],
            "total": self.total.out(),
        }


def today() -> str:
    return datetime.now(BEIJING).date().isoformat()


def period(start: str | None, end: str | None, *, default_days: int = 30) -> tuple[str, str]:
    """The period's first and last Beijing days (inclusive), checked: default the last
    ``default_days`` days up to today."""
    problems: list[FieldError] = []
    parsed: dict[str, date] = {}
    for key, value in (("from", start), ("to", end)):
        if value:
            try:
                parsed[key] = date.fromisoformat(value)
            except ValueError:
                problems.append(FieldError(key, "a day as YYYY-MM-DD"))
                continue
            if not EARLIEST <= parsed[key] <= LATEST:
                problems.append(FieldError(key, f"a day from {EARLIEST} to {LATEST}"))
    if problems:
        raise ValidationFailed(f"{problems[0].field}: {problems[0].message}", errors=problems)
    last = parsed.get("to") or date.fromisoformat(today())
    first = parsed.get("from") or last - timedelta(days=default_days - 1)
    if first > last:
        raise ValidationFailed(
            "from: must not be after to", errors=[FieldError("from", "must not be after to")]
        )
    if (last - first).days + 1 > MAX_DAYS:
        message = f"at most {MAX_DAYS} days"
        raise ValidationFailed(f"to: {message}", errors=[FieldError("to", message)])
    return first.isoformat(), last.isoformat()


def _bounds(start: str, end: str) -> tuple[datetime, datetime]:
    """The period as instants: from the first day's Beijing midnight to the next one
    after the last day."""
    first = datetime.combine(date.fromisoformat(start), time(), BEIJING)
    after = datetime.combine(date.fromisoformat(end) + timedelta(days=1), time(), BEIJING)
    return first, after


def in_subtree(node: str, top: str) -> bool:
    return node == top or node.startswith(top + ".")


def merge(hists: Iterable[Sequence[int]]) -> list[int]:
    out: list[int] = []
    for hist in hists:
        if len(hist) > len(out):
            out.extend([0] * (len(hist) - len(out)))
        for i, n in enumerate(hist):
            out[i] += n
    return out


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def compute(
    engine: sa.Engine,
    node_id: str,
    start: str,
    end: str,
    by: Grouping = "district",
    *,
    sort: str = "calls",
) -> Report:
    """The figures of every district (``by="district"``: this node and the nodes under
    it) or department (``by="department"``) for ``start``..``end`` (Beijing days)."""
    if sort.lstrip("-") not in SORTABLE:
        message = "one of " + ", ".join(SORTABLE)
        raise ValidationFailed(f"sort: {message}", errors=[FieldError("sort", message)])
    first, after = _bounds(start, end)
    with read_session(engine) as s:
        nodes = {n.id: n for n in s.exec(select(Node)).all() if in_subtree(n.id, node_id)}
        spaces = {
            n.id: n
            for n in s.exec(select(Namespace)).all()
            if in_subtree(names.namespace_node(n.id), node_id)
        }
        caps = s.exec(
            select(CapabilityRow).where(
                col(CapabilityRow.deleted_at).is_(None), col(CapabilityRow.status).in_(LIVE)
            )
        ).all()
        probes = s.exec(
            select(ProbeDaily).where(ProbeDaily.day >= start, ProbeDaily.day <= end)
        ).all()
        rejections = s.exec(
            select(Rejection).where(Rejection.at >= first, Rejection.at < after)
        ).all()
        cap_rows = [
            (c.origin_node, c.namespace, c.classification, c.updated_at)
            for c in caps
            if in_subtree(c.origin_node, node_id)
        ]
        probe_rows = [(p.node, p.probes, p.ok) for p in probes]
        rejected_rows = [(r.origin, r.key) for r in rejections]
    usage: list[UsageDaily] = [
        u for u in usage_daily.rows(engine, start, end) if in_subtree(u.node, node_id)
    ]

    groups: dict[str, Figures] = {}

    def group(key: str) -> Figures:
        found = groups.get(key)
        if found is None:
            node = key if by == "district" else names.namespace_node(key)
            titled = (nodes if by == "district" else spaces).get(key)
            found = groups[key] = Figures(
                id=key,
                node=node,
                title_zh=getattr(titled, "title", "") or "",
                title_en=getattr(titled, "title_en", "") or "",
            )
        return found

    for key in nodes if by == "district" else spaces:
        group(key)
    if by == "district":
        group(node_id)
    for origin, namespace, classification, updated_at in cap_rows:
        g = group(origin if by == "district" else namespace)
        g.capabilities += 1
        if updated_at is not None and first <= updated_at < after:
            g.current += 1
        if classification != "restricted":
            g.shared += 1
    hists: dict[str, list[list[int]]] = {}
    for u in usage:
        key = u.node if by == "district" else u.namespace
        g = group(key)
        for name in COUNTS:
            setattr(g, name, getattr(g, name) + int(getattr(u, name) or 0))
        hists.setdefault(key, []).append(list(u.latency_hist or []))
    for origin, key in rejected_rows:
        if by == "district":
            if origin and origin in groups:
                groups[origin].rejected += 1
        elif key:
            namespace = key.split("/", 1)[0]
            if namespace in groups:
                groups[namespace].rejected += 1
    probed: dict[str, list[int]] = {}
    for node, made, answered in probe_rows:
        tally = probed.setdefault(node, [0, 0])
        tally[0] += made
        tally[1] += answered
    for key, g in groups.items():
        g.hist = merge(hists.get(key, []))
        _finish(g)
        tally = probed.get(key)
        if by == "district" and key != node_id and tally and tally[0]:
            g.availability = _ratio(tally[1], tally[0])
            g.availability_basis = "probes"

    rows = sorted(groups.values(), key=lambda g: g.id)
    descending = not sort.startswith("-")
    name = sort.lstrip("-")
    present = [g for g in rows if getattr(g, name) is not None]
    rows = sorted(present, key=lambda g: getattr(g, name), reverse=descending) + [
        g for g in rows if getattr(g, name) is None
    ]
    total = Figures(id=node_id, node=node_id, title_zh="合计", title_en="Total")
    for g in rows:
        for name_ in ("capabilities", "current", "shared", "rejected", *COUNTS):
            setattr(total, name_, getattr(total, name_) + getattr(g, name_))
    total.hist = merge(g.hist for g in rows)
    _finish(total)
    return Report(node_id, start, end, by, sort, rows, total)


def _finish(g: Figures) -> None:
    """The derived figures: percentiles, error rate, availability by calls."""
    g.p50_ms = _rounded(usage_daily.percentile(g.hist, 0.5)) if any(g.hist) else None
    g.p99_ms = _rounded(usage_daily.percentile(g.hist, 0.99)) if any(g.hist) else None
    g.error_rate = _ratio(g.errors, g.calls)
    if g.calls:
        g.availability = _ratio(g.calls - g.errors, g.calls)
        g.availability_basis = "calls"


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


# ---------------------------------------------------------------- exports


def header() -> list[str]:
    return [f"{zh} ({key})" for key, zh, _en in COLUMNS]


def table(report: Report) -> list[list[Any]]:
    """The export's rows (without the header): the groups, then the total."""
    return [[r.out()[key] for key, *_ in COLUMNS] for r in (*report.rows, report.total)]


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header())
    for row in table(report):
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def to_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "考核评价"
    sheet.append(header())
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in table(report):
        sheet.append(row)
    sheet.freeze_panes = "A2"
    for i, (key, *_rest) in enumerate(COLUMNS, start=1):
        sheet.column_dimensions[sheet.cell(1, i).column_letter].width = (
            28 if key in ("id", "title_zh", "title_en", "node") else 14
        )
    about = book.create_sheet("说明")
    about.append(["节点 (node)", report.node_id])
    about.append(["起 (from)", report.start])
    about.append(["止 (to)", report.end])
    about.append(["分组 (by)", report.by])
    about.append(["时区", "北京时间 (Asia/Shanghai)"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def column_names() -> list[str]:
    return [f.name for f in fields(Figures) if f.name != "hist"]
