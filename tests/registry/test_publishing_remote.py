"""Publishing against production parts: an MLflow tracking server process whose
artifacts live in a real S3 server (SeaweedFS), reached through the MinIO SDK."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from yunnao_example_traffic import FlowForecast

from tests.conftest import NODE_ID
from tests.realservers.mlflow_server import MlflowServer
from tests.realservers.seaweedfs import SeaweedS3
from tests.realservers.yunnao_node import YunnaoProcess
from tests.registry.test_publishing import EXAMPLES, cli
from yunnao.plugins.errors import YunnaoError
from yunnao.registry import db, migrate
from yunnao.registry.access import Identity
from yunnao.registry.models import ModelStore
from yunnao.registry.publishing import STEPS, Publisher
from yunnao.registry.store import RegistryStore

pytestmark = pytest.mark.slow
BUCKET = "mlflow"
ADMIN = Identity(subject="t", role="admin", scopes=(NODE_ID,))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("s3")).start()
    server.make_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(
    s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), f"s3://{BUCKET}/models", s3.env)
    yield server.start()
    server.stop()


def objects(s3: SeaweedS3, prefix: str = "") -> list[str]:
    return [o.object_name for o in s3.client().list_objects(BUCKET, prefix, recursive=True)]


def test_cli_publishes_to_a_remote_mlflow_with_artifacts_in_s3(
    s3: SeaweedS3, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # The publisher needs only the tracking URI: the server proxies artifacts to S3.
    env = {k: "" for k in s3.env}
    for dist, (cap, namespace) in EXAMPLES.items():
        done = cli(
            "publish", dist, "--node-id", NODE_ID, "--data-dir", str(tmp_path / "node"),
            "--mlflow-uri", mlflow_server.url, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"models:/{namespace}.{cap.name}/1" in done.stderr

    models = ModelStore(mlflow_server.url)
    for cap, namespace in EXAMPLES.values():
        model = models.load(f"models:/{namespace}.{cap.name}/1")
        example = cap.examples[0]["input"]
        assert model.predict(cap.canonical_input(example)) == [cap.run(example)]
    stored = objects(s3, "models/")
    assert any(name.endswith("artifacts/flow_model.joblib") for name in stored)
    assert any(name.endswith("artifacts/stations.csv") for name in stored)
    # One model per capability of the three distributions (the vision plugin has several).
    published = sum(
        len(importlib.import_module(cap.module.split(".")[0]).yunnao_capabilities())
        for cap, _ in EXAMPLES.values()
    )
    assert sum(name.endswith("/MLmodel") for name in stored) == published


def test_http_publish_on_a_node_configured_for_remote_mlflow(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    node = YunnaoProcess(
        tmp_path, "--node-id", NODE_ID, "--data-dir", str(data),
        env={"YUNNAO_MLFLOW_TRACKING_URI": mlflow_server.url},
    ).start(timeout=60)  # fmt: skip
    try:
        scopes = [arg for _, ns in EXAMPLES.values() for arg in ("--namespace", ns)]
        token = cli(
            "token", "create", "--role", "author", *scopes,
            "--node-id", NODE_ID, "--data-dir", str(data), cwd=tmp_path,
        ).stdout.strip()  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        body = {"capability": "scene-stats", "namespace": f"{NODE_ID}.urban"}
        for cap, namespace in EXAMPLES.values():  # each example, into its own namespace
            if cap.name == "scene-stats":
                continue  # published below, with its aliases checked
            other = httpx.post(
                f"{node.url}/v1/publish",
                json={"capability": cap.name, "namespace": namespace},
                headers=auth,
                timeout=120,
            )
            assert other.status_code == 201, other.text
            example = cap.examples[0]["input"]
            loaded = ModelStore(mlflow_server.url).load(other.json()["model_uri"])
            assert loaded.predict(cap.canonical_input(example)) == [cap.run(example)]
        reserved = httpx.post(f"{node.url}/v1/publish", json={**body, "aliases": ["v1"]},
                              headers=auth, timeout=60)  # fmt: skip
        assert reserved.status_code == 422  # MLflow reserves v<N>: refused before MLflow
        assert reserved.json()["errors"][0]["field"] == "aliases[0]"
        resp = httpx.post(f"{node.url}/v1/publish", json={**body, "aliases": ["staging"]},
                          headers=auth, timeout=120)  # fmt: skip
        assert resp.status_code == 201, resp.text
        uri = resp.json()["model_uri"]
        assert uri.startswith(f"models:/{NODE_ID}.urban.scene-stats/")
    finally:
        node.stop()
    models = ModelStore(mlflow_server.url)
    name = f"{NODE_ID}.urban.scene-stats"
    # The module's MLflow server is shared with the CLI test, so the number may be above 1.
    staging = models.client.get_model_version_by_alias(name, "staging")
    assert uri == f"models:/{name}/{staging.version}"
    from yunnao_example_vision import scene_stats

    example = scene_stats.examples[0]["input"]
    assert models.load(uri).predict(scene_stats.canonical_input(example)) == [
        scene_stats.run(example)
    ]


def test_s3_dying_mid_publish_leaves_nothing_and_a_retry_succeeds(tmp_path: Path) -> None:
    s3 = SeaweedS3(tmp_path / "s3").start()
    s3.make_bucket(BUCKET)
    server = MlflowServer(tmp_path / "mlflow", f"s3://{BUCKET}/models", s3.env).start()
    try:
        engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
        migrate.upgrade(engine)
        store = RegistryStore(engine, NODE_ID)
        models = ModelStore(server.url)
        publisher = Publisher(store, models)
        namespace = f"{NODE_ID}.traffic"

        def kill_s3(step: str) -> None:
            if step == STEPS[1]:  # just before the model goes to MLflow (and on to S3)
                s3.stop()

        with pytest.raises(YunnaoError) as failure:
            publisher.publish(FlowForecast, namespace=namespace, step=kill_s3)
        assert "MLflow failed while logging the model" in failure.value.detail
        assert store.version_numbers(namespace, "flow-forecast") == []
        name = f"{namespace}.flow-forecast"
        assert models.client.search_model_versions(f"name = '{name}'") == []
        assert models.client.search_runs([models.experiment_id()]) == []

        s3.start()  # S3 is back: the same publish now goes through
        published = publisher.publish(FlowForecast, namespace=namespace)
        assert published.model_uri == f"models:/{name}/1"
        entry, _ = store.get_version(ADMIN, namespace, "flow-forecast", FlowForecast.version)
        assert entry.model_uri == published.model_uri
        assert any(n.endswith("flow_model.joblib") for n in objects(s3, "models/"))
    finally:
        server.stop()
        s3.stop()
