"""The author's command line against a real ``yunnao serve`` node: ``yunnao`` run as its
own process, from a folder of its own, with nothing but the node's URL and a token (no
profile, no node files): it builds a project folder into a wheel, uploads it and follows
the job, then lists versions, edits the metadata, deprecates and retires a version,
shows the publish job and compares two versions. The node's state is checked over HTTP
after each command. A package that fails to import is refused, and the author sees the
traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.end_to_end.test_upload import node, token_for  # noqa: F401
from tests.realservers.yunnao_node import YUNNAO
from tests.registry.test_packages import PYPROJECT, index, plugin_source  # noqa: F401

pytestmark = pytest.mark.slow

NS = "sd.qd.desk"


def project(root: Path, source: str) -> Path:
    """A plugin project folder as an author has it: pyproject.toml and the package."""
    (root / "dept_hello").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "dept_hello" / "__init__.py").write_text(source)
    (root / "dept_hello" / "weights.json").write_text('{"a": 1.5}')
    return root


def author_env(tmp_path: Path) -> dict[str, str]:
    """The author's environment: no YUNNAO_* variable, an empty configuration folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNNAO_")}
    env["YUNNAO_CONFIG_DIR"] = str(tmp_path / "config")
    return env


class Author:
    def __init__(self, url: str, token: str, tmp_path: Path) -> None:
        self.url, self.token = url, token
        self.cwd = tmp_path / "desk"
        self.cwd.mkdir()
        self.env = author_env(tmp_path)

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [YUNNAO, *args, "--url", self.url, "--token", self.token],
            cwd=self.cwd, env=self.env, input=stdin, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    def get(self, path: str) -> dict:
        resp = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code == 200, resp.text
        return resp.json()


def test_an_author_publishes_a_project_folder_and_manages_it_from_the_command_line(
    node,  # noqa: F811
    tmp_path: Path,
) -> None:
    proc, cwd = node
    author = Author(proc.url, token_for(cwd, NS), tmp_path)
    folder = project(tmp_path / "dept-hello", plugin_source())

    done = author.run("publish", str(folder), "--namespace", NS)
    assert done.returncode == 0, done.stderr
    assert f"{NS}/greet@1.0.0" in done.stdout and f"{NS}/weights@2.0.0" in done.stdout
    assert "built dept_hello-1.0.0-py3-none-any.whl" in done.stderr
    for step in ("received", "inspected", "published"):
        assert step in done.stderr, done.stderr
    version = author.get(f"/v1/capabilities/{NS}/greet/versions/1.0.0")
    assert (version["status"], version["runtime"]["type"]) == ("published", "sandbox")

    listed = author.run("versions", f"{NS}/greet", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)["items"]] == ["1.0.0"]

    edited = author.run("edit", f"{NS}/greet", "--title", "问候服务", "--tag", "a", "--tag", "b",
                        "--contact", "desk@qd.gov.cn", "--summary-en", "Greets")  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    cap = author.get(f"/v1/capabilities/{NS}/greet")
    assert (cap["title"], cap["tags"], cap["contact"]) == ("问候服务", ["a", "b"], "desk@qd.gov.cn")
    assert cap["summary_en"] == "Greets"

    deprecated = author.run("deprecate", f"{NS}/greet@1.0.0")
    assert deprecated.returncode == 0, deprecated.stderr
    assert author.get(f"/v1/capabilities/{NS}/greet/versions/1.0.0")["status"] == "deprecated"

    declined = author.run("retire", f"{NS}/greet@1.0.0", stdin="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert author.get(f"/v1/capabilities/{NS}/greet/versions/1.0.0")["status"] == "deprecated"
    retired = author.run("retire", f"{NS}/greet@1.0.0", "--yes")
    assert retired.returncode == 0, retired.stderr
    assert author.get(f"/v1/capabilities/{NS}/greet/versions/1.0.0")["status"] == "retired"

    jobs = author.run("publish-jobs", "list", NS, "--json")
    assert jobs.returncode == 0, jobs.stderr
    [job] = json.loads(jobs.stdout)["jobs"]
    assert job["status"] == "succeeded" and job["filename"] == "dept_hello-1.0.0-py3-none-any.whl"
    shown = author.run("publish-jobs", "show", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert "received" in shown.stderr and f"{NS}/weights@2.0.0" in shown.stdout

    # Two versions' differences, and what breaks callers (exit 1).
    out = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for number, schema in (("1.0.0", out), ("2.0.0", {"type": "object"})):
        resp = httpx.post(
            f"{author.url}/v1/capabilities/{NS}/plain/versions",
            json={"version": number, "title": "plain", "output_schema": schema},
            headers={"Authorization": f"Bearer {author.token}"},
        )
        assert resp.status_code == 201, resp.text
    compared = author.run("compare", f"{NS}/plain", "1.0.0", "2.0.0")
    assert compared.returncode == 1, compared.stderr
    assert "1 breaking changes" in compared.stdout and "output.n: removed" in compared.stdout
    assert "allowed: 2.0.0 is a new major" in compared.stdout
    same = author.run("compare", f"{NS}/plain", "2.0.0", "2.0.0", "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["compatible"] is True


def test_a_package_that_fails_to_import_is_refused_and_the_author_sees_the_traceback(
    node,  # noqa: F811
    tmp_path: Path,
) -> None:
    proc, cwd = node
    namespace = "sd.qd.deskbroken"
    author = Author(proc.url, token_for(cwd, namespace), tmp_path)
    source = (
        plugin_source()
        + "\n\ndef _setup():\n    raise RuntimeError('no weights here')\n\n_setup()\n"
    )
    folder = project(tmp_path / "dept-broken", source)

    done = author.run("publish", str(folder), "--namespace", namespace)
    assert done.returncode == 1, done.stdout
    assert "422" in done.stderr and "inspection" in done.stderr, done.stderr
    assert "RuntimeError: no weights here" in done.stderr and "_setup()" in done.stderr
    listed = httpx.get(f"{proc.url}/v1/capabilities", params={"namespace": namespace},
                       headers={"Authorization": f"Bearer {author.token}"})  # fmt: skip
    assert listed.json()["total"] == 0

    jobs = author.run("publish-jobs", "list", namespace, "--json")
    [job] = json.loads(jobs.stdout)["jobs"]
    shown = author.run("publish-jobs", "show", job["id"], "--json")
    assert shown.returncode == 1 and json.loads(shown.stdout)["status"] == "failed"
