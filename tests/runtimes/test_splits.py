"""Traffic splits over HTTP: a canary's share of the calls, a shadow that never answers,
pinned calls, the automatic rollback (audited), and who may set a split. Four versions
of one capability (tests/data/splitplugin) are published through a real (embedded)
MLflow and run by the in-process runtime, on each store."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import NODE_ID, TEMPLATE_DB, Node, assert_problem
from yunnao.app import create_app
from yunnao.registry import db, migrate
from yunnao.runtimes.gateway.splits import ROLLBACK_ACTION, Split
from yunnao.settings import Settings

PLUGIN_DIR = Path(__file__).parents[1] / "data" / "splitplugin"
NS = "sd.qd.split"
SPLIT = f"/v1/capabilities/{NS}/which/split"
INVOKE = f"/v1/invoke/{NS}"


def _capabilities() -> list[Any]:
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    import yunnao_split

    return yunnao_split.yunnao_capabilities()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])],
)
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """A node with versions 1.0.0 to 1.3.0 of ``which`` published (1.3.0, the newest and
    so the current version, fails)."""
    tmp = tmp_path_factory.mktemp("splits")
    dropped = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'registry.db'}"
        engine = db.create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
    else:
        server = request.getfixturevalue("postgres")
        dropped = f"t_split_{tmp.name[-6:]}".replace("-", "_")
        url = server.create_database(dropped, template=TEMPLATE_DB)
    settings = Settings(node_id=NODE_ID, data_dir=tmp / "node", database_url=url, plugins=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        for cap in _capabilities():
            app.state.catalog.publisher.publish(cap, namespace=NS)
        app.state.invoker.gateway.splits.draw = random.Random(21).random  # a seeded draw
        yield Node(client=client, settings=settings)
    if dropped is not None:
        request.getfixturevalue("postgres").drop_database(dropped)


@pytest.fixture(autouse=True)
def _no_split(node: Node) -> Iterator[None]:
    yield
    node.client.delete(SPLIT, headers=node.auth("author", NS))


def _call(node: Node, ref: str = "which") -> Any:
    resp = node.client.post(f"{INVOKE}/{ref}", json={"input": {}})
    return resp


def _usage(node: Node) -> list[Any]:
    node.client.app.state.invoker.gateway.usage.flush()  # type: ignore[attr-defined]
    engine = db.create_engine(node.settings.db_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT version, mode, status FROM usage_record "
                        "WHERE namespace = :ns ORDER BY id"
                    ),
                    {"ns": NS},
                )
            )
    finally:
        engine.dispose()


def _put(node: Node, body: dict[str, Any], *, role: str = "author", scope: str = NS) -> Any:
    return node.client.put(SPLIT, json=body, headers=node.auth(role, scope))


def test_a_ten_percent_canary_gets_ten_percent_of_a_thousand_calls(node: Node) -> None:
    resp = _put(node, {"stable": "1.0.0", "canary": {"version": "1.1.0", "share": 0.1}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["stable"] == "1.0.0" and resp.json()["current"] == "1.3.0"
    before = len(_usage(node))
    answers = Counter()
    for _ in range(1000):
        resp = _call(node)
        assert resp.status_code == 200, resp.text
        answers[resp.json()["output"]] += 1
        assert resp.json()["capability"] == f"{NS}/which@{resp.json()['output']}"
    assert set(answers) == {"1.0.0", "1.1.0"}
    assert 70 <= answers["1.1.0"] <= 130, answers
    # The usage records say the same, per version.
    recorded = Counter(r.version for r in _usage(node)[before:])
    assert recorded == answers
    # And so does the split's own view of the window.
    shown = node.client.get(SPLIT, headers=node.auth("author", NS))
    assert shown.status_code == 200, shown.text
    by = {v["version"]: v for v in shown.json()["versions"]}
    assert by["1.1.0"]["role"] == "canary" and by["1.0.0"]["role"] == "stable"
    assert by["1.1.0"]["calls"] == answers["1.1.0"] and by["1.1.0"]["errors"] == 0
    assert by["1.0.0"]["calls"] >= answers["1.0.0"]
    assert by["1.1.0"]["p50_ms"] is not None and by["1.1.0"]["p99_ms"] >= by["1.1.0"]["p50_ms"]


def test_pinned_calls_are_never_split(node: Node) -> None:
    # A share of 1 is a full switch, for calls naming the capability alone.
    assert _put(node, {"stable": "1.0.0", "canary": {"version": "1.1.0", "share": 1}}).is_success
    for _ in range(20):
        assert _call(node).json()["output"] == "1.1.0"
        assert _call(node, "which@1.0.0").json()["output"] == "1.0.0"
        assert _call(node, "which@1.2.0").json()["output"] == "1.2.0"


def test_a_shadow_gets_every_call_and_never_answers(node: Node) -> None:
    assert _put(node, {"stable": "1.0.0", "shadow": {"version": "1.2.0"}}).is_success
    before = len(_usage(node))
    for _ in range(20):
        resp = _call(node)
        assert resp.status_code == 200 and resp.json()["output"] == "1.0.0", resp.text
    shadowed = []
    for _ in range(200):  # the shadow calls run in the background: wait for all 20
        shadowed = [r for r in _usage(node)[before:] if r.mode == "shadow"]
        if len(shadowed) == 20:
            break
        node.client.get("/healthz")
    assert len(shadowed) == 20 and {(r.version, r.status) for r in shadowed} == {("1.2.0", 200)}
    # A failing shadow fails nobody's call (and with 20 calls stays under min_calls).
    assert _put(node, {"stable": "1.0.0", "shadow": {"version": "1.3.0"}}).is_success
    for _ in range(20):
        resp = _call(node)
        assert resp.status_code == 200 and resp.json()["output"] == "1.0.0", resp.text


def test_a_failing_canary_is_rolled_back_by_itself_and_audited(node: Node) -> None:
    rule = {"max_error_rate": 0.2, "min_calls": 10, "window": 300}
    body = {"stable": "1.0.0", "canary": {"version": "1.3.0", "share": 0.5}, "rollback": rule}
    assert _put(node, body).is_success
    statuses = Counter()
    shown: dict[str, Any] = {}
    for _ in range(300):
        statuses[_call(node).status_code] += 1
        shown = node.client.get(SPLIT, headers=node.auth("author", NS)).json()
        if shown.get("note"):
            break
    assert statuses[500] >= 3, statuses  # the canary did fail callers before the rollback
    # 1.3.0 is the current version: the split stays as a pin on 1.0.0, saying why.
    assert shown["canary"] is None and shown["shadow"] is None, shown
    assert shown["stable"] == "1.0.0" and "1.3.0" in shown["note"], shown
    for _ in range(30):
        assert _call(node).json()["output"] == "1.0.0"
    audit = node.client.app.state.audit  # type: ignore[attr-defined]
    audit.flush()
    events = audit.events(action=ROLLBACK_ACTION)
    assert len(events) == 1
    assert events[0].path.startswith(f"/v1/capabilities/{NS}/which/split?canary=1.3.0")
    assert "error_rate=" in events[0].path and events[0].role == "system"


def test_a_rollback_is_written_once_and_removes_a_split_whose_stable_is_current(
    node: Node,
) -> None:
    splits = node.client.app.state.invoker.gateway.splits  # type: ignore[attr-defined]
    # Stable is the current version (1.3.0): rolling back removes the split.
    stored = splits.put(Split(NS, "which", canary="1.1.0", share=0.5))
    assert stored.stable == "1.3.0"
    assert splits.roll_back(stored, "rolled back") is True
    assert splits.roll_back(stored, "rolled back") is False  # another process came second
    assert_problem(node.client.get(SPLIT, headers=node.auth("author", NS)), 404)


def test_only_the_namespace_writers_set_a_split_at_the_owning_node(node: Node) -> None:
    body = {"stable": "1.0.0", "canary": {"version": "1.1.0", "share": 0.1}}
    assert_problem(_put(node, body, scope="sd.qd.other"), 403)  # another namespace's author
    assert_problem(_put(node, body, role="consumer"), 403)
    assert_problem(node.client.put(SPLIT, json=body), 401)
    delete = node.client.delete(SPLIT, headers=node.auth("author", "sd.qd.other"))
    assert_problem(delete, 403)
    # A namespace of another node (a district's) is set there, never here.
    other = node.client.put(
        "/v1/capabilities/sd.qd.shinan.traffic/which/split", json=body,
        headers=node.auth("admin", "sd.qd"),
    )  # fmt: skip
    assert_problem(other, 403)
    assert_problem(
        node.client.get(f"/v1/capabilities/{NS}/nothing/split", headers=node.auth()), 404
    )
    assert_problem(node.client.get(SPLIT, headers=node.auth("author", "sd.qd.other")), 403)
    assert_problem(node.client.get(SPLIT), 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"canary": {"version": "9.9.9", "share": 0.1}, "stable": "1.0.0"}, "canary.version"),
        ({"canary": {"version": "1.3.0", "share": 0.1}}, "canary.version"),  # the stable one
        ({"canary": {"version": "1.1.0", "share": 1.5}}, "canary.share"),
        ({"shadow": {"version": "1.0.0"}, "stable": "1.0.0"}, "shadow.version"),
        ({"stable": "1.0.0"}, "canary"),
        ({"canary": {"version": "1.1.0", "share": 0.1}, "stable": "8.0.0"}, "stable"),
        ({"canary": {"version": "1.1.0", "share": 0.1}, "rollback": {"min_calls": 0}},
         "rollback.min_calls"),
    ],
)  # fmt: skip
def test_a_split_that_cannot_serve_is_422_naming_the_field(
    node: Node, body: dict[str, Any], field: str
) -> None:
    assert_problem(_put(node, body), 422, field=field)


def test_the_command_line_sets_shows_and_clears_a_split(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from yunnao.cli import common, main

    def request_json(url: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        resp = node.client.request(method, path, headers=headers, **kw)
        if resp.status_code >= 400:
            import click

            raise click.ClickException(f"{resp.status_code} {common.problem_text(resp.json())}")
        return resp.json() if resp.content else None

    monkeypatch.setattr(common, "request_json", request_json)
    token = ["--token", node.token("author", NS), "--url", "http://node"]
    runner = CliRunner()
    ref = f"{NS}/which"
    done = runner.invoke(
        main, ["split", "set", ref, "--stable", "1.0.0", "--canary", "1.1.0", "--share", "0.25",
               "--shadow", "1.2.0", "--min-calls", "20", *token],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "stable 1.0.0" in done.output and "canary 1.1.0 (25.0%)" in done.output
    shown = runner.invoke(main, ["split", "show", ref, "--json", *token])
    body = json.loads(shown.output)
    assert body["canary"] == {"version": "1.1.0", "share": 0.25}
    assert body["shadow"] == {"version": "1.2.0"} and body["rollback"]["min_calls"] == 20
    refused = runner.invoke(main, ["split", "set", ref, "--canary", "7.0.0", *token])
    assert refused.exit_code != 0 and "canary.version" in refused.output
    assert runner.invoke(main, ["split", "set", ref, *token]).exit_code == 2  # nothing to split
    assert runner.invoke(main, ["split", "clear", ref, *token]).exit_code == 0
    assert "no traffic split" in runner.invoke(main, ["split", "show", ref, *token]).output
