"""The ``remote`` runtime: a capability cascaded from another node runs at its origin.

A call of a cascaded entry goes to the linked node it arrived through (a child for
entries from below, the parent for entries followed from above), which runs it or
forwards it again, hop by hop, to the origin. Each hop sends an assertion signed with
its own node key that carries the caller, so the origin's access rules decide; the
origin's answer, error or not, comes back as it was given (problem+json included).

The assertion also carries the nodes the call has visited and the caller's deadline:
a call that would reach a node twice is refused with 508 (here, before it is sent,
and at the node that would see it again), and each hop gets only the time left.

Calls go through this node's circuit breaker (``RuntimeContext.health``, a
:class:`~yunnao.registry.health.HealthBoard`): a call towards a node that is down, or
whose breaker is open, is refused at once with a 503 naming the node and since when it
is unreachable; a call that cannot connect or gets no answer in time opens the breaker,
and any answer closes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from yunnao.plugins.errors import (
    CapabilityError,
    InvocationTimeout,
    LoopDetected,
    NotDeployable,
    RemoteFailed,
    RuntimeDown,
)
from yunnao.registry.access import ANONYMOUS

from . import sse
from .base import RuntimeContext, RuntimeHealth, Target, current_call
from .settings import RuntimeSettings

log = logging.getLogger("yunnao.runtimes.remote")


class RemoteSettings(RuntimeSettings):
    """The ``remote`` runtime's node settings (``Settings.runtimes["remote"]``)."""

    connect_timeout: float = 5
    """Seconds connecting to a linked node may take."""


class RemoteRuntime:
    type = "remote"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        self.settings = RemoteSettings.parse(self.type, config)
        self.context = context
        self.connect_timeout = self.settings.connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _url(self, target: Target) -> tuple[str, str]:
        node = str(target.config.get("node", ""))
        url = self.context.peer_url(node) if self.context.peer_url and node else None
        if not url:
            raise NotDeployable(
                f"{target.id} came from node {node or '(unknown)'}, which this node cannot "
                "reach (it pushes to this node, or is no longer linked)"
            )
        return node, url

    async def deploy(self, target: Target) -> None:
        self._url(target)

    async def undeploy(self, target: Target) -> None:
        return None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        node, url, call, visited, deadline, timeout = self._route(target, timeout)
        board = self.context.health
        try:
            return await self._forward(target, inputs, node, url, timeout, call, visited, deadline)
        except BaseException:
            if board is not None:
                board.release(node)  # a half-open trial that ended without an answer
            raise

    async def stream(
        self, target: Target, inputs: dict[str, Any], *, timeout: float
    ) -> AsyncIterator[Any]:
        """A streamed call forwarded as one: the next node's events relayed as they come.
        When this node's caller goes away, the connection to the next node is closed,
        and that node stops the work in turn (at the origin: the generator)."""
        node, url, call, visited, deadline, timeout = self._route(target, timeout)
        board = self.context.health
        path, headers, body, client_timeout = self._request(
            target, inputs, node, timeout, call, visited, deadline
        )
        headers["Accept"] = sse.MEDIA_TYPE
        answered = False
        try:
            async with self.session.post(
                url + path, json=body, headers=headers, timeout=client_timeout
            ) as resp:
                answered = True
                if board is not None:
                    board.success(node)
                if resp.status != 200 or not resp.content_type.startswith(sse.MEDIA_TYPE):
                    data = await resp.json(content_type=None)
                    if resp.status == 200:  # it answered once: its whole output
                        for item in data.get("output") or []:
                            yield item
                        return
                    raise _failure(resp.status, data, node)
                async for kind, data in sse.events(resp.content):
                    if kind == "item":
                        yield data
                    elif kind == "error":
                        raise _failure(int(data.get("status") or 502), data, node)
                    elif kind == "end":
                        return
            raise RuntimeDown(f"node {node} ended the stream of {target.id} early", retry_after=5)
        except TimeoutError:
            if board is not None and not answered:
                board.failure(node, f"no answer to a call of {target.id} in time")
            raise InvocationTimeout(f"node {node} did not stream {target.id} in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            if board is not None and not answered:
                board.failure(node, f"cannot be reached: {type(exc).__name__}")
            raise RuntimeDown(f"node {node}: {type(exc).__name__} {exc}", retry_after=5) from None
        finally:
            if board is not None and not answered:
                board.release(node)

    def _route(
        self, target: Target, timeout: float
    ) -> tuple[str, str, Any, tuple[str, ...], float, float]:
        """Where a call of ``target`` goes, and with what: refused here when it would
        loop (508), when no time is left (504), or when the next node is down (503)."""
        node, url = self._url(target)
        call = current_call.get()
        here = self.context.node_id
        visited = (*(call.visited if call is not None else ()), here)
        if node in visited:
            raise LoopDetected(
                f"{target.id} would go to node {node} again (path: {' -> '.join(visited)} "
                f"-> {node}): the runtime bindings of these nodes form a loop",
                extra={"visited": list(visited)},
            )
        deadline = call.deadline if call is not None else None
        if deadline is None:
            deadline = time.time() + timeout
        left = deadline - time.time()
        if left <= 0:
            raise InvocationTimeout(f"the caller's deadline passed before node {node} was called")
        timeout = min(timeout, left)
        board = self.context.health
        if board is not None:
            self._check_reachable(board, target, node)
        return node, url, call, visited, deadline, timeout

    def _check_reachable(self, board: Any, target: Target, node: str) -> None:
        """Refuse (503) at once a call towards a node known to be down: the origin (as
        reported down the tree), or the next hop whose breaker is open."""
        origin = str(target.config.get("origin") or "")
        retry = max(1, math.ceil(board.open_for))
        if origin and origin != node and not board.reachable(origin):
            raise RuntimeDown(f"{target.id}: {board.why_down(origin)}", retry_after=retry)
        if not board.allow(node):
            raise RuntimeDown(f"{target.id}: {board.why_down(node)}", retry_after=retry)

    async def _forward(
        self,
        target: Target,
        inputs: dict[str, Any],
        node: str,
        url: str,
        timeout: float,
        call: Any,
        visited: tuple[str, ...],
        deadline: float,
    ) -> Any:
        board = self.context.health
        path, headers, body, client_timeout = self._request(
            target, inputs, node, timeout, call, visited, deadline
        )
        try:
            async with self.session.post(
                url + path, json=body, headers=headers, timeout=client_timeout
            ) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except TimeoutError:
            if board is not None:
                board.failure(node, f"no answer to a call of {target.id} in time")
            raise InvocationTimeout(f"node {node} did not answer {target.id} in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            if board is not None:
                if isinstance(exc, aiohttp.ClientError):
                    board.failure(node, f"cannot be reached: {type(exc).__name__}")
                else:
                    board.success(node)  # it answered, if not with JSON
            raise RuntimeDown(f"node {node} cannot be reached: {exc}", retry_after=5) from None
        if board is not None:
            board.success(node)
        if status == 200:
            return data.get("output") if isinstance(data, dict) else data
        raise _failure(status, data, node)

    def _request(
        self,
        target: Target,
        inputs: dict[str, Any],
        node: str,
        timeout: float,
        call: Any,
        visited: tuple[str, ...],
        deadline: float,
    ) -> tuple[str, dict[str, str], dict[str, Any], aiohttp.ClientTimeout]:
        """The path, headers (the assertion for the caller), body and client timeout of
        a call forwarded to ``node``."""
        caller = call.caller if call is not None else ANONYMOUS
        path = f"/v1/invoke/{target.namespace}/{target.name}@{target.version}"
        assert self.context.assertion is not None
        assertion = self.context.assertion(
            node, caller, route=path, visited=visited[:-1], deadline=deadline
        )
        headers = {"Authorization": f"Bearer {assertion}"}
        if call is not None and call.request_id:
            headers["X-Request-Id"] = call.request_id
        body = {"input": inputs, "timeout": timeout}
        # The next node answers 504 by the deadline itself; the second of slack lets that
        # answer arrive, and nothing here waits longer.
        client_timeout = aiohttp.ClientTimeout(
            total=timeout + 1, connect=min(self.connect_timeout, timeout)
        )
        return path, headers, body, client_timeout

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(ok=True, detail="forwards to linked nodes")

    def describe(self) -> dict[str, Any]:
        return {"type": self.type}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _failure(status: int, data: Any, node: str) -> Exception:
    """The error a forwarded call's problem answer (``status``, ``data``) means here."""
    if not isinstance(data, dict):
        return CapabilityError(f"node {node} answered {status} without a problem document")
    if status == 503:
        return RuntimeDown(f"at node {node}: {data.get('detail', 'unavailable')}")
    if status == 401:
        # The caller is fine; the link is not (the node does not accept this node's
        # assertion): an operator's matter, not the caller's.
        return RuntimeDown(f"node {node} refused this node's assertion: {data.get('detail')}")
    if status == 504:
        return InvocationTimeout(f"at node {node}: {data.get('detail', 'timed out')}")
    return RemoteFailed(status, data, node)
