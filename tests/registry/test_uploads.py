"""Receiving an uploaded package over HTTP: who may upload into which namespace, what
the archive's request must look like, and the publish job's resource (seen only by the
uploader and the namespace's writers)."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.app import create_app
from yunnao.settings import Settings

NS = f"{NODE_ID}.traffic"
WHEEL = "traffic_tools-1.0.0-py3-none-any.whl"
OCTET = {"Content-Type": "application/octet-stream"}


def upload(node: Node, body: bytes, *, namespace: str = NS, filename: str = WHEEL, headers=None):
    return node.client.post(
        f"/v1/namespaces/{namespace}/packages",
        params={"filename": filename},
        content=body,
        headers={**OCTET, **(headers if headers is not None else node.auth("author", NS))},
    )


def uploads_dir(node: Node) -> Path:
    return node.settings.data_dir / "packages" / "uploads"


def leftovers(node: Node) -> list[Path]:
    folder = uploads_dir(node)
    return sorted(folder.iterdir()) if folder.exists() else []


def test_an_author_uploads_into_their_namespace_and_follows_the_job(sqlite_node: Node) -> None:
    resp = upload(sqlite_node, b"PK\x03\x04 not really a wheel")
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/publish-jobs/{job['id']}"
    assert job["namespace"] == NS and job["filename"] == WHEEL
    assert job["status"] == "queued" and len(job["package"]) == 64
    assert job["log"][0]["step"] == "received"
    again = sqlite_node.client.get(resp.headers["location"], headers=sqlite_node.auth("author", NS))
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    listed = sqlite_node.client.get(
        f"/v1/namespaces/{NS}/publish-jobs", headers=sqlite_node.auth("author", NS)
    )
    assert [j["id"] for j in listed.json()["jobs"]] == [job["id"]]


def test_others_do_not_see_a_job(sqlite_node: Node) -> None:
    job = upload(sqlite_node, b"PK\x03\x04").json()
    token = sqlite_node.token("author", f"{NODE_ID}.env", subject="someone-else")
    other = {"Authorization": f"Bearer {token}"}
    assert_problem(sqlite_node.client.get(f"/v1/publish-jobs/{job['id']}", headers=other), 404)
    assert_problem(sqlite_node.client.get(f"/v1/publish-jobs/{job['id']}"), 404)


def test_a_token_of_another_namespace_uploads_nothing(sqlite_node: Node) -> None:
    other = {"Authorization": f"Bearer {sqlite_node.token('author', f'{NODE_ID}.env')}"}
    assert_problem(upload(sqlite_node, b"PK\x03\x04", headers=other), 403)
    assert_problem(upload(sqlite_node, b"PK\x03\x04", headers={}), 401)
    reader = {"Authorization": f"Bearer {sqlite_node.token('consumer', NS)}"}
    assert_problem(upload(sqlite_node, b"PK\x03\x04", headers=reader), 403)
    assert leftovers(sqlite_node) == []


def test_bad_requests_name_what_is_wrong(sqlite_node: Node) -> None:
    for filename in (
        "../evil.whl",
        "x.exe",
        "service.zip",
        ".hidden.whl",
        "a b.whl",
        "x" * 300 + ".whl",
    ):
        problem = assert_problem(upload(sqlite_node, b"PK", filename=filename), 422)
        assert problem["errors"][0]["field"] == "filename", filename
    problem = assert_problem(upload(sqlite_node, b""), 422)
    assert problem["errors"][0]["field"] == "file"
    resp = sqlite_node.client.post(
        f"/v1/namespaces/{NS}/packages",
        params={"filename": WHEEL},
        content=b"PK",
        headers={"Content-Type": "application/json", **sqlite_node.auth("author", NS)},
    )
    assert_problem(resp, 415)
    missing = sqlite_node.client.post(
        f"/v1/namespaces/{NS}/packages", content=b"PK", headers={**OCTET, **sqlite_node.auth()}
    )
    assert_problem(missing, 400)
    assert leftovers(sqlite_node) == []


def test_an_archive_over_the_limit_is_refused_and_not_kept(sqlite_url: str, tmp_path: Path):
    settings = Settings(
        node_id=NODE_ID, data_dir=tmp_path / "node", database_url=sqlite_url, max_package_bytes=4096
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        node = Node(client=client, settings=settings)
        assert_problem(upload(node, b"x" * 5000), 413)

        def chunks():  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b"x" * 1000

        streamed = client.post(
            f"/v1/namespaces/{NS}/packages",
            params={"filename": WHEEL},
            content=chunks(),
            headers={**OCTET, **node.auth("author", NS)},
        )
        assert_problem(streamed, 413)
        assert leftovers(node) == []
        assert upload(node, b"x" * 4000).status_code == 202


def test_the_route_is_in_the_openapi_document(sqlite_node: Node) -> None:
    spec = sqlite_node.client.get("/openapi.json").json()
    op = spec["paths"]["/v1/namespaces/{namespace}/packages"]["post"]
    assert "application/octet-stream" in op["requestBody"]["content"]


def test_a_namespace_of_another_node_is_not_published_here(sqlite_node: Node) -> None:
    """The city does not publish its districts' namespaces, whatever the token's scope."""
    district = f"{NODE_ID}.shinan.traffic"
    headers = sqlite_node.auth("author", district)
    problem = assert_problem(upload(sqlite_node, b"PK", namespace=district, headers=headers), 403)
    assert problem["errors"][0]["field"] == "namespace"
    assert leftovers(sqlite_node) == []
