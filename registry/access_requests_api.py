"""HTTP routes for access requests (权限申请), see :mod:`~yunnao.registry.access_requests`.

A signed-in caller who may find a capability but not call it asks for access; the
capability's department (authors and admins scoped to its namespace) lists, approves or
refuses; the requester reads its own requests on the capability and may withdraw a
pending one. For a cascaded capability the request (and the requester's own list) is
forwarded to the origin, where it is kept and decided.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Unauthorized, Unavailable

from .access import Action, require_role
from .access_requests import (
    AccessRequestList,
    AccessRequestOut,
    AccessRequests,
    Approval,
    NewAccessRequest,
    Refusal,
    RequestStatus,
)
from .api import Endpoint, _link_header
from .http import json_response, parse_query, read_model
from .identity.middleware import identity_of

MAX_BODY = 16 << 10
CAP = "/v1/capabilities/{namespace}/{name}/access-requests"
ONE = "/v1/access-requests/{id}"


class ListParams(BaseModel):
    """Query string of ``GET /v1/access-requests``."""

    model_config = ConfigDict(extra="forbid")

    status: RequestStatus | None = Field(None, description="default: every status")
    namespace: Annotated[str, Field(max_length=370)] | None = Field(
        None, description="only this department (and those below it)"
    )
    page: Annotated[int, Field(ge=1, le=10_000)] = 1
    per_page: Annotated[int, Field(ge=1, le=100)] = 20


class MyRequests(BaseModel):
    items: list[AccessRequestOut]


def _requests(request: Request) -> AccessRequests:
    found: AccessRequests = request.app.state.access_requests
    return found


def _signed_in(request: Request) -> Any:
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized("access requests need a bearer token (or signing in)")
    return identity


def _passed_on(status: int, body: Any, ctype: str) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=status, media_type=ctype.split(";")[0]
    )


async def _forwarding(request: Request, body: Any) -> Response | None:
    """The origin's answer when the capability came from another node, else None."""
    reqs = _requests(request)
    identity = _signed_in(request)
    ns, name = request.path_params["namespace"], request.path_params["name"]
    hop = await anyio.to_thread.run_sync(reqs.next_hop, identity, ns, name)
    if hop is None:
        return None
    if reqs.forward is None:
        raise Unavailable(f"{ns}/{name} is decided at its origin; this node cannot forward")
    status, data, ctype = await reqs.forward(hop, request.method, request.url.path, body, identity)
    return _passed_on(status, data, ctype)


async def create_request(request: Request) -> Response:
    identity = _signed_in(request)
    body = await read_model(request, NewAccessRequest, MAX_BODY)
    passed = await _forwarding(request, body.model_dump(mode="json", exclude_none=True))
    if passed is not None:
        return passed
    ns, name = request.path_params["namespace"], request.path_params["name"]
    made = await anyio.to_thread.run_sync(_requests(request).create, identity, ns, name, body)
    return json_response(made, status=201, Location=f"/v1/access-requests/{made.id}")


async def my_requests(request: Request) -> Response:
    identity = _signed_in(request)
    passed = await _forwarding(request, None)
    if passed is not None:
        return passed
    ns, name = request.path_params["namespace"], request.path_params["name"]
    items = await anyio.to_thread.run_sync(_requests(request).mine, identity, ns, name)
    return json_response(MyRequests(items=items))


async def list_requests(request: Request) -> Response:
    identity = identity_of(request)
    require_role(identity, Action.UPDATE)
    params = parse_query(ListParams, dict(request.query_params))
    page = await anyio.to_thread.run_sync(
        lambda: _requests(request).listing(
            identity,
            status=params.status,
            namespace=params.namespace,
            page=params.page,
            per_page=params.per_page,
        )
    )
    link = _link_header(request, params.page, params.per_page, page.total)
    return json_response(page, **({"Link": link} if link else {}))


async def show_request(request: Request) -> Response:
    identity = _signed_in(request)
    found = await anyio.to_thread.run_sync(
        _requests(request).get, identity, request.path_params["id"]
    )
    return json_response(found)


async def approve_request(request: Request) -> Response:
    identity = identity_of(request)
    body = await read_model(request, Approval, MAX_BODY)
    done = await anyio.to_thread.run_sync(
        _requests(request).approve, identity, request.path_params["id"], body
    )
    return json_response(done)


async def refuse_request(request: Request) -> Response:
    identity = identity_of(request)
    body = await read_model(request, Refusal, MAX_BODY)
    done = await anyio.to_thread.run_sync(
        _requests(request).refuse, identity, request.path_params["id"], body
    )
    return json_response(done)


async def withdraw_request(request: Request) -> Response:
    identity = _signed_in(request)
    done = await anyio.to_thread.run_sync(
        _requests(request).withdraw, identity, request.path_params["id"]
    )
    return json_response(done)


_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        CAP,
        create_request,
        "createAccessRequest",
        "Ask for access to call a capability one may find but not call (权限申请)",
        tag="access-requests",
        body=NewAccessRequest,
        response=AccessRequestOut,
        status=201,
        errors=(*_ERRORS, 502, 503, 504, 508),
        auth="required",
        description="409 when the caller may already call it or has a pending request for "
        "it; 404 when the caller may not find it. For a capability from another node the "
        "request is forwarded to its origin, where its department decides.",
    ),
    Endpoint(
        "GET",
        f"{CAP}/mine",
        my_requests,
        "listMyAccessRequests",
        "The caller's own requests for a capability and their decisions",
        tag="access-requests",
        response=MyRequests,
        errors=(401, 404, 503, 504),
        auth="required",
    ),
    Endpoint(
        "GET",
        "/v1/access-requests",
        list_requests,
        "listAccessRequests",
        "Requests for the capabilities of the caller's departments (authors and admins)",
        tag="access-requests",
        query=ListParams,
        response=AccessRequestList,
        errors=(400, 401, 403),
        auth="required",
    ),
    Endpoint(
        "GET",
        ONE,
        show_request,
        "getAccessRequest",
        "One access request (its requester, or those who decide it)",
        tag="access-requests",
        response=AccessRequestOut,
        errors=(401, 404),
        auth="required",
    ),
    Endpoint(
        "POST",
        f"{ONE}/approve",
        approve_request,
        "approveAccessRequest",
        "Approve: add a grant (optionally expiring) to the capability's access rules",
        tag="access-requests",
        body=Approval,
        response=AccessRequestOut,
        errors=_ERRORS,
        auth="required",
    ),
    Endpoint(
        "POST",
        f"{ONE}/refuse",
        refuse_request,
        "refuseAccessRequest",
        "Refuse, with a reason the requester sees",
        tag="access-requests",
        body=Refusal,
        response=AccessRequestOut,
        errors=_ERRORS,
        auth="required",
    ),
    Endpoint(
        "POST",
        f"{ONE}/withdraw",
        withdraw_request,
        "withdrawAccessRequest",
        "Withdraw one's own pending request",
        tag="access-requests",
        response=AccessRequestOut,
        errors=(401, 404, 409),
        auth="required",
    ),
)
