"""The assessment (考核评价) over HTTP: real calls through a node's API, the daily
aggregates refreshed, then GET /v1/assessment compared with sums computed here in plain
SQL from the usage records; a district's carried-up rows and probe tallies rolled up;
the CSV and XLSX exports hold the same rows as the JSON."""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook
from starlette.testclient import TestClient

from tests.conftest import assert_problem, bearer
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.registry import assessment, usage_daily
from yunnao.registry.tables import Node, ProbeDaily, UsageDaily, utcnow
from yunnao.registry.usage_daily import BUCKETS_MS, beijing_day
from yunnao.settings import Settings

NODE = "sd.qd"
NS = NAMESPACE  # sd.qd.rt
DISTRICT = "sd.qd.shinan"


@dataclasses.dataclass
class Assessed:
    client: TestClient
    settings: Settings
    engine: sa.Engine

    def headers(self, role: str, *scopes: str, department: str | None = None) -> dict[str, str]:
        return bearer(
            self.settings.key_path, NODE, role, *(scopes or (NODE,)), department=department
        )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assessed]:
    tmp: Path = tmp_path_factory.mktemp("assessment")
    settings = Settings(node_id=NODE, data_dir=tmp, plugins=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        greet = rt_capabilities()["greet"]
        publisher = app.state.catalog.publisher
        version = publisher.publish(greet, namespace=NS).version
        admin = bearer(settings.key_path, NODE, "admin", NODE)
        copy = dataclasses.replace(greet, name="greet-internal")
        uri = publisher.models.log(copy, namespace=NS, node=NODE).model_uri
        body = {
            "version": "1.0.0",
            "title": "internal greeter",
            "classification": "internal",
            "access": {"invoke": {"departments": [NS]}},
            "input_schema": version.input_schema,
            "output_schema": version.output_schema,
            "runtime": version.runtime.model_dump(),
            "model_uri": uri,
        }
        resp = client.post(
            f"/v1/capabilities/{NS}/greet-internal/versions", json=body, headers=admin
        )
        assert resp.status_code == 201, resp.text
        yield Assessed(client, settings, app.state.usage_engine)


def _calls(node: Assessed) -> None:
    """Calls of every outcome and from every kind of caller."""
    same = node.headers("consumer", NS, department=NS)
    other = node.headers("consumer", f"{NODE}.water", department=f"{NODE}.water")
    plan: list[tuple[str, dict[str, Any], dict[str, str], int]] = [
        ("greet", {"name": "a"}, same, 200),
        ("greet", {"name": "b"}, same, 200),
        ("greet", {"name": "c"}, other, 200),
        ("greet", {"name": "d"}, {}, 200),  # anonymous: another department's caller
        ("greet", {"nom": 1}, same, 422),  # invalid input
        ("greet-internal", {"name": "e"}, other, 403),  # refused
        ("greet-internal", {"name": "f"}, same, 200),
    ]
    for name, payload, headers, status in plan:
        resp = node.client.post(f"/v1/invoke/{NS}/{name}", json={"input": payload}, headers=headers)
        assert resp.status_code == status, (name, resp.text)
    node.client.app.state.invoker.gateway.usage.flush()  # type: ignore[attr-defined]


def _expected(engine: sa.Engine, day: str) -> dict[str, Any]:
    """The figures of department NS on ``day``, computed here from usage_record alone."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT at, status, latency_ms, caller_node, caller_department, forwarded_by "
                "FROM usage_record WHERE namespace = :ns"
            ),
            {"ns": NS},
        ).all()
    rows = [r for r in rows if beijing_day(_aware(r.at)) == day]
    hist = [0] * len(BUCKETS_MS)
    for r in rows:  # latencies of calls that ran: not those refused or invalid (4xx)
        if 400 <= r.status < 500:
            continue
        hist[min(bisect.bisect_left(BUCKETS_MS, r.latency_ms), len(BUCKETS_MS) - 1)] += 1
    calls = len(rows)
    errors = sum(1 for r in rows if r.status >= 500)
    other_node = sum(1 for r in rows if r.forwarded_by or (r.caller_node and r.caller_node != NODE))
    same = sum(
        1
        for r in rows
        if not (r.forwarded_by or (r.caller_node and r.caller_node != NODE))
        and r.caller_department == NS
    )
    return {
        "calls": calls,
        "ok": sum(1 for r in rows if 200 <= r.status < 300),
        "errors": errors,
        "refused": sum(1 for r in rows if r.status in (401, 403, 429)),
        "invalid": sum(
            1 for r in rows if 400 <= r.status < 500 and r.status not in (401, 403, 429)
        ),
        "same_department": same,
        "other_node": other_node,
        "other_department": calls - same - other_node,
        "error_rate": round(errors / calls, 6),
        "availability": round((calls - errors) / calls, 6),
        "p50_ms": _pct(hist, 0.5),
        "p99_ms": _pct(hist, 0.99),
    }


def _aware(at: Any) -> Any:
    from datetime import UTC, datetime

    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _pct(hist: list[int], q: float) -> float:
    rank, seen = -(-int(q * sum(hist) * 1000) // 1000), 0
    rank = max(1, rank)
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            bound = BUCKETS_MS[i] if i < len(BUCKETS_MS) - 1 else BUCKETS_MS[-2]
            return float(bound)
    raise AssertionError("empty histogram")


def _carry_up_district(engine: sa.Engine, day: str) -> dict[str, int]:
    """What the district's signed usage items would have left here, and this node's
    probes of the district."""
    hist = [0] * len(BUCKETS_MS)
    hist[BUCKETS_MS.index(50)] = 9
    hist[BUCKETS_MS.index(1000)] = 1
    figures = {
        "calls": 10, "ok": 7, "errors": 1, "refused": 1, "invalid": 1,
        "same_department": 4, "other_department": 3, "other_node": 3,
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Node.__table__),  # type: ignore[attr-defined]
            [{"id": DISTRICT, "parent_id": NODE, "title": "市南区", "title_en": "Shinan",
              "created_at": utcnow()}],
        )  # fmt: skip
        conn.execute(
            sa.insert(UsageDaily.__table__),  # type: ignore[attr-defined]
            [{"node": DISTRICT, "day": day, "namespace": f"{DISTRICT}.traffic", "name": "flow",
              "latency_hist": hist, "updated_at": utcnow(), **figures}],
        )  # fmt: skip
        conn.execute(
            sa.insert(ProbeDaily.__table__),  # type: ignore[attr-defined]
            [{"node": DISTRICT, "day": day, "probes": 20, "ok": 19, "updated_at": utcnow()}],
        )
    return figures


def test_assessment_equals_sums_of_the_usage_records(node: Assessed) -> None:
    _calls(node)
    day = beijing_day(utcnow())
    usage_daily.refresh(node.engine, NODE)  # (the node also does, periodically)
    expected = _expected(node.engine, day)
    assert expected["ok"] == 5 and expected["calls"] >= 6, expected  # (not every 4xx is kept)
    auditor = node.headers("auditor", NODE)

    resp = node.client.get(
        "/v1/assessment", params={"from": day, "to": day, "by": "department"}, headers=auditor
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["from"] == day and body["to"] == day and body["by"] == "department"
    (row,) = [r for r in body["items"] if r["id"] == NS]
    for key, value in expected.items():
        assert row[key] == value, (key, row)
    assert row["availability_basis"] == "calls"
    assert row["capabilities"] == 2 and row["shared"] == 2 and row["current"] == 2
    assert row["node"] == NODE

    # A district's carried-up rows and this node's probes of it; the city rolls up.
    district = _carry_up_district(node.engine, day)
    resp = node.client.get(
        "/v1/assessment", params={"from": day, "to": day, "by": "district"}, headers=auditor
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    rows = {r["id"]: r for r in body["items"]}
    assert set(rows) == {NODE, DISTRICT}
    assert rows[DISTRICT]["title_zh"] == "市南区"
    for key, value in district.items():
        assert rows[DISTRICT][key] == value
    assert rows[DISTRICT]["availability"] == 0.95
    assert rows[DISTRICT]["availability_basis"] == "probes"
    assert rows[DISTRICT]["p50_ms"] == 50.0 and rows[DISTRICT]["p99_ms"] == 1000.0
    for key in ("calls", "ok", "errors", "refused", "same_department", "other_department"):
        assert rows[NODE][key] == expected[key]
        assert body["total"][key] == expected[key] + district[key]
    assert [r["id"] for r in body["items"]] == [DISTRICT, NODE]  # ranked by calls

    # Ranked by another figure, ascending.
    resp = node.client.get(
        "/v1/assessment", params={"from": day, "to": day, "sort": "-calls"}, headers=auditor
    )
    assert [r["id"] for r in resp.json()["items"]] == [NODE, DISTRICT]


def test_exports_hold_the_same_rows_as_the_json(node: Assessed) -> None:
    auditor = node.headers("auditor", NODE)
    day = beijing_day(utcnow())
    params = {"from": day, "to": day, "by": "district"}
    body = node.client.get("/v1/assessment", params=params, headers=auditor).json()
    want = [[r[key] for key, *_ in assessment.COLUMNS] for r in (*body["items"], body["total"])]

    resp = node.client.get("/v1/assessment", params={**params, "format": "csv"}, headers=auditor)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    got = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert got[0] == assessment.header()
    assert got[1:] == [["" if v is None else str(v) for v in row] for row in want]

    resp = node.client.get("/v1/assessment", params={**params, "format": "xlsx"}, headers=auditor)
    assert resp.status_code == 200
    sheet = load_workbook(io.BytesIO(resp.content)).active
    assert sheet is not None and sheet.title == "考核评价"
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert list(cells[0]) == assessment.header()
    assert cells[1:] == [[None if v == "" else v for v in row] for row in want]  # "" reads None


def test_only_admins_and_auditors_and_periods_are_checked(node: Assessed) -> None:
    assert_problem(node.client.get("/v1/assessment"), 401)
    consumer = node.headers("consumer", NODE)
    assert_problem(node.client.get("/v1/assessment", headers=consumer), 403)
    admin = node.headers("admin", NODE)
    assert node.client.get("/v1/assessment", headers=admin).status_code == 200
    bad = node.client.get("/v1/assessment", params={"from": "2026-13-01"}, headers=admin)
    assert_problem(bad, 422, field="from")
    far = node.client.get("/v1/assessment", params={"to": "0001-01-01"}, headers=admin)
    assert_problem(far, 422, field="to")
    backwards = {"from": "2026-11-02", "to": "2026-11-01"}
    assert_problem(node.client.get("/v1/assessment", params=backwards, headers=admin), 422)
    assert_problem(
        node.client.get("/v1/assessment", params={"sort": "nonsense"}, headers=admin),
        422,
        field="sort",
    )
    assert_problem(node.client.get("/v1/assessment", params={"by": "x"}, headers=admin), 400)
