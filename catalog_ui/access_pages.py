"""Access requests (权限申请) on the pages: the capability page's form for someone who
may find a capability but not call it, with their requests' states; and
``/access-requests``, where a department's authors and admins approve (optionally until
a date) or refuse (with a reason) the requests for their capabilities. The forms post
only from this node's own pages (:func:`~.pages._check_origin`), as the other forms do,
and do what the API routes do (:mod:`yunnao.registry.access_requests`), forwarding a
request for another node's capability to that node.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from yunnao.plugins.errors import (
    FieldError,
    RemoteFailed,
    Unauthorized,
    ValidationFailed,
    field_errors,
)
from yunnao.registry.access_requests import (
    Approval,
    NewAccessRequest,
    Refusal,
)
from yunnao.registry.clock import BEIJING
from yunnao.registry.identity.middleware import identity_of

from .access_panel import _requests, _row
from .authoring import _form
from .pages import _check_origin, _page, _render, _run

FORM_BYTES = 16 << 10


def _expiry(value: Any) -> datetime | None:
    """A form's date (the end of that day, Beijing time), or none."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValidationFailed(
            f"expires_at: {text!r} is not a date (YYYY-MM-DD)",
            errors=[FieldError("expires_at", "not a date (YYYY-MM-DD)")],
        ) from None
    return datetime.combine(day, time(23, 59, 59), tzinfo=BEIJING)


def _validated(model: Any, **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ValidationFailed(f"{errors[0].field}: {errors[0].message}", errors=errors) from None


@_page
async def ask(request: Request) -> Response:
    """The capability page's form: ask for access (forwarded to another node's origin)."""
    _check_origin(request)
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized("sign in to ask for access")
    ns, name = request.path_params["namespace"], request.path_params["name"]
    form = await _form(request, FORM_BYTES)
    body = _validated(
        NewAccessRequest,
        reason=str(form.get("reason") or ""),
        expires_at=_expiry(form.get("expires_on")),
    )
    reqs = _requests(request)
    hop = await _run(reqs.next_hop, identity, ns, name)
    if hop is None:
        await _run(reqs.create, identity, ns, name, body)
    elif reqs.forward is not None:
        path = f"/v1/capabilities/{ns}/{name}/access-requests"
        data = body.model_dump(mode="json", exclude_none=True)
        status, answer, _ctype = await reqs.forward(hop, "POST", path, data, identity)
        if status >= 400:
            raise RemoteFailed(status, answer if isinstance(answer, dict) else {}, hop)
    return RedirectResponse(f"/c/{ns}/{name}#access", status_code=303)


@_page
async def decide_page(request: Request) -> Response:
    """``/access-requests``: pending requests of the visitor's departments, with the
    forms to decide them, and the latest decisions."""
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized("sign in to see access requests")
    reqs = _requests(request)
    pending = await _run(lambda: reqs.listing(identity, status="pending", per_page=100))
    recent = await _run(lambda: reqs.listing(identity, status=None, per_page=40))
    decided = [r for r in recent.items if r.status != "pending"][:20]
    return _render(
        request,
        "access_requests.html",
        pending=[_row(i) for i in pending.items],
        pending_total=pending.total,
        decided=[_row(i) for i in decided],
    )


@_page
async def approve(request: Request) -> Response:
    _check_origin(request)
    form = await _form(request, FORM_BYTES)
    body = _validated(Approval, expires_at=_expiry(form.get("expires_on")))
    await _run(_requests(request).approve, identity_of(request), request.path_params["id"], body)
    return RedirectResponse("/access-requests", status_code=303)


@_page
async def refuse(request: Request) -> Response:
    _check_origin(request)
    form = await _form(request, FORM_BYTES)
    body = _validated(Refusal, reason=str(form.get("reason") or ""))
    await _run(_requests(request).refuse, identity_of(request), request.path_params["id"], body)
    return RedirectResponse("/access-requests", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/c/{namespace}/{name}/access-request", ask, methods=["POST"]),
        Route("/access-requests", decide_page, methods=["GET"]),
        Route("/access-requests/{id}/approve", approve, methods=["POST"]),
        Route("/access-requests/{id}/refuse", refuse, methods=["POST"]),
    ]


# Audit names for the pages' POSTs (recorded, like the API's).
ACTIONS: dict[Any, str] = {
    ask: "uiCreateAccessRequest",
    approve: "uiApproveAccessRequest",
    refuse: "uiRefuseAccessRequest",
}
