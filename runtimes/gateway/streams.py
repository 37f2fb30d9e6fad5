"""Streamed calls: a capability that yields its output (``x-stream`` in its output
schema) answers a caller who accepts ``text/event-stream`` item by item, as server-sent
events (:mod:`~yunnao.runtimes.adapters.sse`), through each node a forwarded call passes.

Everything that can be refused is refused before the stream starts, as a plain problem
answer: resolution, access, rate limits, the input (422 naming each field) and its
files. Once the stream has started, a failure is an ``error`` event carrying the problem
document, and the stream ends. A caller that goes away stops the work: this node's
runtime stops asking the generator for items (in process: the generator is closed in
its thread; forwarded: the connection to the next node is closed, and that node does
the same). Every stream leaves one usage record with the items it carried and its
duration, and status 200, the error's status, or 499 when the caller went away.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from jsonschema import Draft202012Validator

from yunnao.plugins.errors import CapabilityError, InvocationTimeout, NotDeployable, YunnaoError
from yunnao.registry.access import Identity
from yunnao.registry.problems import problem_of

from ..adapters import sse
from ..adapters.base import CallContext, Target, current_call
from .calls import Call, Inputs, schema_errors
from .core import DEPLOY_TIMEOUT, Gateway, log
from .usage import Usage

CLOSED = 499  # the caller went away (nginx's "client closed request")


async def as_sse(events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
    """The events of :func:`open_stream` as ``text/event-stream`` bytes (items numbered)."""
    number = 0
    try:
        async for kind, data in events:
            number += kind == "item"
            yield sse.event(kind, data, id=number if kind == "item" else None)
    finally:
        await events.aclose()  # a caller gone: the stream stops now, not when collected


def streams(target: Target) -> bool:
    """Whether ``target`` yields its output item by item."""
    return bool(target.output_schema.get("x-stream"))


async def open_stream(
    gateway: Gateway,
    identity: Identity,
    namespace: str,
    name_ref: str,
    inputs: Inputs,
    *,
    timeout: float,
    client: str | None = None,
    request_id: str | None = None,
) -> tuple[Call, AsyncIterator[tuple[str, Any]]] | None:
    """Admit and check a streamed call; its events, ``(kind, data)`` (``item``, then
    ``end`` or ``error``: see :mod:`~yunnao.runtimes.adapters.sse`), or None when the
    version does not stream (the caller then gets one answer)."""
    visited, deadline = gateway.forwarding(identity)
    call = await gateway.admitted(identity, namespace, name_ref, client=client)
    target = call.target
    if not streams(target):
        return None
    data = inputs(call) if callable(inputs) else inputs
    if hasattr(data, "__await__"):
        data = await data
    data = gateway.validate(target, "input", data)
    if gateway.media_of(target):
        await gateway.check_media(target, data)
    runtime = gateway.runtimes.deployed(target)
    if runtime is None:
        with anyio.fail_after(DEPLOY_TIMEOUT):
            runtime = await gateway.runtimes.ready(target)
    if not hasattr(runtime, "stream"):
        raise NotDeployable(
            f"{target.id} streams, and its runtime ({target.runtime}) does not: bind it to "
            "inprocess (or call it at its origin node)"
        )
    if deadline is not None:
        left = deadline - time.time()
        if left <= 0:
            raise InvocationTimeout(f"{target.id}: the caller's deadline passed before it ran")
        timeout = min(timeout, left)
    context = CallContext(identity, request_id, visited, deadline or time.time() + timeout)
    return call, _events(gateway, runtime, call, data, identity, context, timeout)


def _item_validator(target: Target) -> Draft202012Validator:
    schema = dict(target.output_schema)
    items = dict(schema.get("items") or {})
    if "$defs" in schema:
        items["$defs"] = schema["$defs"]
    return Draft202012Validator(items)


async def _events(
    gateway: Gateway,
    runtime: Any,
    call: Call,
    data: dict[str, Any],
    identity: Identity,
    context: CallContext,
    timeout: float,
) -> AsyncIterator[tuple[str, Any]]:
    target = call.target
    checked = None if target.runtime == "inprocess" else _item_validator(target)
    started = time.perf_counter()
    items, status, error_id = 0, 200, None
    gauge = gateway.metrics.in_flight_of(target.runtime)
    gauge.inc()
    current_call.set(context)
    try:
        async with asyncio.timeout(timeout + 2):  # the safety net, as for one answer
            async for item in runtime.stream(target, data, timeout=timeout):
                if checked is not None:
                    wrong = schema_errors(checked, item, f"output[{items}]")
                    if wrong:
                        raise CapabilityError(
                            f"{target.id} streamed an invalid item: {wrong[0].field}: "
                            f"{wrong[0].message}"
                        )
                items += 1
                yield "item", item
        took = round((time.perf_counter() - started) * 1000, 3)
        done = {"items": items, "duration_ms": took, "request_id": context.request_id,
                "capability": target.id}  # fmt: skip
        yield "end", done
    except (asyncio.CancelledError, GeneratorExit):
        status = CLOSED
        raise
    except YunnaoError as exc:
        status = exc.status
        if isinstance(exc, CapabilityError):
            status, error_id = 500, uuid.uuid4().hex[:16]
            log.error("%s failed streaming (error id %s): %s", target.id, error_id, exc.detail)
            exc = CapabilityError(f"{target.id} failed; quote error id {error_id} to its owner",
                                  extra={"error_id": error_id})  # fmt: skip
        yield "error", problem_of(exc)
    except TimeoutError:
        status = 504
        yield "error", problem_of(InvocationTimeout(f"{target.id} streamed too long"))
    except Exception:
        status, error_id = 500, uuid.uuid4().hex[:16]
        log.exception("streaming %s failed (error id %s)", target.id, error_id)
        failed = CapabilityError(f"streaming {target.id} failed; quote error id {error_id} to "
                                 "this node's operator", extra={"error_id": error_id})  # fmt: skip
        yield "error", problem_of(failed)
    finally:
        gauge.dec()
        elapsed = time.perf_counter() - started
        label = f"{target.namespace}/{target.name}"
        gateway.metrics.observe(label, target.version, target.runtime, "stream", status, elapsed)
        gateway.usage.record(
            Usage(
                namespace=target.namespace, name=target.name, version=target.version,
                runtime=target.runtime, mode="stream", status=status,
                latency_ms=round(elapsed * 1000, 3), caller=identity.subject,
                request_id=context.request_id, error_id=error_id, caller_node=identity.node,
                caller_department=identity.own_department, forwarded_by=identity.peer,
                items=items,
            )
        )  # fmt: skip
