"""Publishing plugins through MLflow: the CLI and HTTP paths, reloading from ``models:/``,
and failures that leave no half state (embedded MLflow on SQLite with local artifacts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import pytest
from mlflow import MlflowClient
from pydantic import Field
from yunnao_example_air import AirAnomaly
from yunnao_example_traffic import FlowForecast
from yunnao_example_vision import scene_stats

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.plugins.errors import Conflict, YunnaoError
from yunnao.registry import db, schemas
from yunnao.registry.access import ANONYMOUS
from yunnao.registry.models import ModelStore
from yunnao.registry.publishing import STEPS, Publisher
from yunnao.registry.store import RegistryStore

YUNNAO = str(Path(sys.executable).parent / "yunnao")
EXAMPLES = {
    "yunnao-example-traffic": (FlowForecast, f"{NODE_ID}.traffic"),
    "yunnao-example-air": (AirAnomaly, f"{NODE_ID}.env"),
    "yunnao-example-vision": (scene_stats, f"{NODE_ID}.urban"),
}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [YUNNAO, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def mlflow_client(data_dir: Path) -> MlflowClient:
    return ModelStore.embedded(data_dir).client


def versions_of(data_dir: Path, name: str) -> list:
    return mlflow_client(data_dir).search_model_versions(f"name = '{name}'")


def assert_reloads_the_same(data_dir: Path, model_uri: str, cap) -> None:
    """The model loads from its models:/ URI alone and answers like the capability."""
    model = ModelStore.embedded(data_dir).load(model_uri)
    example = cap.examples[0]["input"]
    assert model.predict(cap.canonical_input(example)) == [cap.run(example)]


@pytest.mark.slow
def test_cli_publishes_each_example_and_each_reloads_from_its_uri(tmp_path: Path) -> None:
    data = tmp_path / "node"
    for dist, (cap, namespace) in EXAMPLES.items():
        done = cli("publish", dist, "--node-id", NODE_ID, "--data-dir", str(data), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"✓ {namespace}/{cap.name}@{cap.version}" in done.stderr

    store = RegistryStore(db.create_engine(f"sqlite:///{data / 'registry.db'}"), NODE_ID)
    client = mlflow_client(data)
    for cap, namespace in EXAMPLES.values():
        entry, _ = store.get_version(
            ANONYMOUS if cap.classification == "public" else _admin(),
            namespace,
            cap.name,
            cap.version,
        )
        assert entry.model_uri == f"models:/{namespace}.{cap.name}/1"
        assert entry.input_schema == cap.input_schema
        assert entry.output_schema == cap.output_schema
        mv = client.get_model_version_by_alias(f"{namespace}.{cap.name}", "production")
        assert str(mv.version) == "1"
        assert mv.tags["yunnao.namespace"] == namespace
        assert mv.tags["yunnao.node"] == NODE_ID
        assert mv.tags["yunnao.classification"] == cap.classification
        assert_reloads_the_same(data, entry.model_uri, cap)

    again = cli(
        "publish", "yunnao-example-air", "--node-id", NODE_ID, "--data-dir", str(data), cwd=tmp_path
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert len(versions_of(data, f"{NODE_ID}.env.air-anomaly")) == 1


def _admin():
    from yunnao.registry.access import Identity

    return Identity(subject="t", role="admin", scopes=(NODE_ID,))


@pytest.mark.slow
def test_http_publish_of_loaded_plugins(sqlite_node: Node) -> None:
    node, data = sqlite_node, sqlite_node.settings.data_dir
    traffic = node.auth("author", f"{NODE_ID}.traffic")

    for cap, namespace in EXAMPLES.values():
        resp = node.client.post(
            "/v1/publish", json={"capability": cap.name}, headers=node.auth("author", namespace)
        )
        assert resp.status_code == 201, resp.text
        version = resp.json()
        assert version["model_uri"] == f"models:/{namespace}.{cap.name}/1"
        assert resp.headers["location"].endswith(f"/{cap.name}/versions/{cap.version}")
        shown = node.client.get(
            f"/v1/capabilities/{namespace}/{cap.name}/versions/{cap.version}",
            headers=node.auth("consumer", NODE_ID),
        )
        assert shown.json()["input_schema"] == cap.input_schema
        assert_reloads_the_same(data, version["model_uri"], cap)

    # The same version again: refused before MLflow is touched.
    again = node.client.post("/v1/publish", json={"capability": "flow-forecast"}, headers=traffic)
    assert_problem(again, 409, field="version")
    assert len(versions_of(data, f"{NODE_ID}.traffic.flow-forecast")) == 1

    # Outside the token's namespace, or into another node's: nothing reaches MLflow.
    env = node.client.post(
        "/v1/publish",
        json={"capability": "air-anomaly", "namespace": f"{NODE_ID}.env2"},
        headers=traffic,
    )
    assert_problem(env, 403)
    foreign = node.client.post(
        "/v1/publish",
        json={"capability": "scene-stats", "namespace": "sd.other.urban"},
        headers=node.auth("admin", "sd"),
    )
    assert_problem(foreign, 403)
    assert versions_of(data, f"{NODE_ID}.env2.air-anomaly") == []
    assert versions_of(data, "sd.other.urban.scene-stats") == []

    unknown = node.client.post("/v1/publish", json={"capability": "nope"}, headers=traffic)
    body = assert_problem(unknown, 404)
    assert "flow-forecast" in body["detail"]  # says what is loaded
    anonymous = node.client.post("/v1/publish", json={"capability": "flow-forecast"})
    assert_problem(anonymous, 401)
    # A reader learns nothing about the node's plugins, not even which exist.
    reader = node.client.post(
        "/v1/publish", json={"capability": "nope"}, headers=node.auth("consumer", NODE_ID)
    )
    assert "flow-forecast" not in assert_problem(reader, 403)["detail"]


def test_a_failure_after_mlflow_removes_the_model_version(tmp_path: Path) -> None:
    """A concurrent publish takes the version between the check and the registry write:
    the registry keeps the winner, and MLflow keeps nothing of the loser."""
    data = tmp_path / "node"
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    from yunnao.registry import migrate

    engine = db.create_engine(url)
    migrate.upgrade(engine)
    store, rival = RegistryStore(engine, NODE_ID), RegistryStore(db.create_engine(url), NODE_ID)
    models = ModelStore.embedded(data)
    namespace = f"{NODE_ID}.traffic"

    def race(step: str) -> None:
        if step == STEPS[-1]:
            rival.publish(
                namespace,
                "flow-forecast",
                schemas.PublishRequest(version=FlowForecast.version, title="the rival"),
            )

    with pytest.raises(Conflict):
        Publisher(store, models).publish(FlowForecast, namespace=namespace, step=race)

    assert versions_of(data, f"{namespace}.flow-forecast") == []
    assert models.client.search_registered_models() == []
    runs = models.client.search_runs([models.experiment_id()])
    assert runs == []  # deleted runs are not listed
    artifacts = data / "mlflow" / "artifacts"
    assert not any(p.is_file() for p in artifacts.rglob("*"))  # no orphaned files
    entry, _ = store.get_version(_admin(), namespace, "flow-forecast", FlowForecast.version)
    assert entry.model_uri is None and entry.namespace == namespace  # the rival's entry


BAD_PLUGINS = {
    "broken_import": "import not_installed_anywhere\n",
    "hook_raises": """
        from yunnao.plugins import hookimpl

        @hookimpl
        def yunnao_capabilities():
            raise RuntimeError("database for the model is down")
    """,
    "untyped": """
        from yunnao.plugins import capability, hookimpl

        @capability(name="untyped", title="t")
        def untyped(x):
            return x

        @hookimpl
        def yunnao_capabilities():
            return [untyped]
    """,
    "not_a_capability": """
        from yunnao.plugins import hookimpl

        def plain(x: int) -> int:
            return x

        @hookimpl
        def yunnao_capabilities():
            return [plain]
    """,
}
CAUSES = {
    "broken_import": "import failed: ModuleNotFoundError: No module named 'not_installed_anywhere'",
    "hook_raises": "yunnao_capabilities raised RuntimeError: database for the model is down",
    "untyped": "import failed: SpecError: capability 'untyped': parameter 'x' has no type hint",
    "not_a_capability": "not a capability (decorate it with @capability)",
}


def write_bad_plugins(root: Path) -> Path:
    """The bad plugins as modules, and a distribution whose entry points name them."""
    for name, code in BAD_PLUGINS.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    info = root / "bad_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[yunnao]\n" + "".join(f"{n.replace('_', '-')} = {n}\n" for n in BAD_PLUGINS)
    )
    return root


def test_bad_plugins_are_named_with_their_cause(tmp_path: Path) -> None:
    root = write_bad_plugins(tmp_path)
    targets = [str(root / f"{name}.py") for name in BAD_PLUGINS]
    done = cli("plugins", "list", *targets, cwd=tmp_path)
    assert done.returncode == 1
    for name, cause in CAUSES.items():
        line = next(ln for ln in done.stderr.splitlines() if f"plugin {name!r}" in ln)
        assert cause in line, line
    assert "Traceback" not in done.stderr
    for example in ("flow-forecast", "air-anomaly", "scene-stats"):
        assert example in done.stdout  # the good ones are listed


@pytest.mark.slow
def test_a_node_starts_with_the_good_plugins_when_others_fail(tmp_path: Path) -> None:
    from tests.realservers.yunnao_node import YunnaoProcess

    (tmp_path / "site").mkdir()
    root = write_bad_plugins(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    node = YunnaoProcess(
        tmp_path, "--node-id", NODE_ID, "--data-dir", str(tmp_path / "node"), env=env
    ).start(timeout=60)
    try:
        log = node.output()
        for name, cause in CAUSES.items():
            assert f"plugin '{name.replace('_', '-')}'" in log and cause in log, log
        token = cli(
            "token",
            "create",
            "--role",
            "author",
            "--namespace",
            f"{NODE_ID}.urban",
            "--node-id",
            NODE_ID,
            "--data-dir",
            str(tmp_path / "node"),
            cwd=tmp_path,
        )
        import httpx

        resp = httpx.post(
            f"{node.url}/v1/publish",
            json={"capability": "scene-stats"},
            headers={"Authorization": f"Bearer {token.stdout.strip()}"},
            timeout=60,
        )
        assert resp.status_code == 201, resp.text
    finally:
        node.stop()


def test_a_published_model_runs_without_its_plugin(tmp_path: Path) -> None:
    """The model carries its code: it loads in a fresh process where the plugin's
    source no longer exists and was never installed."""
    plugin = tmp_path / "src" / "yunnao_tmp_plugin.py"
    plugin.parent.mkdir()
    plugin.write_text(
        textwrap.dedent(
            """
            from yunnao.plugins import capability, hookimpl

            @capability(name="celsius", title="温度换算", classification="public")
            def celsius(fahrenheit: float) -> float:
                return round((fahrenheit - 32) * 5 / 9, 2)

            @hookimpl
            def yunnao_capabilities():
                return [celsius]
            """
        )
    )
    data = tmp_path / "node"
    done = cli(
        "publish", str(plugin), "--namespace", f"{NODE_ID}.weather", "--node-id", NODE_ID,
        "--data-dir", str(data), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plugin.unlink()
    script = (
        "import sys; from pathlib import Path\n"
        "from yunnao.registry.models import ModelStore\n"
        f"store = ModelStore.embedded(Path({str(data)!r}))\n"
        f"model = store.load('models:/{NODE_ID}.weather.celsius/1')\n"
        "print(model.predict({'fahrenheit': 212.0}))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "[100.0]"


def test_a_draft_gets_no_alias_unless_asked(tmp_path: Path) -> None:
    from yunnao.registry import migrate

    engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    publisher = Publisher(RegistryStore(engine, NODE_ID), ModelStore.embedded(tmp_path / "node"))
    namespace = f"{NODE_ID}.urban"
    draft = publisher.publish(scene_stats, namespace=namespace, status="draft")
    assert draft.aliases == () and draft.version.status == "draft"
    model = publisher.models.client.get_registered_model(f"{namespace}.scene-stats")
    assert model.aliases == {}
    with pytest.raises(YunnaoError, match="invalid alias 'latest'"):
        publisher.check(FlowForecast, f"{NODE_ID}.traffic", ["latest"])


def test_an_invalid_declared_schema_is_refused_before_mlflow(tmp_path: Path) -> None:
    from yunnao.plugins import capability
    from yunnao.registry import migrate

    @capability(name="bogus", title="错误模式")
    def bogus(x: Annotated[int, Field(json_schema_extra={"type": "integr"})]) -> int:
        return x

    engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = RegistryStore(engine, NODE_ID)
    publisher = Publisher(store, ModelStore.embedded(tmp_path / "node"))
    with pytest.raises(YunnaoError) as err:
        publisher.publish(bogus, namespace=f"{NODE_ID}.misc")
    assert err.value.status == 422
    assert err.value.errors[0].field == "input_schema"
    assert store.version_numbers(f"{NODE_ID}.misc", "bogus") == []
    assert publisher.models.client.search_registered_models() == []


@pytest.mark.slow
def test_a_node_can_publish_its_plugins_on_start_once(tmp_path: Path) -> None:
    """What `make run` does: the examples are in the catalog as soon as the node is up,
    and a restart publishes nothing twice."""
    import httpx

    from tests.realservers.yunnao_node import YunnaoProcess

    data = tmp_path / "node"
    args = ("--node-id", NODE_ID, "--data-dir", str(data), "--publish-plugins")
    for start in ("first", "second"):
        node = YunnaoProcess(tmp_path, *args).start(timeout=90)
        try:
            found = httpx.get(f"{node.url}/v1/capabilities", timeout=30).json()
            # Anonymous callers see the public ones; air-anomaly and face-blur are internal.
            public = {"flow-forecast", "scene-stats", "frame-quality", "people-detect",
                      "crowd-level", "video-people"}  # fmt: skip
            assert {i["name"] for i in found["items"]} == public
            published = f"published {NODE_ID}.env/air-anomaly@1.0.0" in node.output()
            assert published == (start == "first"), node.output()
        finally:
            node.stop()
    for cap, namespace in EXAMPLES.values():
        assert len(versions_of(data, f"{namespace}.{cap.name}")) == 1


def test_a_breaking_minor_version_is_refused_before_mlflow(tmp_path: Path) -> None:
    from yunnao.plugins import capability
    from yunnao.plugins.errors import BreakingChange
    from yunnao.registry import migrate

    @capability(name="count", title="计数", version="1.0.0")
    def count_v1(x: float) -> int:
        return int(x)

    @capability(name="count", title="计数", version="1.1.0")
    def count_v11(x: int) -> int:  # callers sending 2.5 would be refused now
        return x

    engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = RegistryStore(engine, NODE_ID)
    publisher = Publisher(store, ModelStore.embedded(tmp_path / "node"))
    namespace = f"{NODE_ID}.misc"
    publisher.publish(count_v1, namespace=namespace)
    steps: list[str] = []
    with pytest.raises(BreakingChange) as err:
        publisher.publish(count_v11, namespace=namespace, step=steps.append)
    assert steps == [STEPS[0]]  # refused at the check, before logging anything to MLflow
    assert err.value.status == 409
    assert [e.field for e in err.value.errors] == ["input.x"]
    assert "2.0.0" in str(err.value)
    assert store.version_numbers(namespace, "count") == ["1.0.0"]
    versions = publisher.models.client.search_model_versions(f"name='{namespace}.count'")
    assert [str(v.version) for v in versions] == ["1"]  # no orphan for 1.1.0
