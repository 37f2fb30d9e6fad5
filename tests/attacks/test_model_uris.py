"""A version runs only the model its node registered for it.

An author sends metadata; the node decides what runs. Each attack is an author (or an
admin) of one department at ``sd.qd.shinan`` trying to make the node load something
other than the model the node itself logged for that ``namespace.name`` in its own
MLflow: a file or URL it controls (MLflow's loader imports the model's code: code
execution as the node, whose key lies next to it), a run, another department's
registered model, or another department's plugin through the in-process fallback.
Rows written before the rule are cleared by migration 0007.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
from yunnao_example_traffic import FlowForecast

from tests.attacks.conftest import SHINAN, Federation
from tests.conftest import assert_problem
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.registry import db, migrate

pytestmark = pytest.mark.slow

TRAFFIC_MODEL = f"models:/{SHINAN}.traffic.flow-forecast/1"  # the traffic department's own
EXAMPLE = FlowForecast.examples[0]["input"]


# ---------------------------------------------------------------- what an attacker holds


def evil_model(root: Path) -> tuple[Path, Path]:
    """A directory MLflow loads as a pyfunc model, whose loader module (shipped in the
    model's ``code``) writes a marker file, with the node's key, when it is imported.
    Returns the model directory and where the marker would appear."""
    marker = root / "pwned.txt"
    module = f"yunnao_attack_{uuid.uuid4().hex[:12]}"
    model = root / "evil-model"
    (model / "code").mkdir(parents=True)
    (model / "MLmodel").write_text(
        f"flavors:\n  python_function:\n    loader_module: {module}\n    code: code\n"
    )
    (model / "code" / f"{module}.py").write_text(
        "import glob, pathlib\n"
        "keys = [open(k).read() for k in glob.glob('var/node_key.pem')]\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran as the node\\n' + ''.join(keys))\n"
        "def _load_pyfunc(path, model_config=None):\n"
        "    raise RuntimeError('the loader ran')\n"
    )
    return model, marker


class _Recorder(BaseHTTPRequestHandler):
    """A server of the author's: records every request the node makes to it."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def author_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def author(fed: Federation, namespace: str) -> dict[str, str]:
    """An author token of one department of sd.qd.shinan."""
    return fed.shinan.auth("author", "mallory", scopes=[namespace], department=namespace)


def publish(fed: Federation, namespace: str, name: str, **fields: Any) -> httpx.Response:
    body = {
        "version": "1.0.0",
        "title": "looks harmless",
        "classification": "public",
        "runtime": {"type": "inprocess"},
        **fields,
    }
    return httpx.post(
        f"{fed.shinan.url}/v1/capabilities/{namespace}/{name}/versions",
        json=body,
        headers=author(fed, namespace),
        timeout=60,
    )


def invoke(url: str, ref: str, inputs: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/invoke/{ref}", json={"input": inputs}, timeout=60, **kw)


def assert_nothing_stored(fed: Federation, namespace: str, name: str) -> None:
    admin = fed.shinan.auth("admin")
    assert_problem(fed.shinan.get(f"{namespace}/{name}", headers=admin), 404)
    assert_problem(fed.shinan.get(f"{namespace}/{name}/versions", headers=admin), 404)
    search = httpx.get(
        f"{fed.shinan.url}/v1/capabilities", params={"namespace": namespace}, headers=admin
    )
    assert search.status_code == 200 and search.json()["total"] == 0, search.text


# ---------------------------------------------------------------- publishing a version


def test_a_model_file_of_the_authors_is_refused_and_never_loaded(
    federation: Federation, tmp_path: Path
) -> None:
    """The exploit: a public version whose model_uri is a directory the author wrote.
    Before, the first call made the node import the author's code (the marker appeared,
    holding the node's key)."""
    ns = f"{SHINAN}.mu-file"
    model, marker = evil_model(tmp_path)
    resp = publish(federation, ns, "innocent", model_uri=model.as_uri())
    assert_problem(resp, 422, field="model_uri")
    assert_nothing_stored(federation, ns, "innocent")
    assert_problem(invoke(federation.shinan.url, f"{ns}/innocent", {}), 404)
    assert not marker.exists()


@pytest.mark.parametrize(
    "location",
    [
        "{server}/evil-model",  # the author's own server
        "https://models.example.com/evil-model",
        "runs:/0123456789abcdef0123456789abcdef/model",
        "s3://mlflow/evil-model",
        "/tmp/evil-model",
        "mlflow-artifacts:/0/abc/artifacts/model",
        TRAFFIC_MODEL,  # another department's registered model
        f"models:/{SHINAN}.traffic.flow-forecast@production",  # its alias
        "models:/{ns}-other.innocent/1",  # another namespace's
        "models:/{ns}.other/1",  # another capability of its own namespace
        "models:/{ns}.innocent/1",  # its own name, but never logged by the node
        "models:/{ns}.innocent/1/../../x",
    ],
)
def test_a_model_location_the_node_did_not_register_is_refused(
    federation: Federation, author_server: str, location: str, request: pytest.FixtureRequest
) -> None:
    ns = f"{SHINAN}.mu-any{request.node.callspec.indices['location']}"
    _Recorder.hits.clear()
    resp = publish(
        federation, ns, "innocent", model_uri=location.format(server=author_server, ns=ns)
    )
    assert_problem(resp, 422, field="model_uri")
    assert_nothing_stored(federation, ns, "innocent")
    assert_problem(invoke(federation.shinan.url, f"{ns}/innocent", {}), 404)
    assert _Recorder.hits == []


def test_another_departments_model_is_not_re_exposed(federation: Federation) -> None:
    """Before: an author of another department published the traffic department's
    registered model as its own public capability, and anyone could call it there."""
    ns = f"{SHINAN}.mu-steal"
    resp = publish(federation, ns, "flow-forecast", model_uri=TRAFFIC_MODEL)
    assert_problem(resp, 422, field="model_uri")
    assert_nothing_stored(federation, ns, "flow-forecast")
    assert_problem(invoke(federation.shinan.url, f"{ns}/flow-forecast", EXAMPLE), 404)
    # The traffic department's own entry still runs its own model.
    admin = federation.shinan.auth("admin")
    own = invoke(federation.shinan.url, f"{SHINAN}.traffic/flow-forecast", EXAMPLE, headers=admin)
    assert own.status_code == 200, own.text


def test_an_artifact_location_is_the_nodes_to_set(federation: Federation, tmp_path: Path) -> None:
    ns = f"{SHINAN}.mu-artifact"
    model, _ = evil_model(tmp_path)
    for fields in (
        {"artifact_uri": model.as_uri()},
        {"artifact_uri": "s3://mlflow/evil-model", "model_uri": TRAFFIC_MODEL},
    ):
        resp = publish(federation, ns, "innocent", **fields)
        field = "artifact_uri" if "model_uri" not in fields else "model_uri"
        assert_problem(resp, 422, field=field)
        assert_nothing_stored(federation, ns, "innocent")


# ---------------------------------------------------------------- the in-process fallback


def test_a_version_without_a_model_runs_no_other_departments_plugin(
    federation: Federation,
) -> None:
    """Before: a metadata-only version named like a plugin's capability (same name and
    version) ran that plugin's code in process, under the author's namespace and
    classification. Now only the plugin whose own namespace it is runs it."""
    ns = f"{SHINAN}.mu-plugin"
    resp = publish(federation, ns, "flow-forecast", version=FlowForecast.version)
    assert resp.status_code == 201, resp.text  # metadata alone may be published
    assert resp.json()["model_uri"] is None
    called = invoke(federation.shinan.url, f"{ns}/flow-forecast", EXAMPLE)
    problem = assert_problem(called, 409, slug="not-deployable")
    assert "namespace" in problem["detail"]
    assert "output" not in called.json()


# ---------------------------------------------------------------- POST /v1/publish


@pytest.mark.parametrize("role", ["author", "admin"])
def test_a_plugin_is_published_only_into_its_own_namespace(
    federation: Federation, role: str
) -> None:
    ns = f"{SHINAN}.mu-pub-{role}"
    headers = federation.shinan.auth(role, "mallory", scopes=[ns], department=ns)
    resp = httpx.post(
        f"{federation.shinan.url}/v1/publish",
        json={"capability": "scene-stats", "namespace": ns},
        headers=headers,
        timeout=120,
    )
    assert_problem(resp, 403, field="namespace")
    assert f"{SHINAN}.urban" in resp.json()["detail"]
    assert_nothing_stored(federation, ns, "scene-stats")


# ---------------------------------------------------------------- rows from before: 0007

NODE = "sd.qd.mig"
NS = f"{NODE}.x"


def seed_rows_at_0006(url: str, locations: dict[str, str | None]) -> None:
    """A store at revision 0006 holding this node's public versions with the given
    model locations, written as the code before the rule let authors write them."""
    engine = db.create_engine(url)
    try:
        migrate.upgrade(engine, "0006")
        md = sa.MetaData()
        md.reflect(engine, only=["node", "namespace", "capability", "capability_version"])
        t = md.tables
        now = datetime.now(UTC)
        stamps = {"created_at": now, "updated_at": now}
        with engine.begin() as conn:
            conn.execute(t["node"].insert().values(id=NODE, title="", created_at=now))
            conn.execute(
                t["namespace"].insert().values(id=NS, node_id=NODE, title="", created_at=now)
            )
            for name, uri in locations.items():
                texts = dict.fromkeys(("summary", "description", "owner", "contact", "license"), "")
                capability = {
                    **texts,
                    **stamps,
                    "namespace": NS,
                    "name": name,
                    "title": name,
                    "kind": "model",
                    "domain": "other",
                    "tags": [],
                    "classification": "public",
                    "origin_node": NODE,
                    "status": "published",
                    "latest_version": "1.0.0",
                    "runtime": "inprocess",
                    "content_hash": "0" * 64,
                    "ever_shared": True,
                    "access": {},
                }
                insert = t["capability"].insert().values(capability)
                cid = conn.execute(insert.returning(t["capability"].c.id)).scalar_one()
                version = {
                    **stamps,
                    "capability_id": cid,
                    "version": "1.0.0",
                    "status": "published",
                    "input_schema": {"type": "object"},
                    "output_schema": {},
                    "examples": [],
                    "runtime": {"type": "inprocess", "config": {}},
                    "model_uri": uri,
                    "artifact_uri": None if uri is None else f"{uri}-artifacts",
                    "content_hash": "0" * 64,
                    "published_at": now,
                }
                conn.execute(t["capability_version"].insert().values(version))
    finally:
        engine.dispose()


def versions_at(url: str) -> dict[str, tuple[str | None, str | None, str]]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.name, v.model_uri, v.artifact_uri, v.content_hash "
                    "FROM capability_version v JOIN capability c ON c.id = v.capability_id"
                )
            ).all()
        return {name: (uri, art, digest) for name, uri, art, digest in rows}
    finally:
        engine.dispose()


def test_migration_0007_clears_model_locations_a_node_never_registered(tmp_path: Path) -> None:
    """A node upgraded in place (``yunnao serve`` on its SQLite store) no longer loads
    what an author once named: the version is there, its model location is gone, a
    call is 409 and the author's code never runs."""
    model, marker = evil_model(tmp_path)
    data = tmp_path / "node"
    data.mkdir()
    seed_rows_at_0006(
        f"sqlite:///{data / 'registry.db'}",
        {
            "evil": model.as_uri(),
            "steal": f"models:/{NODE}.traffic.flow-forecast/1",
            "fine": f"models:/{NS}.fine/3",
        },
    )
    node = YunnaoProcess(tmp_path, "--node-id", NODE, "--data-dir", str(data)).start(timeout=120)
    try:
        for name in ("evil", "steal"):
            shown = httpx.get(f"{node.url}/v1/capabilities/{NS}/{name}/versions/1.0.0")
            assert shown.status_code == 200, shown.text
            assert (shown.json()["model_uri"], shown.json()["artifact_uri"]) == (None, None)
            problem = assert_problem(invoke(node.url, f"{NS}/{name}", {}), 409)
            assert problem["type"].endswith("/not-deployable")
        kept = httpx.get(f"{node.url}/v1/capabilities/{NS}/fine/versions/1.0.0").json()
        assert kept["model_uri"] == f"models:/{NS}.fine/3"
        assert not marker.exists()
    finally:
        node.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store on SQLite and on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = f"m_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    server.drop_database(name)


def test_migration_0007_on_both_stores(store_url: str) -> None:
    seed_rows_at_0006(
        store_url,
        {
            "evil": "file:///tmp/evil-model",
            "steal": f"models:/{NODE}.traffic.flow-forecast/1",
            "fine": f"models:/{NS}.fine/3",
            "bare": None,
        },
    )
    engine = db.create_engine(store_url)
    try:
        assert migrate.upgrade(engine, "0007") == "0007"
        with engine.connect() as conn:
            logged = conn.execute(
                sa.text("SELECT key, op FROM change WHERE entity = 'version' ORDER BY key")
            ).all()
    finally:
        engine.dispose()
    after = versions_at(store_url)
    assert after["evil"][:2] == (None, None) and after["steal"][:2] == (None, None)
    assert after["evil"][2] != "0" * 64  # a new content hash, for the cascade
    assert after["fine"] == (f"models:/{NS}.fine/3", f"models:/{NS}.fine/3-artifacts", "0" * 64)
    assert after["bare"] == (None, None, "0" * 64)
    # Followers learn of each cleared version through the change log.
    assert [tuple(r) for r in logged] == [
        (f"{NS}/evil@1.0.0", "upsert"),
        (f"{NS}/steal@1.0.0", "upsert"),
    ]


# ---------------------------------------------------------------- defence in depth


def test_the_in_process_runtime_loads_only_the_targets_own_model(tmp_path: Path) -> None:
    """Whatever reaches the runtime (a row written by hand, a future path that forgets
    the publish check), it loads nothing but ``models:/{namespace}.{name}/N`` and runs
    no other department's plugin."""
    import asyncio

    from yunnao.plugins.errors import NotDeployable
    from yunnao.runtimes.adapters.base import RuntimeContext, Target
    from yunnao.runtimes.adapters.inprocess import InProcessRuntime

    traffic = dataclasses.replace(FlowForecast, plugin="traffic")  # as loaded at the node
    loaded: list[str] = []
    context = RuntimeContext(
        node_id=SHINAN,
        data_dir=tmp_path,
        load_model=loaded.append,
        capabilities={traffic.name: traffic},
    )
    runtime = InProcessRuntime({}, context)
    ns = f"{SHINAN}.mu-unit"
    for uri in (
        evil_model(tmp_path)[0].as_uri(),
        TRAFFIC_MODEL,
        f"models:/{ns}.other/1",
        None,  # no model: the plugin of that name is the traffic department's
    ):
        target = Target(ns, "flow-forecast", FlowForecast.version, "inprocess", model_uri=uri)
        with pytest.raises(NotDeployable):
            asyncio.run(runtime.deploy(target))
    assert loaded == []
    own = Target(
        ns, "flow-forecast", "1.0.0", "inprocess", model_uri=f"models:/{ns}.flow-forecast/2"
    )
    asyncio.run(runtime.deploy(own))
    assert loaded == [f"models:/{ns}.flow-forecast/2"]
    plugin = Target(f"{SHINAN}.traffic", "flow-forecast", FlowForecast.version, "inprocess")
    asyncio.run(runtime.deploy(plugin))  # its own department's plugin runs
