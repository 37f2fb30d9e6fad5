"""The capability page's line on review (审核): what the nodes above decided about one of
this node's own capabilities it shares upward (审核中 / 已通过 / 未通过 with the
reason), as they sent it down (:mod:`yunnao.cascade.review`)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request

from yunnao.cascade.review import Decision, decisions
from yunnao.registry import schemas
from yunnao.registry.clock import BEIJING
from yunnao.registry.db import read_session
from yunnao.registry.identity.middleware import identity_of


async def panel(request: Request, cap: schemas.Capability) -> list[dict[str, Any]]:
    """The decisions about ``cap``, nearest reviewer first; shown to this node's
    signed-in visitors only."""
    identity = identity_of(request)
    if not identity.authenticated or identity.peer is not None:
        return []
    engine = request.app.state.cascade.feed.engine

    def read() -> list[Decision]:
        with read_session(engine) as s:
            return decisions(s, cap.namespace, cap.name)

    found = await anyio.to_thread.run_sync(read)
    return [
        {**d.__dict__, "decided_text": d.decided_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")
         if d.decided_at else ""}
        for d in found
    ]  # fmt: skip
