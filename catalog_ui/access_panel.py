"""The capability page's access request panel (权限申请): what a signed-in visitor who
may find a capability but not call it sees of their own requests, and whether they may
ask (the form posts to :mod:`.access_pages`). Kept apart from the pages' module so both
it and :mod:`.access_pages` may use it."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request

from yunnao.registry import access
from yunnao.registry.access import Action
from yunnao.registry.access_requests import AccessRequestOut, AccessRequests
from yunnao.registry.identity.middleware import identity_of

from .authors import beijing


async def _run(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


def _requests(request: Request) -> AccessRequests:
    found: AccessRequests = request.app.state.access_requests
    return found


def _row(item: AccessRequestOut) -> dict[str, Any]:
    """A request as the pages show it (times in Beijing time)."""
    return {
        **item.model_dump(),
        "created_text": beijing(item.created_at)[:16],
        "expires_text": beijing(item.expires_at)[:10] if item.expires_at else "",
        "decided_text": beijing(item.decided_at)[:16] if item.decided_at else "",
    }


async def panel(request: Request, cap: Any) -> dict[str, Any] | None:
    """What the capability page shows a signed-in visitor who may find ``cap`` but not
    call it: their requests (from the origin, for another node's capability) and
    whether they may ask (no pending request). None for everyone else."""
    identity = identity_of(request)
    if not identity.authenticated or cap.status not in access.LISTED_STATUSES:
        return None
    node_id = request.app.state.settings.node_id
    entry = access.Entry(
        cap.namespace, cap.classification, cap.status, cap.access, local=cap.origin_node == node_id
    )
    if access.decide(identity, Action.INVOKE, entry).allowed:
        # Granted through a request: say so, with the grant's expiry (from the access
        # rules themselves, which the cascade carries: no need to ask the origin).
        me = (identity.subject, identity.node or node_id)
        for grant in cap.access.grants:
            if isinstance(grant, str) or (grant.subject, grant.node) != me:
                continue
            if access.grant_matches(identity, grant, cap.origin_node):
                expires = beijing(grant.expires_at)[:10] if grant.expires_at else ""
                return {"granted": True, "expires_text": expires}
        return None
    reqs = _requests(request)
    items: list[AccessRequestOut] = []
    unreachable = False
    try:
        hop = await _run(reqs.next_hop, identity, cap.namespace, cap.name)
        if hop is None:
            items = await _run(reqs.mine, identity, cap.namespace, cap.name)
        elif reqs.forward is not None:
            path = f"/v1/capabilities/{cap.namespace}/{cap.name}/access-requests/mine"
            status, body, _ctype = await reqs.forward(hop, "GET", path, None, identity)
            if status == 200:
                items = [AccessRequestOut.model_validate(i) for i in body["items"]]
            else:
                unreachable = True
    except Exception:  # the origin cannot be asked now: the page still shows the form
        unreachable = True
    rows = [_row(i) for i in items]
    return {
        "requests": rows,
        "pending": any(r["status"] == "pending" for r in rows),
        "unreachable": unreachable,
        "action": f"/c/{cap.namespace}/{cap.name}/access-request",
    }
