"""HTTP routes of the gateway: invoke, jobs, runtime bindings and runtime health."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message

from yunnao.plugins.errors import FieldError, ValidationFailed
from yunnao.plugins.media import media_fields
from yunnao.registry import schemas
from yunnao.registry.access import Action, require
from yunnao.registry.api import Endpoint
from yunnao.registry.bindings import require_binding
from yunnao.registry.http import (
    json_response,
    read_body,
    read_json,
    read_model,
    validate_model,
)
from yunnao.registry.identity.forwarded import forwarded
from yunnao.registry.identity.middleware import identity_of

from ..adapters import sse
from . import media, pipelines, streams
from .core import Gateway
from .idempotency import Idempotency
from .jobs import Jobs


@dataclass(frozen=True)
class Invoker:
    """What the gateway routes need from the node."""

    gateway: Gateway
    jobs: Jobs
    idempotency: Idempotency
    default_timeout: float = 30.0
    max_timeout: float = 300.0
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 20 << 20  # a call to a capability with image or file inputs


class InvokeRequest(BaseModel):
    """Body of ``POST /v1/invoke/{namespace}/{name}``."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="the capability's parameters, by name")
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        None, description="seconds to wait for the answer; default and maximum: the node's"
    )
    callback_url: AnyHttpUrl | None = Field(
        None,
        description="asynchronous calls only: the finished job is POSTed here as JSON "
        "(public addresses only, unless the node's operator allows more)",
    )


class InvokeResponse(BaseModel):
    output: Any = Field(description="the capability's answer, valid against its output schema")
    capability: str = Field(description="namespace/name@version that answered")
    request_id: str
    latency_ms: float


class JobStatus(BaseModel):
    id: str
    status: str = Field(description="queued, running, succeeded or failed")
    capability: str
    attempts: int
    request_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    output: Any = Field(None, description="when succeeded")
    error: dict[str, Any] | None = Field(None, description="problem document, when failed")
    callback: dict[str, Any] | None = None


class RuntimeStatus(BaseModel):
    available: list[str]
    health: dict[str, dict[str, Any]] = Field(description="runtimes started at this node")


def _invoker(request: Request) -> Invoker:
    return request.app.state.invoker


async def _envelope(request: Request, max_bytes: int) -> InvokeRequest:
    """The body of a call. The common one, ``{"input": {...}}``, needs none of the
    model's checks but that the input is an object (a JSON object's keys are strings)."""
    data = await read_json(request, max_bytes)
    if type(data) is dict and len(data) == 1 and type(data.get("input")) is dict:
        return InvokeRequest.model_construct(input=data["input"])
    return validate_model(InvokeRequest, data)


async def _json_limit(request: Request, identity: Any, namespace: str, name_ref: str) -> int:
    """How large a JSON call body may be: the node's limit, or, for a capability with
    image or file inputs (base64 in the JSON), the upload limit. Only a body larger than
    the node's limit (or of unknown length) resolves the call to find out."""
    invoker = _invoker(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= invoker.max_body_bytes:
        return invoker.max_body_bytes
    call = await invoker.gateway.resolve(identity, namespace, name_ref)
    return (
        invoker.max_upload_bytes
        if media_fields(call.target.input_schema)
        else invoker.max_body_bytes
    )


def _wants_stream(request: Request) -> bool:
    """Whether the caller takes server-sent events (a streaming capability's items)."""
    return sse.MEDIA_TYPE in request.headers.get("accept", "")


def _wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


async def invoke(request: Request) -> Response:
    key = request.headers.get("idempotency-key")
    if key is None:
        return await _invoke(request)
    if _wants_stream(request):
        raise ValidationFailed(
            "Idempotency-Key is for calls answered once, not for streams",
            errors=[FieldError("Idempotency-Key", "not with Accept: text/event-stream")],
        )
    # Once per key: the body is read here (for the request's fingerprint) and replayed.
    invoker = _invoker(request)
    raw = await read_body(request, invoker.max_upload_bytes)  # the route's own limit follows

    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    return await invoker.idempotency.handle(
        request, key, identity_of(request), raw,
        lambda: _invoke(Request(request.scope, replay)),
        wait=invoker.max_timeout + 5,
    )  # fmt: skip


async def _invoke(request: Request) -> Response:
    invoker = _invoker(request)
    gateway = invoker.gateway
    identity = identity_of(request)
    asynchronous = _wants_async(request)
    if asynchronous and forwarded(identity) is not None:
        raise ValidationFailed(
            "a call forwarded by a linked node is synchronous",
            errors=[FieldError("Prefer", "respond-async is not for forwarded calls")],
        )
    namespace, name_ref = request.path_params["namespace"], request.path_params["name"]
    if media.is_upload(request):  # a form or a raw file: read once the call is resolved
        resolved = await gateway.resolve(identity, namespace, name_ref)
        given = await media.read_upload(
            request, resolved.target.input_schema, invoker.max_upload_bytes
        )
        body = InvokeRequest.model_construct(
            input=given, timeout=media.form_timeout(request), callback_url=None
        )
    else:
        body = await _envelope(request, await _json_limit(request, identity, namespace, name_ref))
    timeout = body.timeout or invoker.default_timeout
    if timeout > invoker.max_timeout:
        raise ValidationFailed(
            f"timeout: at most {invoker.max_timeout:g} s at this node",
            errors=[FieldError("timeout", f"at most {invoker.max_timeout:g}")],
        )
    client = request.client.host if request.client else None
    request_id = request.state.request_id
    if asynchronous:
        call = await gateway.admitted(identity, namespace, name_ref, client=client)
        headers = {"Deprecation": "true"} if call.deprecated else {}
        inputs = gateway.validate(call.target, "input", body.input)
        await gateway.check_media(call.target, inputs)
        callback_url = None
        if body.callback_url is not None:  # never into the node's network (422)
            callback_url = await invoker.jobs.check_callback(str(body.callback_url))
        job = await anyio.to_thread.run_sync(
            lambda: invoker.jobs.submit(
                call,
                identity,
                inputs,
                timeout=timeout,
                callback_url=callback_url,
                request_id=request_id,
            )
        )
        invoker.jobs.wake()
        headers.update({"Location": f"/v1/jobs/{job['id']}", "Preference-Applied": "respond-async"})
        return JSONResponse(job, status_code=202, headers=headers)
    if body.callback_url is not None:
        raise ValidationFailed(
            "callback_url needs an asynchronous call (header Prefer: respond-async)",
            errors=[FieldError("callback_url", "only with Prefer: respond-async")],
        )
    if _wants_stream(request) and streams.streams(
        (await gateway.resolve(identity, namespace, name_ref)).target
    ):
        opened = await streams.open_stream(
            gateway, identity, namespace, name_ref, body.input, timeout=timeout,
            client=client, request_id=request_id,
        )  # fmt: skip
        if opened is not None:
            call, events = opened
            headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
            if call.deprecated:
                headers["Deprecation"] = "true"
            return StreamingResponse(
                streams.as_sse(events), media_type=sse.MEDIA_TYPE, headers=headers
            )
    answer = await gateway.call(
        identity,
        namespace,
        name_ref,
        body.input,
        timeout=timeout,
        client=client,
        request_id=request_id,
    )
    result = {
        "output": answer.output,
        "capability": answer.call.target.id,
        "request_id": request_id,
        "latency_ms": answer.latency_ms,
    }
    headers = {"Deprecation": "true"} if answer.call.deprecated else {}
    return JSONResponse(result, headers=headers)


async def get_job(request: Request) -> Response:
    jobs = _invoker(request).jobs
    job = await anyio.to_thread.run_sync(jobs.get, identity_of(request), request.path_params["id"])
    return JSONResponse(job)


async def set_runtime(request: Request) -> Response:
    invoker = _invoker(request)
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    version = request.path_params["version"]
    require(identity_of(request), Action.BIND, namespace)
    binding = await read_model(request, schemas.RuntimeBinding, invoker.max_body_bytes)
    available = invoker.gateway.runtimes.factories
    if binding.type not in available:
        raise ValidationFailed(
            f"type: this node has no runtime {binding.type!r}",
            errors=[FieldError("type", f"one of: {', '.join(sorted(available))}")],
        )
    require_binding(identity_of(request), binding, invoker.gateway.store.node_id, field="")
    pipelines.refuse_rebinding(binding)
    result, etag = await anyio.to_thread.run_sync(
        lambda: invoker.gateway.store.set_runtime(
            namespace, name, version, binding, if_match=request.headers.get("if-match")
        )
    )
    return json_response(result, etag=etag)


async def runtime_status(request: Request) -> Response:
    runtimes = _invoker(request).gateway.runtimes
    health = await runtimes.health()
    body = RuntimeStatus(
        available=sorted(runtimes.factories),
        health={k: {"ok": h.ok, "detail": h.detail} for k, h in health.items()},
    )
    return json_response(body)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/invoke/{namespace}/{name}",
        invoke,
        "invoke",
        "Invoke a capability (name, name@version, name@latest or name@<MLflow alias>)",
        tag="invocation",
        body=InvokeRequest,
        response=InvokeResponse,
        errors=(400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 500, 503, 504, 508),
        description="Synchronous by default. With the header `Prefer: respond-async` the "
        "call is queued as a durable job: 202 with the job and its `Location` "
        "(`/v1/jobs/{id}`); give `callback_url` to have the finished job POSTed to you. "
        "Every response carries `X-Request-Id`; a deprecated version answers with "
        "`Deprecation: true`.",
    ),
    Endpoint(
        "GET",
        "/v1/jobs/{id}",
        get_job,
        "getJob",
        "Status and result of an asynchronous invocation",
        tag="invocation",
        response=JobStatus,
        errors=(401, 404),
    ),
    Endpoint(
        "PUT",
        "/v1/capabilities/{namespace}/{name}/versions/{version}/runtime",
        set_runtime,
        "setRuntime",
        "Bind a version to a runtime (or reconfigure it) without republishing",
        tag="invocation",
        body=schemas.RuntimeBinding,
        response=schemas.Version,
        errors=(400, 401, 403, 404, 412, 413, 415, 422),
        auth="required",
        conditional=True,
    ),
    Endpoint(
        "GET",
        "/v1/runtimes",
        runtime_status,
        "runtimeStatus",
        "The runtimes of this node and their health",
        tag="invocation",
        response=RuntimeStatus,
    ),
)
