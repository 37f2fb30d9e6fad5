"""A real ``yunnao serve`` process, driven over HTTP and through the ``yunnao`` CLI, on its
embedded defaults and on a real PostgreSQL store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from yunnao.registry import migrate

pytestmark = pytest.mark.slow

NS = "sd.qd.traffic"


def cli(*args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [YUNNAO, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(request, tmp_path_factory) -> Iterator[tuple[YunnaoProcess, Path]]:
    """A node process; for PostgreSQL the store is first created with `yunnao db upgrade`."""
    cwd = tmp_path_factory.mktemp(f"node-{request.param}")
    args = ["--node-id", "sd.qd"]
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        url = pg.create_database(f"served_{os.getpid()}")
        out = cli("db", "upgrade", "--database-url", url, cwd=cwd).stdout
        assert f"schema empty -> {migrate.head()}" in out
        args += ["--database-url", url]
    node = YunnaoProcess(cwd, *args).start()
    yield node, cwd
    assert node.stop(), node.output()


def token(cwd: Path, role: str = "author", *scopes: str) -> str:
    args = ["token", "create", "--node-id", "sd.qd", "--role", role]
    for s in scopes or (NS,):
        args += ["--namespace", s]
    return cli(*args, cwd=cwd).stdout.strip()


def test_publish_over_http_then_find_it_with_the_cli(served) -> None:
    node, cwd = served
    auth = {"Authorization": f"Bearer {token(cwd)}"}
    body = {
        "version": "1.2.0",
        "title": "交通流量预测",
        "summary": "Traffic flow forecast",
        "classification": "public",
        "domain": "governance",
        "tags": ["traffic"],
    }
    resp = httpx.post(f"{node.url}/v1/capabilities/{NS}/flow/versions", json=body, headers=auth)
    assert resp.status_code == 201, resp.text

    found = httpx.get(f"{node.url}/v1/capabilities", params={"q": "交通"}).json()
    assert [i["id"] for i in found["items"]] == [f"{NS}/flow"]

    out = json.loads(
        cli(
            "search", "traffic", "--domain", "governance", "--json", "--url", node.url, cwd=cwd
        ).stdout
    )
    assert out["total"] == 1 and out["items"][0]["latest_version"] == "1.2.0"
    table = cli("search", "交通", "--facets", "--url", node.url, cwd=cwd).stdout
    assert f"{NS}/flow" in table and "domain: governance (1)" in table

    shown = json.loads(
        cli("show", f"{NS}/flow@1.2.0", "--json", cwd=cwd, YUNNAO_URL=node.url).stdout
    )
    assert shown["version"] == "1.2.0" and shown["runtime"]["type"] == "inprocess"
    human = cli("show", f"{NS}/flow", "--url", node.url, cwd=cwd).stdout
    assert "交通流量预测" in human and "1.2.0" in human


def test_cli_reports_problems_clearly(served) -> None:
    node, cwd = served
    missing = cli("show", f"{NS}/nope", "--url", node.url, cwd=cwd, check=False)
    assert missing.returncode == 1
    assert "404 Not found: no capability sd.qd.traffic/nope" in missing.stderr
    bad = cli("search", "--domain", "sports", "--url", node.url, cwd=cwd, check=False)
    assert bad.returncode == 1 and "domain" in bad.stderr
    down = cli("search", "--url", "http://127.0.0.1:9", cwd=cwd, check=False)
    assert down.returncode == 1 and "cannot reach node" in down.stderr


def test_tokens_from_the_cli_are_scoped(served) -> None:
    node, cwd = served
    consumer = {"Authorization": f"Bearer {token(cwd, 'consumer')}"}
    resp = httpx.post(
        f"{node.url}/v1/capabilities/{NS}/x/versions",
        json={"version": "1.0.0", "title": "t"},
        headers=consumer,
    )
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"


def test_embedded_defaults_live_under_var(tmp_path: Path) -> None:
    node = YunnaoProcess(tmp_path).start()  # no options at all
    try:
        assert httpx.get(node.url + "/healthz").json()["node"] == "local"
        assert (tmp_path / "var" / "registry.db").exists()
        key = tmp_path / "var" / "node_key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert httpx.get(node.url + "/openapi.json").json()["openapi"] == "3.1.0"
    finally:
        assert node.stop(), node.output()


@pytest.mark.postgres
def test_serve_refuses_an_unmigrated_postgres_store(postgres, tmp_path: Path) -> None:
    url = postgres.create_database("never_upgraded")
    try:
        done = subprocess.run(
            [YUNNAO, "serve", "--database-url", url],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "run `yunnao db upgrade` first" in done.stderr
        assert "Traceback" not in done.stderr
        current = cli("db", "current", "--database-url", url, cwd=tmp_path).stdout
        assert "at empty" in current and "needs `yunnao db upgrade`" in current
    finally:
        postgres.drop_database("never_upgraded")


def test_every_command_explains_itself(tmp_path: Path) -> None:
    for cmd in (
        ["--help"],
        ["serve", "--help"],
        ["db", "upgrade", "--help"],
        ["db", "current", "--help"],
        ["search", "--help"],
        ["show", "--help"],
        ["token", "create", "--help"],
    ):
        out = cli(*cmd, cwd=tmp_path).stdout
        assert "Usage: yunnao" in out
    assert "YUNNAO_DATABASE_URL" in cli("serve", "--help", cwd=tmp_path).stdout
    bad = cli("serve", "--node-id", "Not Valid", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "invalid node id" in bad.stderr


def test_token_create_validates_its_input(tmp_path: Path) -> None:
    ttl = cli("token", "create", "--role", "author", "--ttl", "soon", cwd=tmp_path, check=False)
    assert ttl.returncode == 2 and "--ttl" in ttl.stderr
    role = cli("token", "create", "--role", "root", cwd=tmp_path, check=False)
    assert role.returncode == 2 and "--role" in role.stderr
    dept = cli(
        "token", "create", "--role", "author", "--department", "x", cwd=tmp_path, check=False
    )
    assert dept.returncode == 2 and "--department" in dept.stderr
    ok = json.loads(
        cli(
            "token",
            "create",
            "--role",
            "author",
            "--namespace",
            "local.x",
            "--department",
            "local.x",
            "--ttl",
            "2h",
            "--json",
            cwd=tmp_path,
        ).stdout
    )
    assert ok["expires_in_seconds"] == 7200 and ok["namespaces"] == ["local.x"]
    assert ok["department"] == "local.x"
    claims = jwt.decode(ok["token"], options={"verify_signature": False})
    assert claims["dept"] == "local.x"


def test_api_keys_from_the_cli(served) -> None:
    node, cwd = served
    made = json.loads(
        cli(
            "key", "create", "dashboard", "--scope", NS, "--rate-limit", "100/min", "--json",
            "--url", node.url, "--node-id", "sd.qd", cwd=cwd,
        ).stdout
    )  # fmt: skip
    assert made["rate_limit"] == "100/min"
    key = {"Authorization": f"Bearer {made['key']}"}
    assert httpx.get(f"{node.url}/v1/capabilities", headers=key).status_code == 200
    listed = cli("key", "list", "--url", node.url, "--node-id", "sd.qd", cwd=cwd).stdout
    assert made["id"] in listed and made["key"] not in listed
    cli("key", "revoke", made["id"], "--url", node.url, "--node-id", "sd.qd", cwd=cwd)
    assert httpx.get(f"{node.url}/v1/capabilities", headers=key).status_code == 401


def test_usage_report_from_the_cli(served) -> None:
    node, cwd = served
    out = cli("usage", "--by", "node", "--json", "--url", node.url, "--node-id", "sd.qd", cwd=cwd)
    report = json.loads(out.stdout)
    assert report["by"] == "node" and isinstance(report["items"], list)
    table = cli("usage", "--url", node.url, "--node-id", "sd.qd", cwd=cwd).stdout
    assert "usage" in table and "by capability" in table
