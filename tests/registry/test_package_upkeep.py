"""Operating uploaded packages: environments and code removed with a package's last live
version, publish jobs left running by a stopped node, an idle publisher that only reads,
an index that cannot be reached, and what ``/readyz`` says about the sandbox.

Real parts throughout: the store (SQLite; the migration also on PostgreSQL), the node's
embedded MLflow, a real package index (``python -m http.server``), pip, bubblewrap."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from yunnao_example_vision import scene_stats

from tests.conftest import NODE_ID, Node
from tests.registry.test_packages import dept_wheel, index  # noqa: F401
from yunnao.app import create_app
from yunnao.plugins.errors import Unavailable
from yunnao.registry import db, migrate
from yunnao.registry.models import ModelStore, model_name
from yunnao.registry.packages.environments import MARKER, Environments
from yunnao.registry.packages.jobs import JOB, PublishJobs, abandoned
from yunnao.registry.packages.publish import RESTARTED, UploadPublisher
from yunnao.registry.packages.upkeep import PACKAGE, PACKAGE_VERSION
from yunnao.registry.publishing import STEPS, Publisher
from yunnao.registry.store import RegistryStore
from yunnao.registry.tables import utcnow
from yunnao.settings import Settings

NS = f"{NODE_ID}.hello"
OCTET = {"Content-Type": "application/octet-stream"}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple/"  # nothing listens there any more


# ---------------------------------------------------------------- the publisher's parts


class Parts:
    """An upload publisher on a real store and the node's embedded MLflow, no app."""

    def __init__(self, tmp_path: Path, index_url: str) -> None:
        self.data = tmp_path / "node"
        self.engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
        migrate.upgrade(self.engine)
        self.store = RegistryStore(self.engine, NODE_ID)
        self.store.ensure_node()
        self.root = self.data / "packages"
        self.jobs = PublishJobs(self.engine, self.root / "uploads")
        self.publisher = UploadPublisher(
            self.jobs,
            Publisher(self.store, ModelStore.embedded(self.data)),
            Environments(self.root / "envs", index_url=index_url, retry_backoff=0.1),
            self.root,
            max_bytes=1 << 20,
        )

    def queue(self, archive: Path, *, namespace: str = NS, **values: Any) -> str:
        """A publish job for ``archive`` as the upload route leaves it (or as ``values``
        say), its archive in place."""
        job_id = self.jobs.new_id()
        upload = self.jobs.upload_path(job_id)
        upload.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, upload)
        row = {
            "id": job_id,
            "namespace": namespace,
            "filename": archive.name,
            "package_id": None,
            "caller": {"subject": "tester", "issuer": NODE_ID, "peer": None},
            "status": "queued",
            "log": [],
            "created_at": utcnow(),
        }
        with self.engine.begin() as conn:
            conn.execute(sa.insert(JOB).values(**{**row, **values}))
        return job_id

    def job(self, job_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(JOB).where(JOB.c.id == job_id)).one()


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(tmp_path, closed_port_url())
    yield made
    made.engine.dispose()


# ---------------------------------------------------------------- the migration


def test_the_migration_adds_package_versions_and_job_runners(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("package_version")}
        assert columns == {"package_id", "namespace", "name", "version", "model_uri"}
        assert "job_id" in {c["name"] for c in inspector.get_columns("package")}
        job_columns = {c["name"] for c in inspector.get_columns("publish_job")}
        assert {"runner", "heartbeat_at"} <= job_columns
        with engine.begin() as conn:  # a package's versions refer to it
            conn.execute(
                sa.insert(PACKAGE).values(
                    id="a" * 64, namespace=NS, distribution="d", version="1", filename="d.whl",
                    size=1, uploaded_by={}, created_at=utcnow(),
                )
            )  # fmt: skip
            conn.execute(
                sa.insert(PACKAGE_VERSION).values(
                    package_id="a" * 64, namespace=NS, name="greet", version="1.0.0"
                )
            )
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                sa.insert(PACKAGE_VERSION).values(
                    package_id="b" * 64, namespace=NS, name="greet", version="1.0.0"
                )
            )
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the idle publisher


def test_an_idle_publisher_opens_no_write_transaction(parts: Parts, tmp_path: Path) -> None:
    writes: list[str] = []

    @sa.event.listens_for(parts.engine, "begin")
    def _count(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("yunnao_write"):
            writes.append("write")

    for _ in range(5):
        assert parts.publisher.tick() is None
    assert writes == []
    job_id = parts.queue(dept_wheel(tmp_path / "dist"))
    claimed = parts.publisher.tick()
    assert claimed is not None and claimed.id == job_id and writes
    assert parts.job(job_id).runner == parts.publisher.runner


def test_a_job_is_abandoned_when_its_runner_is_gone_or_silent() -> None:
    now = utcnow()

    class Row:
        def __init__(self, runner: str, beat_ago: float) -> None:
            self.runner = runner
            self.heartbeat_at = now - timedelta(seconds=beat_ago)
            self.started_at = self.created_at = self.heartbeat_at

    host = socket.gethostname()
    gone = Row(f"{host}:{2**22 + 7}:x", 1)  # above pid_max: no such process
    alive_here = Row(f"{host}:1:x", 1)  # pid 1 exists
    silent_elsewhere = Row("elsewhere:1:x", 600)
    beating_elsewhere = Row("elsewhere:1:x", 1)
    assert abandoned(gone, now=now, grace=60)
    assert not abandoned(alive_here, now=now, grace=60)
    assert abandoned(silent_elsewhere, now=now, grace=60)
    assert not abandoned(beating_elsewhere, now=now, grace=60)


# ---------------------------------------------------------------- an unreachable index


@pytest.mark.slow
def test_an_index_that_cannot_be_reached_fails_the_job_saying_try_again(
    parts: Parts, tmp_path: Path
) -> None:
    index_url = parts.publisher.environments.index_url
    with pytest.raises(Unavailable) as exc:
        parts.publisher.environments.ensure(["yunnao-testdep-greeting>=1.0"])
    assert index_url in exc.value.detail and "try again later" in exc.value.detail

    job_id = parts.queue(dept_wheel(tmp_path / "dist"))
    job = parts.publisher.tick()
    assert job is not None
    parts.publisher.execute(job)
    done = parts.job(job_id)
    assert done.status == "failed"
    assert done.error["status"] == 503 and done.error["index"] == index_url
    assert "try again later" in done.error["detail"]
    assert not list((parts.root / "code").glob("*"))  # nothing left
    assert not list((parts.root / "uploads").glob("*"))


# ---------------------------------------------------------------- a node that stopped mid-job


@pytest.mark.slow
def test_jobs_left_by_a_stopped_node_are_ended_when_a_node_starts(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A node stopped while logging a capability to MLflow: on start its job fails, with
    the run and model version it logged, its code, work folder and environment gone; a
    job whose node stopped after the commit succeeded; a queued job runs."""
    parts = Parts(tmp_path, closed_port_url())
    models = parts.publisher.publisher.models
    stopped_ns = f"{NODE_ID}.stopped"
    logged = models.log(scene_stats, namespace=stopped_ns, node=NODE_ID)  # what it got to
    sha = "c" * 64
    code, work = parts.root / "code" / sha, parts.root / "work"
    (code / "dept_stopped").mkdir(parents=True)
    env = parts.root / "envs" / ("e" * 64)
    env.mkdir(parents=True)
    (env / MARKER).write_text('{"installed": []}')
    long_ago = utcnow() - timedelta(hours=1)
    stopped = parts.queue(
        dept_wheel(tmp_path / "d1"),
        namespace=stopped_ns,
        status="running",
        package_id=sha,
        runner="a-host-long-gone:4242:dead",
        heartbeat_at=long_ago,
        started_at=long_ago,
        log=[
            {"at": long_ago.isoformat(), "step": "publishing",
             "message": f"{STEPS[1]}: {scene_stats.name} {scene_stats.version}"},
        ],
    )  # fmt: skip
    (work / stopped).mkdir(parents=True)
    # Another stopped after the commit that recorded its package.
    committed_sha = "d" * 64
    committed = parts.queue(
        dept_wheel(tmp_path / "d2"), status="running", package_id=committed_sha,
        runner="a-host-long-gone:4243:dead", heartbeat_at=long_ago, started_at=long_ago,
    )  # fmt: skip
    with parts.engine.begin() as conn:
        conn.execute(
            sa.insert(PACKAGE).values(
                id=committed_sha, namespace=NS, distribution="dept-hello", version="1.0.0",
                filename="x.whl", size=1, uploaded_by={}, created_at=long_ago, job_id=committed,
            )
        )  # fmt: skip
        conn.execute(
            sa.insert(PACKAGE_VERSION).values(
                package_id=committed_sha, namespace=NS, name="greet", version="1.0.0",
                model_uri=f"models:/{NS}.greet/1",
            )
        )  # fmt: skip
    broken = tmp_path / "dept_broken-1.0.0-py3-none-any.whl"
    broken.write_bytes(b"PK\x03\x04 not a wheel")
    queued = parts.queue(broken)
    parts.engine.dispose()

    settings = Settings(
        node_id=NODE_ID, data_dir=parts.data, database_url=f"sqlite:///{tmp_path / 'registry.db'}"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False):
        jobs = wait_until_ended(parts, [stopped, committed, queued])

    failed = jobs[stopped]
    assert failed.status == "failed" and failed.error["detail"] == RESTARTED
    assert failed.error["status"] == 503 and failed.log[-1]["message"] == RESTARTED
    client = models.client
    assert not client.search_model_versions(f"name = '{model_name(stopped_ns, scene_stats.name)}'")
    assert client.get_run(logged.run_id).info.lifecycle_stage == "deleted"
    assert not code.exists() and not (work / stopped).exists() and not env.exists()
    assert not list((parts.root / "uploads").glob("*"))

    assert jobs[committed].status == "succeeded"
    assert jobs[committed].result == [
        {"capability": f"{NS}/greet@1.0.0", "model_uri": f"models:/{NS}.greet/1",
         "aliases": ["production"]},
    ]  # fmt: skip
    assert jobs[queued].status == "failed" and jobs[queued].error["status"] == 422


def wait_until_ended(parts: Parts, ids: list[str], limit: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        jobs = {i: parts.job(i) for i in ids}
        if all(j.status in ("succeeded", "failed") for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError({i: (j.status, j.log[-1:]) for i, j in jobs.items()})
        time.sleep(0.2)


# ---------------------------------------------------------------- a package's last version


def upload(node: Node, wheel: Path, namespace: str = NS) -> dict[str, Any]:
    headers = node.auth("author", namespace)
    resp = node.client.post(
        f"/v1/namespaces/{namespace}/packages",
        params={"filename": wheel.name},
        content=wheel.read_bytes(),
        headers={**OCTET, **headers},
    )
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 240
    job = resp.json()
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = node.client.get(resp.headers["location"], headers=headers).json()
    assert job["status"] == "succeeded", job
    return job


def retire(node: Node, capability: str) -> None:
    """``ns/name@version``: deprecated, then retired."""
    address, version = capability.split("@")
    namespace = address.split("/")[0]
    for status in ("deprecated", "retired"):
        resp = node.client.post(
            f"/v1/capabilities/{address}/versions/{version}/lifecycle",
            json={"status": status},
            headers=node.auth("author", namespace),
        )
        assert resp.status_code == 200, resp.text


def wait_for(what: Any, limit: float = 60) -> None:
    """Until ``what()`` holds: the publisher removes unused packages between its polls."""
    deadline = time.monotonic() + limit
    while not what():
        assert time.monotonic() < deadline, "not removed in time"
        time.sleep(0.2)


@pytest.mark.slow
def test_code_and_environment_go_with_the_last_live_version(
    tmp_path: Path,
    sqlite_url: str,
    index: str,  # noqa: F811
) -> None:
    settings = Settings(
        node_id=NODE_ID, data_dir=tmp_path / "node", database_url=sqlite_url, package_index=index
    )
    packages = settings.data_dir / "packages"
    other_ns = f"{NODE_ID}.other"
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        node = Node(client=client, settings=settings)
        publisher = app.state.upload_publisher
        first = upload(node, dept_wheel(tmp_path / "a"))
        second = upload(
            node, dept_wheel(tmp_path / "b", name="dept-other", module="dept_other"), other_ns
        )
        first_sha, other_sha = sha_of(sqlite_url, "dept-hello"), sha_of(sqlite_url, "dept-other")
        (env_key,) = [p.name for p in (packages / "envs").iterdir() if not p.name.startswith(".")]
        ready = client.get("/readyz").json()["details"]["sandbox"]
        assert ready["environments"]["count"] == 1 and ready["environments"]["bytes"] > 0

        # One of its two versions retired: the package stays.
        retire(node, first["result"][0]["capability"])
        assert publisher.sweep(force=True) == []
        assert (packages / "code" / first_sha).is_dir()
        # Both: its code goes; the environment stays, the other package uses it.
        retire(node, first["result"][1]["capability"])
        wait_for(lambda: not (packages / "code" / first_sha).exists())
        assert (packages / "envs" / env_key).is_dir()
        assert (packages / "code" / other_sha).is_dir()
        # The other package's capabilities deleted: its code and the environment go.
        for result in second["result"]:
            address = result["capability"].split("@")[0]
            resp = client.delete(
                f"/v1/capabilities/{address}", headers=node.auth("author", other_ns)
            )
            assert resp.status_code == 204, resp.text
        wait_for(lambda: not (packages / "envs" / env_key).exists())
        wait_for(lambda: not (packages / "code" / other_sha).exists())
        engine = db.create_engine(sqlite_url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(PACKAGE)).all() == []
            assert conn.execute(sa.select(PACKAGE_VERSION)).all() == []
        engine.dispose()


def sha_of(url: str, distribution: str) -> str:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(PACKAGE.c.id).where(PACKAGE.c.distribution == distribution)
            ).scalar_one()
    finally:
        engine.dispose()
