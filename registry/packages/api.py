"""Publishing by upload over HTTP: an author sends a distribution, the node publishes
it as a job; the job's resource shows its steps and, in the end, what it published or
why it did not.

``POST /v1/namespaces/{namespace}/packages?filename=NAME`` takes the archive as the
request body (``application/octet-stream``; a wheel, an sdist or an exported Bento), from
a caller who may publish into ``namespace`` at this node, and answers ``202 Accepted``
with the job and its ``Location``. ``GET /v1/publish-jobs/{id}`` is the job;
``GET /v1/namespaces/{namespace}/publish-jobs`` the namespace's latest jobs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunnao.plugins.errors import FieldError, Forbidden, UnsupportedMediaType, ValidationFailed

from .. import names
from ..access import Action, Identity, require
from ..api import Endpoint
from ..http import parse_query
from ..identity.middleware import identity_of
from .jobs import PublishJobs, Received, check_filename, receive

OCTET = "application/octet-stream"


@dataclass
class Uploads:
    """What the upload routes need from the node (``app.state.uploads``)."""

    jobs: PublishJobs
    max_bytes: int
    wake: Any = None  # called when a job is queued (wakes the publisher loop)


class UploadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(
        description="the archive's file name: `<dist>-<version>-...whl`, "
        "`<dist>-<version>.tar.gz`, or `<bento>-<version>.bento` (`bentoml export`)",
    )


class PublishJobView(BaseModel):
    """A publish job as its resource shows it."""

    id: str
    namespace: str
    filename: str
    package: str | None = Field(None, description="the archive's SHA-256")
    status: str = Field(description="queued, running, succeeded or failed")
    log: list[dict[str, Any]] = Field(description="the steps so far: at, step, message")
    error: dict[str, Any] | None = Field(None, description="the problem that stopped it")
    result: list[dict[str, Any]] | None = Field(None, description="the versions it published")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


def _uploads(request: Request) -> Uploads:
    return request.app.state.uploads


def check_publisher(identity: Identity, namespace: str, node_id: str) -> None:
    """Raise unless ``identity`` may publish into ``namespace`` at node ``node_id``: 422
    for what is no namespace, the policy's 401 or 403, 403 for another node's namespace.
    (The upload route and the upload page both ask this.)"""
    if not names.is_namespace(namespace):
        why = "a dotted department id under this node, e.g. sd.qd.traffic"
        raise ValidationFailed(f"namespace: {why}", errors=[FieldError("namespace", why)])
    require(identity, Action.PUBLISH, namespace)
    owner = names.namespace_node(namespace)
    if owner != node_id:
        why = f"namespace {namespace!r} belongs to node {owner!r}; publish it there"
        raise Forbidden(f"namespace: {why}", errors=[FieldError("namespace", why)])


async def start_job(
    uploads: Uploads,
    namespace: str,
    identity: Identity,
    write: Callable[[Path], Awaitable[Received]],
) -> dict[str, Any]:
    """Receive an archive (``write`` puts it at the path it is given) and queue its
    publish job; the job as its resource shows it."""
    job_id = uploads.jobs.new_id()
    received = await write(uploads.jobs.upload_path(job_id))
    job = uploads.jobs.create(job_id, namespace, received, identity)
    if uploads.wake is not None:
        uploads.wake()
    return job


async def upload_package(request: Request) -> Response:
    namespace = request.path_params["namespace"]
    identity = identity_of(request)
    check_publisher(identity, namespace, request.app.state.catalog.store.node_id)
    params = parse_query(UploadParams, dict(request.query_params))
    filename = check_filename(params.filename)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != OCTET:
        raise UnsupportedMediaType(
            f"send the archive itself as the body, as {OCTET} (got {ctype or 'no content type'})"
        )
    uploads = _uploads(request)
    job = await start_job(
        uploads,
        namespace,
        identity,
        lambda dest: receive(request, dest, filename, uploads.max_bytes),
    )
    location = f"/v1/publish-jobs/{job['id']}"
    return JSONResponse(job, status_code=202, headers={"Location": location})


async def get_publish_job(request: Request) -> Response:
    job = _uploads(request).jobs.get(identity_of(request), request.path_params["id"])
    return JSONResponse(job)


async def list_publish_jobs(request: Request) -> Response:
    namespace = request.path_params["namespace"]
    identity = identity_of(request)
    require(identity, Action.PUBLISH, namespace)
    return JSONResponse({"jobs": _uploads(request).jobs.of_namespace(identity, namespace)})


class PublishJobList(BaseModel):
    jobs: list[PublishJobView]


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/namespaces/{namespace}/packages",
        upload_package,
        "uploadPackage",
        "Publish a package by upload (a publish job)",
        tag="publishing",
        query=UploadParams,
        raw_body=OCTET,
        response=PublishJobView,
        status=202,
        errors=(400, 401, 403, 413, 415, 422),
        auth="required",
        description="The body is the archive: a wheel or an sdist of a plugin distribution, "
        "or an exported Bento (`bentoml export`). The node checks it, builds an environment "
        "for its requirements, inspects and tests it in a sandbox, logs each capability to "
        "MLflow (a Bento's APIs are bound to the Bento, served in the sandbox) and records "
        "the versions, all or nothing. Follow the job at `Location`.",
    ),
    Endpoint(
        "GET",
        "/v1/publish-jobs/{id}",
        get_publish_job,
        "getPublishJob",
        "A publish job: its steps, and what it published or why not",
        tag="publishing",
        response=PublishJobView,
        errors=(401, 404),
    ),
    Endpoint(
        "GET",
        "/v1/namespaces/{namespace}/publish-jobs",
        list_publish_jobs,
        "listPublishJobs",
        "The namespace's latest publish jobs",
        tag="publishing",
        response=PublishJobList,
        errors=(401, 403),
        auth="required",
    ),
)
