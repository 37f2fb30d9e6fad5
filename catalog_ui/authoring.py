"""The author's pages: upload a package (``/publish``), follow its publish job
(``/publish/jobs/{id}``), move a version along its lifecycle and edit a capability's
metadata (``/c/{namespace}/{name}/...``).

A page session is no API credential (its audience is ``<node>#ui``), so these pages call
the code the API's routes call, in process, as the signed-in identity: the upload
route's :func:`~yunnao.registry.packages.api.check_publisher` and
:func:`~yunnao.registry.packages.api.start_job`, the policy's ``require`` and the
store's ``transition`` and ``update_metadata``. Forms post only from this site's pages
(``_check_origin``); every refusal is the error page with the problem's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message

from yunnao.plugins.errors import (
    BadRequest,
    FieldError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthorized,
    ValidationFailed,
    field_errors,
)
from yunnao.registry import lifecycle, schemas
from yunnao.registry.access import Action, Identity, require, require_role
from yunnao.registry.identity.middleware import identity_of
from yunnao.registry.packages.api import Uploads, check_publisher, start_job
from yunnao.registry.packages.jobs import JOB, check_filename, save
from yunnao.registry.tables import Namespace

from . import authors
from .pages import _check_origin, _page, _render, _run

# Room in a form's body for its other fields and the multipart framing.
FORM_SLACK = 64 << 10
FORM_LIMIT = 2 << 20  # the edit form: a description of up to 100,000 characters, encoded
RECENT_JOBS = 20
LIVE = ("queued", "running")
EDITABLE = ("title", "summary", "description", "tags", "contact")


def _signed_in(request: Request, doing: str) -> Identity:
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized(f"sign in to {doing}")
    return identity


def _titles(request: Request) -> dict[str, str]:
    """This node's namespaces and their titles ("" where there is none)."""
    node_id = request.app.state.settings.node_id
    with request.app.state.catalog.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Namespace.id, Namespace.title).where(Namespace.node_id == node_id)
        ).all()
    return {row.id: row.title for row in rows}


def _known(request: Request) -> dict[str, str]:
    """The namespaces the publish page may offer: this node's, and those publish jobs
    were sent to (a department whose first upload failed has no entry yet)."""
    with request.app.state.uploads.jobs.engine.connect() as conn:
        sent = conn.execute(sa.select(JOB.c.namespace).distinct()).scalars().all()
    return {**dict.fromkeys(sent, ""), **_titles(request)}


# ---------------------------------------------------------------- upload


def _choices(request: Request, identity: Identity) -> tuple[list[tuple[str, str]], list[dict]]:
    """The namespaces the caller may publish into (id, title), and their latest jobs."""
    node_id = request.app.state.settings.node_id
    titles = _known(request)
    spaces = authors.publish_namespaces(identity, node_id, titles)
    jobs = request.app.state.uploads.jobs
    recent = [j for ns in spaces[:50] for j in jobs.of_namespace(identity, ns, RECENT_JOBS)]
    recent.sort(key=lambda j: j["created_at"], reverse=True)
    return [(ns, titles.get(ns, "")) for ns in spaces], recent[:RECENT_JOBS]


def _limited(request: Request, limit: int) -> Request:
    """The request, refusing (413) a body past ``limit`` bytes as it arrives: the form
    parser spools what it reads, so nothing larger reaches the disk."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(f"the form exceeds the {limit}-byte limit")
        return message

    return Request(request.scope, receive)


async def _form(request: Request, limit: int, *, max_files: int = 0) -> FormData:
    """The posted form, read within ``limit`` bytes (413), malformed bodies a 400."""
    try:
        return await _limited(request, limit).form(max_files=max_files, max_fields=20)
    except HTTPException as exc:
        raise BadRequest(f"the form could not be read: {exc.detail}") from None


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    await upload.seek(0)
    while chunk := await upload.read(1 << 16):
        yield chunk


def _file_of(form: Any, max_bytes: int) -> tuple[UploadFile, str]:
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        why = "choose the package to upload: a .whl, a .tar.gz or a .bento file"
        raise ValidationFailed(f"file: {why}", errors=[FieldError("file", why)])
    # Browsers send the file's own name; some send a path: keep its last part.
    filename = check_filename(upload.filename.replace("\\", "/").rsplit("/", 1)[-1])
    if upload.size is not None and upload.size > max_bytes:
        raise PayloadTooLarge(f"the archive exceeds the {max_bytes}-byte limit")
    return upload, filename


@_page
async def publish(request: Request) -> Response:
    identity = _signed_in(request, "publish")
    require_role(identity, Action.PUBLISH)
    if request.method == "GET":
        spaces, recent = await _run(_choices, request, identity)
        node_id = request.app.state.settings.node_id
        return _render(
            request,
            "publish.html",
            spaces=spaces,
            any_namespace=authors.covers_node(identity, node_id),
            jobs=recent,
            titles=dict(spaces),
            when=authors.beijing,
            max_mb=round(request.app.state.uploads.max_bytes / (1 << 20), 1),
        )
    _check_origin(request)
    uploads: Uploads = request.app.state.uploads
    limit = uploads.max_bytes + FORM_SLACK
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the upload of {declared} bytes exceeds the {uploads.max_bytes}-byte limit"
        )
    form = await _form(request, limit, max_files=1)
    try:
        namespace = str(form.get("other") or "").strip() or str(form.get("namespace") or "")
        check_publisher(identity, namespace, request.app.state.settings.node_id)
        upload, filename = _file_of(form, uploads.max_bytes)
        job = await start_job(
            uploads,
            namespace,
            identity,
            lambda dest: save(_chunks(upload), dest, filename, uploads.max_bytes),
        )
    finally:
        await form.close()
    return RedirectResponse(f"/publish/jobs/{job['id']}", status_code=303)


@_page
async def publish_job(request: Request) -> Response:
    identity = identity_of(request)
    jobs = request.app.state.uploads.jobs
    job = await _run(jobs.get, identity, request.path_params["id"])
    titles = await _run(_titles, request)
    store = request.app.state.catalog.store
    published = []
    for item in job["result"] or []:
        ref = str(item.get("capability", ""))
        address, _, version = ref.partition("@")
        namespace, _, name = address.partition("/")
        try:
            cap, _etag = await _run(store.describe, identity, namespace, name)
            title = cap.title
        except NotFound:
            title = None
        published.append({"ref": ref, "url": f"/c/{address}", "title": title, "version": version})
    return _render(
        request,
        "publish_job.html",
        job=job,
        namespace_title=titles.get(job["namespace"], ""),
        published=published,
        refresh=job["status"] in LIVE,
        when=authors.beijing,
    )


# ---------------------------------------------------------------- lifecycle


def _address(request: Request) -> tuple[str, str]:
    return request.path_params["namespace"], request.path_params["name"]


def _target(value: Any) -> str:
    """The lifecycle status a form asks for, checked as the API checks its body."""
    try:
        return schemas.TransitionRequest(status=value).status
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ValidationFailed(f"{errors[0].field}: {errors[0].message}", errors=errors) from None


def _etag_of(form: Any) -> str:
    etag = str(form.get("etag") or "")
    if not etag:
        why = "the form carries the ETag of what it was made from; open the page again"
        raise ValidationFailed(f"etag: {why}", errors=[FieldError("etag", why)])
    return etag


@_page
async def change_lifecycle(request: Request) -> Response:
    namespace, name = _address(request)
    version = request.path_params["version"]
    identity = _signed_in(request, "change a version's lifecycle")
    require(identity, Action.TRANSITION, namespace)
    store = request.app.state.catalog.store
    if request.method == "GET":
        target = _target(request.query_params.get("status"))
        cap, _etag = await _run(store.describe, identity, namespace, name)
        current, etag = await _run(store.get_version, identity, namespace, name, version)
        lifecycle.check(current.status, target)
        return _render(
            request, "lifecycle.html", cap=cap, version=current, target=target, etag=etag
        )
    _check_origin(request)
    form = await _form(request, FORM_LIMIT)
    target, etag = _target(form.get("status")), _etag_of(form)
    await _run(partial(store.transition, namespace, name, version, target, if_match=etag))
    return RedirectResponse(f"/c/{namespace}/{name}#h-versions", status_code=303)


# ---------------------------------------------------------------- metadata


def _patch(form: Any) -> schemas.MetaPatch:
    """The edited fields, as the API's PATCH body: only the fields the form sent."""
    given: dict[str, Any] = {}
    for field in EDITABLE:
        if field not in form:
            continue
        value = str(form.get(field))
        if field == "tags":
            given[field] = [t for t in value.replace("，", ",").replace(",", " ").split() if t]
        else:
            given[field] = value.replace("\r\n", "\n")
    try:
        return schemas.MetaPatch.model_validate(given)
    except ValidationError as exc:
        errors = field_errors(exc)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(f"{first.field}: {first.message}{more}", errors=errors) from None


@_page
async def edit(request: Request) -> Response:
    namespace, name = _address(request)
    identity = _signed_in(request, "edit a capability")
    require(identity, Action.UPDATE, namespace)
    store = request.app.state.catalog.store
    if request.method == "GET":
        cap, etag = await _run(store.describe, identity, namespace, name)
        return _render(request, "edit.html", cap=cap, etag=etag)
    _check_origin(request)
    form = await _form(request, FORM_LIMIT)
    patch, etag = _patch(form), _etag_of(form)
    try:
        await _run(partial(store.update_metadata, namespace, name, patch, if_match=etag))
    except PreconditionFailed:
        raise PreconditionFailed(
            f"{namespace}/{name} was changed by someone else after you opened the edit "
            "form, so your edit was not saved; open the form again to see the current "
            "text, then make your edit there"
        ) from None
    return RedirectResponse(f"/c/{namespace}/{name}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/publish", publish, methods=["GET", "POST"]),
        Route("/publish/jobs/{id}", publish_job, methods=["GET"]),
        Route(
            "/c/{namespace}/{name}/versions/{version}/lifecycle",
            change_lifecycle,
            methods=["GET", "POST"],
        ),
        Route("/c/{namespace}/{name}/edit", edit, methods=["GET", "POST"]),
    ]


# Audit names for the author's pages (their POSTs are recorded, like the API's).
ACTIONS: dict[Any, str] = {
    publish: "uiUploadPackage",
    change_lifecycle: "uiTransitionVersion",
    edit: "uiUpdateCapability",
}
