"""Forwarding an access request to the node a cascaded capability came through.

An access request for a capability this node received from a linked node is decided at
the capability's origin. The node sends it on to the linked node the entry arrived
through, with an assertion signed by this node's key that carries the caller and is
bound to the one route (``POST .../access-requests``, or ``GET .../access-requests/mine``)
and one use, as a forwarded call is (see :mod:`~yunnao.registry.identity.assertions`);
that node does the same, hop by hop, until the origin records it. The answer comes back
as it was given (problem+json included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from yunnao.plugins.errors import Conflict, InvocationTimeout, RuntimeDown

from .access import Identity
from .identity.forwarded import forwarded

TIMEOUT = 15.0  # seconds one forwarded request may take, all hops together


@dataclass
class Forwarder:
    """Sends requests to linked nodes: ``peer_url`` gives a linked node's URL (None: it
    cannot be reached from here), ``assertion`` is this node's
    :meth:`~yunnao.registry.identity.assertions.AssertionIssuer.invoke`."""

    peer_url: Callable[[str], str | None]
    assertion: Callable[..., str]
    timeout: float = TIMEOUT

    async def __call__(
        self, hop: str, method: str, path: str, body: Any, caller: Identity
    ) -> tuple[int, Any, str]:
        """(status, JSON body, content type) of ``hop``'s answer."""
        url = self.peer_url(hop)
        if not url:
            raise Conflict(
                f"the capability came from node {hop}, which this node cannot reach (it "
                "pushes to this node, or is no longer linked): ask for access at that node"
            )
        call = forwarded(caller)
        deadline = call.deadline if call is not None and call.deadline else None
        deadline = deadline or time.time() + self.timeout
        left = deadline - time.time()
        if left <= 0:
            raise InvocationTimeout(f"no time left to forward the request to node {hop}")
        token = self.assertion(
            hop,
            caller,
            route=path,
            visited=call.visited if call is not None else (),
            deadline=deadline,
        )
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    method,
                    url + path,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=left),
                ) as resp,
            ):
                data = await resp.json(content_type=None)
                status = resp.status
                ctype = resp.headers.get("content-type", "application/json")
        except TimeoutError:
            raise InvocationTimeout(f"node {hop} did not answer in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise RuntimeDown(f"node {hop} cannot be reached: {exc}", retry_after=5) from None
        if status == 401:
            # The caller is fine; the link is not: an operator's matter.
            detail = data.get("detail") if isinstance(data, dict) else None
            raise RuntimeDown(f"node {hop} refused this node's assertion: {detail}")
        return status, data, ctype
