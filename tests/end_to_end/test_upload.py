"""Publishing by upload, as a department does it: a real ``yunnao serve`` node, and an
author in another process that has nothing but the node's URL and a token. The package
needs a dependency the node's environment does not have (served by a real package
index); it is published, found, and invoked in the sandbox. A package whose example
fails is refused, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from tests.registry.test_packages import (  # noqa: F401
    DEP,
    dept_wheel,
    index,
    plugin_source,
)

pytestmark = pytest.mark.slow

NS = "sd.qd.hello"
LIMIT = 1 << 20  # the node's largest archive in this module

# The author's side, run as its own process: upload, then follow the job to its end.
AUTHOR = """
import sys, time, httpx
url, token, wheel, namespace = sys.argv[1:5]
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
with open(wheel, "rb") as f:
    resp = httpx.post(f"{url}/v1/namespaces/{namespace}/packages",
                      params={"filename": wheel.rsplit("/", 1)[-1]}, content=f.read(),
                      headers=headers, timeout=60)
assert resp.status_code == 202, resp.text
job = resp.json()
deadline = time.monotonic() + 240
while job["status"] in ("queued", "running") and time.monotonic() < deadline:
    time.sleep(0.5)
    job = httpx.get(url + resp.headers["location"], headers=headers, timeout=30).json()
print(__import__("json").dumps(job))
"""


def author_upload(node: YunnaoProcess, token: str, wheel: Path, namespace: str = NS) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", AUTHOR, node.url, token, str(wheel), namespace],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=wheel.parent,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def token_for(node_dir: Path, *scopes: str) -> str:
    out = subprocess.run(
        [YUNNAO, "token", "create", "--node-id", "sd.qd", "--role", "author",
         *(a for s in scopes for a in ("--namespace", s))],
        cwd=node_dir, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, index: str):  # noqa: F811
    cwd = tmp_path_factory.mktemp("upload-node")
    proc = YunnaoProcess(
        cwd,
        "--node-id",
        "sd.qd",
        env={
            "YUNNAO_PACKAGE_INDEX": index,
            "YUNNAO_PLUGINS": "false",
            "YUNNAO_MAX_PACKAGE_BYTES": str(LIMIT),
        },
    ).start()
    yield proc, cwd
    proc.stop()


def test_an_author_with_a_url_and_a_token_publishes_and_the_package_runs_sandboxed(
    node, tmp_path: Path
) -> None:
    proc, cwd = node
    token = token_for(cwd, NS)
    job = author_upload(proc, token, dept_wheel(tmp_path))
    assert job["status"] == "succeeded", (job["error"], job["log"])
    published = sorted(r["capability"] for r in job["result"])
    assert published == [f"{NS}/greet@1.0.0", f"{NS}/weights@2.0.0"]
    steps = [line["step"] for line in job["log"]]
    assert steps[0] == "received" and "inspected" in steps and steps[-1] == "published"

    headers = {"Authorization": f"Bearer {token}"}
    found = httpx.get(f"{proc.url}/v1/capabilities", params={"q": "greet"}, headers=headers)
    assert f"{NS}/greet" in [f"{c['namespace']}/{c['name']}" for c in found.json()["items"]]
    version = httpx.get(f"{proc.url}/v1/capabilities/{NS}/greet/versions/1.0.0", headers=headers)
    assert version.json()["runtime"]["type"] == "sandbox"

    answer = httpx.post(
        f"{proc.url}/v1/invoke/{NS}/greet", json={"input": {"name": "市南区"}}, headers=headers,
        timeout=120,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == {"text": "hello, 市南区", "polite": True}
    weights = httpx.post(
        f"{proc.url}/v1/invoke/{NS}/weights", json={"input": {"key": "a"}}, headers=headers,
        timeout=120,
    )  # fmt: skip
    assert weights.status_code == 200 and weights.json()["output"] == 1.5, weights.text


def test_a_package_whose_example_fails_is_refused_and_leaves_nothing(node, tmp_path: Path) -> None:
    proc, cwd = node
    namespace = "sd.qd.broken"
    token = token_for(cwd, namespace)
    wheel = dept_wheel(
        tmp_path, name="dept-broken", module="dept_broken", source=plugin_source(broken=".upper()")
    )
    packages = cwd / "var" / "packages"
    envs_before = sorted(p.name for p in (packages / "envs").glob("*"))
    code_before = sorted(p.name for p in (packages / "code").glob("*"))
    job = author_upload(proc, token, wheel, namespace)
    assert job["status"] == "failed", job
    fields = [e["field"] for e in job["error"]["errors"]]
    assert "capabilities.greet.examples[0].output.text" in fields, job["error"]
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{proc.url}/v1/capabilities", params={"namespace": namespace},
                       headers=headers)  # fmt: skip
    assert listed.json()["total"] == 0
    assert sorted(p.name for p in (packages / "envs").glob("*")) == envs_before
    assert sorted(p.name for p in (packages / "code").glob("*")) == code_before
    assert not list((packages / "uploads").glob("*"))
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'var' / 'mlflow' / 'mlflow.db'}")
    assert not [m.name for m in mlflow.search_registered_models() if m.name.startswith(namespace)]


def test_the_same_archive_is_published_once(node, tmp_path: Path) -> None:
    proc, cwd = node
    namespace = "sd.qd.twice"
    token = token_for(cwd, namespace)
    wheel = dept_wheel(tmp_path, name="dept-twice", module="dept_twice")
    assert author_upload(proc, token, wheel, namespace)["status"] == "succeeded"
    again = author_upload(proc, token, wheel, namespace)
    assert again["status"] == "failed", again
    assert again["error"]["status"] == 409 and "published already" in again["error"]["detail"]


# ---------------------------------------------------------------- refusals leave nothing


REGISTRY_TABLES = (
    "namespace", "capability", "capability_version", "capability_tag", "change",
    "package", "package_version",
)  # fmt: skip


def node_state(cwd: Path) -> dict[str, list[str]]:
    """Everything a publish could leave behind at the node: registry rows, MLflow
    models, runs and artifact files, unpacked code, environments and uploads."""
    var = cwd / "var"
    with sqlite3.connect(var / "registry.db") as db:
        # The node's own daily usage items (appended to the change log by a background
        # loop whenever its figures change) are not something a publish leaves behind.
        only = {"change": " WHERE entity != 'usage'"}
        rows = {
            table: sorted(str(r) for r in db.execute(f"SELECT * FROM {table}{only.get(table, '')}"))
            for table in REGISTRY_TABLES
        }
    rows["mlflow.registered_models"] = rows["mlflow.runs"] = []
    if (var / "mlflow" / "mlflow.db").exists():  # MLflow's store is made on first use
        with sqlite3.connect(f"file:{var / 'mlflow' / 'mlflow.db'}?mode=ro", uri=True) as db:
            models = db.execute("SELECT name FROM registered_models ORDER BY name")
            rows["mlflow.registered_models"] = [r[0] for r in models]
            runs = db.execute("SELECT run_uuid FROM runs ORDER BY 1")
            rows["mlflow.runs"] = [r[0] for r in runs]
    packages = var / "packages"
    for what, folder in (
        ("artifacts", var / "mlflow" / "artifacts"),
        ("code", packages / "code"),
        ("envs", packages / "envs"),
        ("uploads", packages / "uploads"),
    ):
        rows[what] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    return rows


def _raw_upload(url: str, token: str, wheel: Path, namespace: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/namespaces/{namespace}/packages",
        params={"filename": wheel.name},
        content=wheel.read_bytes(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
        timeout=60,
    )


def _import_error(tmp: Path) -> Path:
    source = plugin_source().replace(
        "from yunnao_testdep_greeting import greet", "import dept_refused.missing_helper"
    )
    return dept_wheel(tmp, name="dept-refused", module="dept_refused", source=source)


def _escaping(tmp: Path) -> Path:
    return dept_wheel(
        tmp, name="dept-refused", module="dept_refused",
        raw=((zipfile.ZipInfo("dept_refused/../../evil.py"), b"print('out')"),),
    )  # fmt: skip


def _link_out(tmp: Path) -> Path:

    link = zipfile.ZipInfo("dept_refused/key.pem")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return dept_wheel(
        tmp, name="dept-refused", module="dept_refused", raw=((link, b"../../var/node_key.pem"),)
    )


def _failing_example(tmp: Path) -> Path:
    source = plugin_source(broken=".upper()")
    return dept_wheel(tmp, name="dept-refused", module="dept_refused", source=source)


def _conflict(tmp: Path) -> Path:
    return dept_wheel(
        tmp, name="dept-refused", module="dept_refused", requires=(f"{DEP}>=1.0", "numpy<2")
    )


def _too_big(tmp: Path) -> Path:
    return dept_wheel(
        tmp, name="dept-refused", module="dept_refused",
        raw=((zipfile.ZipInfo("dept_refused/weights.bin"), os.urandom(LIMIT)),),
    )  # fmt: skip


# (how the archive is made, the HTTP status of the upload or of the job's problem, the
# field the problem names)
REFUSALS = {
    "import error": (_import_error, 422, "plugins.dept_hello"),
    "failing example": (
        _failing_example,
        422,
        "capabilities.greet.examples[0].output.text",
    ),
    "path out of the archive": (_escaping, 422, "file"),
    "link out of the archive": (_link_out, 422, "file"),
    "over the size limit": (_too_big, 413, None),
    "requirement against the node's pins": (_conflict, 422, "requirements"),
    "token of another namespace": (dept_wheel, 403, None),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_leaves_nothing_behind(node, tmp_path: Path, case: str) -> None:
    proc, cwd = node
    make, status, field = REFUSALS[case]
    namespace = "sd.qd.refused"
    token = token_for(cwd, "sd.qd.other" if case == "token of another namespace" else namespace)
    wheel = make(tmp_path)
    before = node_state(cwd)
    resp = _raw_upload(proc.url, token, wheel, namespace)
    if resp.status_code == 202:
        job = resp.json()
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 240
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
            job = httpx.get(f"{proc.url}/v1/publish-jobs/{job['id']}", headers=headers).json()
        assert job["status"] == "failed", job
        problem = job["error"]
    else:
        problem = resp.json()
    assert problem["status"] == status, problem
    if field is not None:
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    assert node_state(cwd) == before
