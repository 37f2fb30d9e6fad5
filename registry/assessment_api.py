"""``GET /v1/assessment``: the assessment (考核评价) of this node's districts or
departments for a period, as JSON, CSV or XLSX (:mod:`.assessment`), for the node's
admins and auditors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import assessment
from .access import Action, require
from .api import Endpoint
from .http import parse_query
from .identity.middleware import identity_of

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class AssessmentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Annotated[
        str | None,
        Field(alias="from", description="first day, YYYY-MM-DD (Beijing time); default 29 "
              "days before `to`"),
    ] = None  # fmt: skip
    to: Annotated[str | None, Field(description="last day, inclusive; default today")] = None
    by: Literal["district", "department"] = "district"
    sort: Annotated[
        str, Field(max_length=40, description="a figure to rank by, descending; '-' ascending")
    ] = "calls"
    format: Literal["json", "csv", "xlsx"] = "json"


class AssessmentRow(BaseModel):
    id: str
    node: str
    title_zh: str
    title_en: str
    capabilities: int
    current: int
    shared: int
    calls: int
    ok: int
    errors: int
    refused: int
    invalid: int
    same_department: int
    other_department: int
    other_node: int
    availability: float | None
    availability_basis: str | None
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    rejected: int


class AssessmentOut(BaseModel):
    node: str
    from_: str = Field(alias="from")
    to: str
    by: str
    sort: str
    items: list[AssessmentRow]
    total: AssessmentRow


def report_for(request: Request, query: AssessmentQuery) -> assessment.Report:
    settings = request.app.state.settings
    start, end = assessment.period(query.from_, query.to)
    return assessment.compute(
        request.app.state.usage_engine, settings.node_id, start, end, query.by, sort=query.sort
    )


def _filename(report: assessment.Report, ext: str) -> str:
    return f"assessment-{report.node_id}-{report.by}-{report.start}-{report.end}.{ext}"


async def get_assessment(request: Request) -> Response:
    settings = request.app.state.settings
    require(identity_of(request), Action.AUDIT, settings.node_id)
    query = parse_query(AssessmentQuery, dict(request.query_params))
    report = await anyio.to_thread.run_sync(lambda: report_for(request, query))
    if query.format == "csv":
        return Response(
            assessment.to_csv(report).encode("utf-8-sig"),  # a BOM: spreadsheets read UTF-8
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_filename(report, "csv")}"'},
        )
    if query.format == "xlsx":
        body = await anyio.to_thread.run_sync(assessment.to_xlsx, report)
        return Response(
            body,
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{_filename(report, "xlsx")}"'},
        )
    data: dict[str, Any] = report.out()
    return JSONResponse(AssessmentOut.model_validate(data).model_dump(mode="json", by_alias=True))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/assessment",
        get_assessment,
        "getAssessment",
        "The assessment (考核评价) for a period: per district or department, capabilities "
        "published, kept current and shared upward, calls served and where they came from, "
        "availability, p50/p99, error rate, refused calls, rejected cascade entries "
        "(JSON; format=csv or xlsx for export)",
        tag="node",
        query=AssessmentQuery,
        response=AssessmentOut,
        errors=(400, 401, 403, 422),
        auth="required",
    ),
)
