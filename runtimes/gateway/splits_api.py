"""``GET``/``PUT``/``DELETE /v1/capabilities/{namespace}/{name}/split``: a capability's
traffic split (canary, shadow, automatic rollback; see :mod:`.splits`).

Setting or clearing a split is an author's change: the namespace's writers
(``Action.UPDATE``), at the node that owns it; a linked node's copy has no split of its
own. Reading one needs a token of this node scoped to the namespace (its figures are
usage statistics); an entry the caller may not discover is 404 either way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Forbidden, NotFound, Unauthorized
from yunnao.registry.access import Action, require
from yunnao.registry.api import Endpoint
from yunnao.registry.http import json_response, read_model
from yunnao.registry.identity.middleware import identity_of

from .splits import Rule, Split, Splits


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(max_length=128, description="a published or deprecated version")
    share: Annotated[float, Field(ge=0, le=1)] = Field(
        description="the part of the calls naming no version that go to it (0.1: 10%; "
        "1: all of them, still watched by the rollback rule)"
    )


class Shadow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(
        max_length=128,
        description="a published or deprecated version every call naming no version is "
        "mirrored to; its answer is dropped",
    )


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05, description="the 5xx share above which the split is removed"
    )
    min_calls: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        50, description="calls of the version in the window before the rule applies"
    )
    window: Annotated[float, Field(gt=0, le=86_400)] = Field(300.0, description="seconds")


class SplitRequest(BaseModel):
    """Body of ``PUT .../split``: a canary, a shadow or both, and the rollback rule."""

    model_config = ConfigDict(extra="forbid")

    stable: str | None = Field(
        None,
        max_length=128,
        description="the version the other calls go to; default: the current version. "
        "Publishing a version makes it current: when the canary is the newest, name the "
        "version to keep here",
    )
    canary: Canary | None = None
    shadow: Shadow | None = None
    rollback: Rollback = Field(default_factory=Rollback)


class VersionFiguresOut(BaseModel):
    version: str
    role: str = Field(description="current, canary or shadow")
    calls: int = Field(description="calls in the rule's window (shadow calls included)")
    errors: int = Field(description="5xx answers among them")
    p50_ms: float | None
    p99_ms: float | None


class SplitOut(BaseModel):
    namespace: str
    name: str
    current: str = Field(description="the capability's current version")
    stable: str = Field(description="the version the calls the canary does not take go to")
    canary: Canary | None
    shadow: Shadow | None
    rollback: Rollback
    set_by: str | None
    set_at: datetime | None
    note: str | None = Field(
        description="after a rollback: why (the split then pins `stable` until cleared)"
    )
    versions: list[VersionFiguresOut] = Field(
        description="per-version figures over the window, from this node's usage records"
    )


def _splits(request: Request) -> Splits:
    splits = request.app.state.invoker.gateway.splits
    assert splits is not None
    return splits


def _out(splits: Splits, split: Split) -> SplitOut:
    usage = splits.usage
    if usage is not None:
        usage.flush()  # this process's latest calls count too
    current = splits.store.resolve(split.namespace, split.name).version.version
    rule = split.rule
    return SplitOut(
        namespace=split.namespace,
        name=split.name,
        current=current,
        stable=split.stable or current,
        canary=Canary(version=split.canary, share=split.share) if split.canary else None,
        shadow=Shadow(version=split.shadow) if split.shadow else None,
        rollback=Rollback(
            max_error_rate=rule.max_error_rate, min_calls=rule.min_calls, window=rule.window
        ),
        set_by=split.set_by,
        set_at=split.set_at,
        note=split.note,
        versions=[VersionFiguresOut(**vars(f)) for f in splits.figures(split, current)],
    )


async def get_split(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    identity = identity_of(request)
    splits = _splits(request)
    seen = await anyio.to_thread.run_sync(splits.store.discoverable, identity, namespace, name)
    if not seen:
        raise NotFound(f"no capability {namespace}/{name}")
    if not identity.authenticated or identity.peer is not None:
        raise Unauthorized(f"a split's figures need a token of this node scoped to {namespace}")
    if not identity.in_scope(namespace):
        raise Forbidden(f"a split's figures need a token of this node scoped to {namespace}")

    def read() -> SplitOut:
        split = splits.get(namespace, name)
        if split is None:
            raise NotFound(f"{namespace}/{name} has no traffic split")
        return _out(splits, split)

    return json_response(await anyio.to_thread.run_sync(read))


async def put_split(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    identity = identity_of(request)
    require(identity, Action.UPDATE, namespace)
    splits = _splits(request)
    splits.owned(namespace)  # before the body: a linked node's entry is set there
    body = await read_model(request, SplitRequest, request.app.state.invoker.max_body_bytes)
    rule = body.rollback
    split = Split(
        namespace,
        name,
        stable=body.stable,
        canary=body.canary.version if body.canary else None,
        share=body.canary.share if body.canary else 0.0,
        shadow=body.shadow.version if body.shadow else None,
        rule=Rule(rule.max_error_rate, rule.min_calls, rule.window),
        set_by=identity.subject,
    )
    stored = await anyio.to_thread.run_sync(lambda: _out(splits, splits.put(split)))
    return json_response(stored)


async def delete_split(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    require(identity_of(request), Action.UPDATE, namespace)
    splits = _splits(request)

    def clear() -> None:
        splits.owned(namespace)
        splits.store.resolve(namespace, name)  # 404 for no such capability
        if not splits.remove(namespace, name):
            raise NotFound(f"{namespace}/{name} has no traffic split")

    await anyio.to_thread.run_sync(clear)
    return Response(status_code=204)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/capabilities/{namespace}/{name}/split",
        get_split,
        "getSplit",
        "A capability's traffic split, with per-version calls, 5xx answers and latency",
        tag="invocation",
        response=SplitOut,
        errors=(401, 403, 404),
        auth="required",
    ),
    Endpoint(
        "PUT",
        "/v1/capabilities/{namespace}/{name}/split",
        put_split,
        "setSplit",
        "Send a share of the calls to a canary version, mirror them to a shadow version",
        tag="invocation",
        body=SplitRequest,
        response=SplitOut,
        errors=(400, 401, 403, 404, 413, 415, 422),
        auth="required",
        description="Only calls naming the capability alone (`name`, no version or alias) "
        "are split: a share to the canary, the rest to `stable` (default: the current "
        "version). The split removes itself, audited as `rollbackSplit`, once the canary's "
        "or the shadow's 5xx rate over `rollback.window` seconds passes "
        "`rollback.max_error_rate` with at least `rollback.min_calls` calls.",
    ),
    Endpoint(
        "DELETE",
        "/v1/capabilities/{namespace}/{name}/split",
        delete_split,
        "clearSplit",
        "Remove a capability's traffic split: every call goes to the current version",
        tag="invocation",
        status=204,
        errors=(401, 403, 404),
        auth="required",
    ),
)
