"""The assessment page (``/assessment``, 考核评价) for the node's admins and auditors: a
period, a grouping (districts or departments) and a figure to rank by; the ranking table,
charts of the calls served and where they came from, availability and error rates, and
the CSV and XLSX exports of the same rows (``/assessment.csv``, ``/assessment.xlsx``:
the page's session, as ``GET /v1/assessment?format=`` is for tokens)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from yunnao.registry import assessment
from yunnao.registry.access import Action, require
from yunnao.registry.assessment_api import XLSX, AssessmentQuery, report_for
from yunnao.registry.http import parse_query
from yunnao.registry.identity.middleware import identity_of

from . import charts, i18n
from .names import Namer
from .pages import _page, _render, _run

CHARTED = 12  # groups shown in the charts (the table has them all)
# The page's columns (short headings; the exports have every figure, with the long ones).
HEADINGS = (
    ("capabilities", "已发布", "published"),
    ("current", "期内更新", "current"),
    ("shared", "向上共享", "shared up"),
    ("calls", "调用", "calls"),
    ("same_department", "本部门", "same dept."),
    ("other_department", "其他部门", "other depts."),
    ("other_node", "其他区县", "other districts"),
    ("availability", "可用率", "availability"),
    ("p50_ms", "P50 ms", "p50 ms"),
    ("p99_ms", "P99 ms", "p99 ms"),
    ("error_rate", "错误率", "error rate"),
    ("refused", "拒绝", "refused"),
    ("rejected", "被拒条目", "rejected entries"),
)


def _query(request: Request) -> AssessmentQuery:
    params = {k: v for k, v in request.query_params.items() if v and k != "format"}
    return parse_query(AssessmentQuery, params)


def _allowed(request: Request) -> Response | None:
    identity = identity_of(request)
    if not identity.authenticated:
        return RedirectResponse("/signin?next=/assessment", status_code=303)
    require(identity, Action.AUDIT, request.app.state.settings.node_id)
    return None


@_page
async def page(request: Request) -> Response:
    if (refused := _allowed(request)) is not None:
        return refused
    query = _query(request)
    report: assessment.Report = await _run(report_for, request, query)
    lang = i18n.language(request)
    _ = i18n.translator(lang)
    named = Namer.of(request, lang)
    shown = report.rows[:CHARTED]
    labels = [named.title(r.id) for r in shown]
    split_chart = (
        charts.bars(
            _("Calls served and where they came from"),
            labels,
            [
                charts.Series(_("same department"), [float(r.same_department) for r in shown]),
                charts.Series(_("other departments"), [float(r.other_department) for r in shown]),
                charts.Series(_("other districts"), [float(r.other_node) for r in shown]),
            ],
            y_label=_("calls"),
            width=520,
        )
        if any(r.calls for r in shown)
        else None
    )
    availability_chart = charts.hbars(
        _("Availability"),
        labels,
        [None if r.availability is None else 100 * r.availability for r in shown],
        "%",
        name=_("availability (probes, or calls without 5xx)"),
        colour=2,
        value_format="{:.1f}",
    )
    columns = [(key, en if lang == "en" else zh) for key, zh, en in HEADINGS]
    params = {
        "from": report.start,
        "to": report.end,
        "by": report.by,
        "sort": report.sort,
    }
    return _render(
        request,
        "assessment.html",
        report=report,
        columns=columns,
        sortable=assessment.SORTABLE,
        split_chart=split_chart,
        availability_chart=availability_chart,
        params=params,
        export_query="&".join(f"{k}={v}" for k, v in params.items()),
    )


@_page
async def export(request: Request) -> Response:
    if (refused := _allowed(request)) is not None:
        return refused
    query = _query(request)
    report: assessment.Report = await _run(report_for, request, query)
    kind = request.url.path.rsplit(".", 1)[1]
    name = f"assessment-{report.node_id}-{report.by}-{report.start}-{report.end}.{kind}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if kind == "xlsx":
        body = await _run(assessment.to_xlsx, report)
        return Response(body, media_type=XLSX, headers=disposition)
    return Response(
        assessment.to_csv(report).encode("utf-8-sig"),
        media_type="text/csv; charset=utf-8",
        headers=disposition,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/assessment", page, methods=["GET"]),
        Route("/assessment.csv", export, methods=["GET"]),
        Route("/assessment.xlsx", export, methods=["GET"]),
    ]
