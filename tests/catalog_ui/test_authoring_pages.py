"""The author's pages in process: uploading a package from the browser, following its
publish job, deprecating and retiring versions, and editing a capability's metadata;
each refused for anonymous visitors, other namespaces' authors, posts from other sites,
stale forms and bad files, with the problem's text on the page."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import NODE_ID, Node
from yunnao.catalog_ui import authors, i18n
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE
from yunnao.registry.packages.jobs import JOB

NS = f"{NODE_ID}.traffic"
OTHER = f"{NODE_ID}.env"
WHEEL = "traffic_tools-1.0.0-py3-none-any.whl"
UI = Path(__file__).resolve().parents[2] / "catalog_ui"
EVIL = {"Origin": "http://evil.example"}


def sign_in(node: Node, role: str = "author", *scopes: str, subject: str = "王芳") -> None:
    """A web page session, as the sign-in makes it (audience <node>#ui)."""
    key = tokens.load_or_create_key(node.settings.key_path)
    who = Identity(subject=subject, role=role, scopes=scopes or (NS,), issuer=NODE_ID, node=NODE_ID)
    session = tokens.issue_session(key, node_id=NODE_ID, identity=who, ttl=timedelta(hours=1))
    node.client.cookies.set(SESSION_COOKIE, session)


def uploads_left(node: Node) -> list[Path]:
    folder = node.settings.data_dir / "packages" / "uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


def upload(node: Node, body: bytes = b"PK\x03\x04 not a wheel", **kw):
    data = {"namespace": kw.pop("namespace", NS), **kw.pop("data", {})}
    files = {"file": (kw.pop("filename", WHEEL), body, "application/octet-stream")}
    return node.client.post("/publish", data=data, files=files, follow_redirects=False, **kw)


def job_page(node: Node, location: str, until: tuple[str, ...] = ("succeeded", "failed")):
    """The job's page, once the job is in one of the ``until`` states."""
    deadline = time.monotonic() + 60
    while True:
        page = node.client.get(location)
        status = re.search(r'id="job-status" data-status="(\w+)"', page.text)
        if page.status_code != 200 or (status and status.group(1) in until):
            return page
        assert time.monotonic() < deadline, page.text
        time.sleep(0.2)


# ---------------------------------------------------------------- upload


def test_the_publish_page_offers_the_namespaces_one_may_publish_into(sqlite_node: Node) -> None:
    client = sqlite_node.client
    assert 'href="/publish"' not in client.get("/").text
    anonymous = client.get("/publish")
    assert anonymous.status_code == 401 and "sign in to publish" in anonymous.text
    sign_in(sqlite_node, "consumer", NODE_ID)
    assert 'href="/publish"' not in client.get("/").text
    consumer = client.get("/publish")
    assert consumer.status_code == 403 and "needs admin or author" in consumer.text
    sign_in(sqlite_node, "author", NS)
    assert '<a href="/publish">发布</a>' in client.get("/").text
    page = client.get("/publish")
    assert page.status_code == 200 and "上传发布" in page.text
    assert f'<option value="{NS}">' in page.text and 'name="other"' not in page.text
    assert "还没有发布任务" in page.text
    # An author of the whole node picks one of its known departments, or names another.
    sqlite_node.publish(OTHER, "air")
    sign_in(sqlite_node, "author", NODE_ID)
    page = client.get("/publish")
    assert f'<option value="{OTHER}">' in page.text and 'name="other"' in page.text
    # Another node's author may publish nothing here.
    sign_in(sqlite_node, "author", "sd.yt.traffic")
    assert 'href="/publish"' not in client.get("/").text
    assert 'id="no-namespace"' in client.get("/publish").text
    # The page speaks English on request.
    client.cookies.set(i18n.COOKIE, "en")
    assert "<h1>Publish by upload</h1>" in client.get("/publish").text


def test_an_upload_from_the_page_becomes_a_publish_job(sqlite_node: Node) -> None:
    sign_in(sqlite_node, "author", NS)
    sent = upload(sqlite_node)
    assert sent.status_code == 303, sent.text
    location = sent.headers["location"]
    job_id = location.rsplit("/", 1)[-1]
    assert location == f"/publish/jobs/{job_id}"
    # The same job as the API shows it, to an author of the namespace with a token.
    api = sqlite_node.client.get(
        f"/v1/publish-jobs/{job_id}", headers=sqlite_node.auth("author", NS)
    )
    assert api.status_code == 200 and api.json()["filename"] == WHEEL
    assert api.json()["log"][0]["step"] == "received"
    # Not a wheel at all: the job fails, and its page says why, without refreshing.
    page = job_page(sqlite_node, location)
    assert 'data-status="failed"' in page.text and "失败" in page.text
    assert "未能发布的原因" in page.text and 'http-equiv="refresh"' not in page.text
    assert re.search(r'<td class="nowrap">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>', page.text)
    # While a job runs, its page refreshes itself.
    jobs = sqlite_node.client.app.state.uploads.jobs
    with jobs.engine.begin() as conn:
        conn.execute(sa.update(JOB).where(JOB.c.id == job_id).values(status="running"))
    live = sqlite_node.client.get(location).text
    assert '<meta http-equiv="refresh" content="2">' in live and "进行中" in live
    # The publish page lists it among the recent jobs.
    listed = sqlite_node.client.get("/publish").text
    assert f'data-job="{job_id}"' in listed and WHEEL in listed


def test_only_the_namespace_s_authors_see_a_job(sqlite_node: Node) -> None:
    sign_in(sqlite_node, "author", NS)
    location = upload(sqlite_node).headers["location"]
    sign_in(sqlite_node, "author", OTHER, subject="李雷")
    assert sqlite_node.client.get(location).status_code == 404
    sign_in(sqlite_node, "consumer", NODE_ID, subject="李雷")
    assert sqlite_node.client.get(location).status_code == 404
    sqlite_node.client.cookies.clear()
    assert sqlite_node.client.get(location).status_code == 404
    sign_in(sqlite_node, "admin", NODE_ID, subject="管理员")
    assert sqlite_node.client.get(location).status_code == 200
    assert sqlite_node.client.get("/publish/jobs/nosuchjob").status_code == 404


def test_uploads_the_page_refuses_leave_nothing(sqlite_node: Node) -> None:
    client = sqlite_node.client
    anonymous = upload(sqlite_node)
    assert anonymous.status_code == 401
    sign_in(sqlite_node, "author", NS)
    other = upload(sqlite_node, namespace=OTHER)
    assert other.status_code == 403 and f"namespace &#39;{OTHER}&#39;" in other.text
    remote = upload(sqlite_node, namespace="sd.yt.traffic", data={})
    assert remote.status_code == 403
    crossed = upload(sqlite_node, headers=EVIL)
    assert crossed.status_code == 403 and "this node&#39;s own pages" in crossed.text
    named = upload(sqlite_node, filename="setup.exe")
    assert named.status_code == 422 and "filename" in named.text
    empty = upload(sqlite_node, body=b"")
    assert empty.status_code == 422 and "empty" in empty.text
    none = client.post("/publish", data={"namespace": NS}, follow_redirects=False)
    assert none.status_code == 422 and "choose the package" in none.text
    client.app.state.uploads.max_bytes = 1024
    big = upload(sqlite_node, body=b"x" * 2048)
    assert big.status_code == 413 and "1024-byte limit" in big.text and "文件过大" in big.text
    huge = upload(sqlite_node, body=b"x" * (200 << 10))  # past the form's room as well
    assert huge.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        yield b"--b\r\nContent-Disposition: form-data; name=namespace\r\n\r\n" + NS.encode()
        yield b"\r\n--b\r\nContent-Disposition: form-data; name=file; filename=" + WHEEL.encode()
        yield b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        for _ in range(100):
            yield b"x" * 4096

    streamed = client.post(
        "/publish", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert streamed.status_code == 413 and "byte limit" in streamed.text
    assert "Traceback" not in big.text + named.text
    assert uploads_left(sqlite_node) == []
    listed = client.get(f"/v1/namespaces/{NS}/publish-jobs", headers=sqlite_node.auth("author", NS))
    assert listed.json()["jobs"] == []


# ---------------------------------------------------------------- lifecycle


def _etag(html: str) -> str:
    found = re.search(r'name="etag" value="([^"]+)"', html)
    assert found, html
    return found.group(1).replace("&#34;", '"')


def _status(node: Node, name: str, version: str = "1.0.0") -> str:
    resp = node.client.get(
        f"/v1/capabilities/{NS}/{name}/versions/{version}", headers=node.auth("author", NS)
    )
    return resp.json()["status"]


def test_an_author_deprecates_then_retires_a_version_after_confirming(sqlite_node: Node) -> None:
    assert sqlite_node.publish(NS, "flow", title="流量预测").status_code == 201
    client = sqlite_node.client
    assert "version-actions" not in client.get(f"/c/{NS}/flow").text  # anonymous
    sign_in(sqlite_node, "consumer", NODE_ID)
    assert "version-actions" not in client.get(f"/c/{NS}/flow").text
    sign_in(sqlite_node, "author", NS)
    page = client.get(f"/c/{NS}/flow").text
    assert 'data-move="deprecated"' in page and ">弃用</a>" in page and 'id="edit"' in page
    assert 'data-move="retired"' not in page  # a published version is deprecated first
    confirm = client.get(f"/c/{NS}/flow/versions/1.0.0/lifecycle?status=deprecated")
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    assert _status(sqlite_node, "flow") == "published"  # asking is not doing
    form = {"status": "deprecated", "etag": _etag(confirm.text)}
    done = client.post(f"/c/{NS}/flow/versions/1.0.0/lifecycle", data=form, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith(f"/c/{NS}/flow")
    assert _status(sqlite_node, "flow") == "deprecated"
    page = client.get(f"/c/{NS}/flow").text
    assert ">下线</a>" in page and ">恢复发布</a>" in page
    # The same confirmation sent again is stale now: refused, nothing changes.
    url = f"/c/{NS}/flow/versions/1.0.0/lifecycle"
    stale = client.post(url, data={**form, "status": "retired"})
    assert stale.status_code == 412 and "has changed since you read it" in stale.text
    assert _status(sqlite_node, "flow") == "deprecated"
    confirm = client.get(f"/c/{NS}/flow/versions/1.0.0/lifecycle?status=retired")
    assert "不可撤销" in confirm.text
    retired = client.post(
        f"/c/{NS}/flow/versions/1.0.0/lifecycle",
        data={"status": "retired", "etag": _etag(confirm.text)},
        follow_redirects=False,
    )
    assert retired.status_code == 303 and _status(sqlite_node, "flow") == "retired"
    # Nothing leaves retired.
    illegal = client.get(f"/c/{NS}/flow/versions/1.0.0/lifecycle?status=published")
    assert illegal.status_code == 409 and "retired is final" in illegal.text


def test_lifecycle_refusals(sqlite_node: Node) -> None:
    sqlite_node.publish(NS, "flow")
    client = sqlite_node.client
    url = f"/c/{NS}/flow/versions/1.0.0/lifecycle"
    assert client.get(f"{url}?status=deprecated").status_code == 401
    assert client.post(url, data={"status": "deprecated", "etag": "*"}).status_code == 401
    sign_in(sqlite_node, "author", OTHER)
    refused = client.post(url, data={"status": "deprecated", "etag": "*"})
    assert refused.status_code == 403 and f"namespace &#39;{NS}&#39;" in refused.text
    assert client.get(f"{url}?status=deprecated").status_code == 403
    sign_in(sqlite_node, "author", NS)
    crossed = client.post(url, data={"status": "deprecated", "etag": "*"}, headers=EVIL)
    assert crossed.status_code == 403
    bad = client.post(url, data={"status": "gone", "etag": "*"})
    assert bad.status_code == 422 and "status" in bad.text
    unsigned = client.post(url, data={"status": "deprecated"})
    assert unsigned.status_code == 422 and "etag" in unsigned.text
    assert client.get(f"{url}?status=retired").status_code == 409
    missing = url.replace("/flow/", "/nothing/")
    assert client.get(f"{missing}?status=deprecated").status_code == 404
    assert _status(sqlite_node, "flow") == "published"


# ---------------------------------------------------------------- metadata


def test_an_author_edits_the_metadata_and_a_stale_edit_is_refused(sqlite_node: Node) -> None:
    sqlite_node.publish(
        NS, "flow", title="流量预测", classification="internal", contact="0532-1", tags=["交通"]
    )
    client = sqlite_node.client
    sign_in(sqlite_node, "author", NS)
    form_page = client.get(f"/c/{NS}/flow/edit")
    assert form_page.status_code == 200 and 'value="流量预测"' in form_page.text
    etag = _etag(form_page.text)
    fields = {
        "title": "路口流量预测",
        "summary": "每小时",
        "description": "# 说明\r\n\r\n按小时预测。",
        "tags": "交通，预测, 路口",
        "contact": "traffic@qd.example",
        "etag": etag,
    }
    saved = client.post(f"/c/{NS}/flow/edit", data=fields, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    cap = client.get(f"/v1/capabilities/{NS}/flow", headers=sqlite_node.auth("author", NS)).json()
    assert cap["title"] == "路口流量预测" and cap["tags"] == ["交通", "预测", "路口"]
    assert cap["description"] == "# 说明\n\n按小时预测。" and cap["contact"] == "traffic@qd.example"
    assert cap["classification"] == "internal"  # what the form does not show stays
    assert "<h1>路口流量预测</h1>" in client.get(f"/c/{NS}/flow").text
    # The same form again: someone (here, the author) changed it since; nothing is saved.
    stale = client.post(f"/c/{NS}/flow/edit", data={**fields, "title": "旧的"})
    assert stale.status_code == 412 and "changed by someone else" in stale.text
    assert "内容已变更" in stale.text
    again = client.get(f"/v1/capabilities/{NS}/flow", headers=sqlite_node.auth("author", NS))
    assert again.json()["title"] == "路口流量预测"


def test_edit_refusals(sqlite_node: Node) -> None:
    sqlite_node.publish(NS, "flow")
    client = sqlite_node.client
    assert client.get(f"/c/{NS}/flow/edit").status_code == 401
    sign_in(sqlite_node, "consumer", NODE_ID)
    assert client.get(f"/c/{NS}/flow/edit").status_code == 403
    sign_in(sqlite_node, "author", OTHER)
    assert client.post(f"/c/{NS}/flow/edit", data={"title": "x", "etag": "*"}).status_code == 403
    sign_in(sqlite_node, "author", NS)
    etag = _etag(client.get(f"/c/{NS}/flow/edit").text)
    blank = client.post(f"/c/{NS}/flow/edit", data={"title": "  ", "etag": etag})
    assert blank.status_code == 422 and "title" in blank.text
    tags = client.post(f"/c/{NS}/flow/edit", data={"tags": "a" * 60, "etag": etag})
    assert tags.status_code == 422 and "tags[0]" in tags.text
    crossed = client.post(f"/c/{NS}/flow/edit", data={"title": "x", "etag": etag}, headers=EVIL)
    assert crossed.status_code == 403
    assert "Traceback" not in blank.text + tags.text


# ---------------------------------------------------------------- helpers and texts


def test_what_the_pages_offer_follows_the_policy() -> None:
    author = Identity(subject="a", role="author", scopes=(NS,), issuer=NODE_ID, node=NODE_ID)
    node_author = Identity(subject="a", role="author", scopes=(NODE_ID,), issuer=NODE_ID)
    city_admin = Identity(subject="a", role="admin", scopes=("sd",), issuer=NODE_ID)
    operator = Identity(subject="o", role="operator", scopes=(NODE_ID,), issuer=NODE_ID)
    assert authors.may_publish(author, NODE_ID) and authors.may_publish(city_admin, NODE_ID)
    assert not authors.may_publish(operator, NODE_ID)
    assert authors.publish_namespaces(author, NODE_ID, [OTHER]) == [NS]
    assert authors.publish_namespaces(node_author, NODE_ID, [OTHER, "sd.yt.x"]) == [OTHER]
    assert authors.covers_node(node_author, NODE_ID) and not authors.covers_node(author, NODE_ID)
    assert authors.beijing("2025-03-01T06:05:09+00:00") == "2025-03-01 14:05:09"
    assert authors.beijing(None) == "-"


def _used_messages() -> set[str]:
    found = set()
    for path in [*UI.glob("templates/*.html"), *UI.glob("*.py")]:
        source = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\(\s*"((?:[^"\\]|\\.)*)"', source))
        found |= set(re.findall(r"_\(\s*'((?:[^'\\]|\\.)*)'", source))
    return found - {"facet:", "..."}


@pytest.mark.parametrize("title", ["Precondition failed", "Payload too large", "Conflict"])
def test_the_author_pages_messages_are_translated(title: str) -> None:
    zh = i18n.catalog("zh-CN")
    missing = sorted(m for m in _used_messages() if m not in zh)
    assert not missing, missing
    assert title in zh  # problem titles the author's pages show
