"""HTTP routes for API keys: create (the key is in that answer only), list, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

import anyio.to_thread
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from . import names, schemas
from .access import Action, require
from .api import Endpoint
from .http import json_response, read_model
from .identity.apikeys import ApiKeys
from .identity.middleware import identity_of
from .tables import ApiKey, utcnow


def _scope(value: str) -> str:
    if not names.is_node_id(value):
        raise ValueError(f"not a node id or namespace: {names.NAMESPACE_RULE}")
    return value


def _capability(value: str) -> str:
    namespace, sep, name = value.partition("/")
    if not sep or not names.is_namespace(namespace) or not (name == "*" or names.is_name(name)):
        raise ValueError("expected namespace/name or namespace/*")
    return value


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, description="what it is for")]
    subject: Annotated[
        str | None,
        Field(max_length=500, description="who calls with it (default: app:<name>)"),
    ] = None
    role: Literal["admin", "operator", "author", "consumer", "auditor", "reviewer"] = "consumer"
    scopes: list[Annotated[str, AfterValidator(_scope)]] = Field(
        default_factory=list, max_length=32, description="namespaces (or node ids) it covers"
    )
    capabilities: list[Annotated[str, AfterValidator(_capability)]] = Field(
        default_factory=list,
        max_length=200,
        description="namespace/name or namespace/* it may invoke (default: any it may see)",
    )
    rate_limit: schemas.RateLimit | None = Field(
        None, description='its own rate limit, e.g. "100/min" (default: the node\'s per-caller one)'
    )
    expires_in_days: Annotated[
        float | None, Field(gt=0, le=3650, description="lifetime; null: until revoked")
    ] = 90


class KeyOut(BaseModel):
    id: str
    name: str
    subject: str
    role: str
    scopes: list[str]
    capabilities: list[str]
    rate_limit: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="the API key itself: shown this once, store it now")


class KeyList(BaseModel):
    items: list[KeyOut]


def _out(record: ApiKey) -> KeyOut:
    return KeyOut(**record.model_dump(exclude={"secret_hash"}))


def _keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.api_keys
    require(identity_of(request), Action.MANAGE_NODE, keys.node_id)
    return keys


async def create_key(request: Request) -> Response:
    keys = _keys(request)
    body = await read_model(request, KeyRequest, 64 << 10)
    creator = identity_of(request).subject or "?"
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    made = await anyio.to_thread.run_sync(
        lambda: keys.create(
            name=body.name,
            subject=body.subject or f"app:{body.name}",
            role=body.role,
            scopes=body.scopes,
            capabilities=body.capabilities,
            rate_limit=body.rate_limit,
            created_by=creator,
            expires_at=expires,
        )
    )
    out = NewKeyOut(**_out(made.record).model_dump(), key=made.key)
    return json_response(out, status=201, **{"Cache-Control": "no-store"})


async def list_keys(request: Request) -> Response:
    keys = _keys(request)
    records = await anyio.to_thread.run_sync(keys.list)
    return json_response(KeyList(items=[_out(r) for r in records]))


async def revoke_key(request: Request) -> Response:
    keys = _keys(request)
    record = await anyio.to_thread.run_sync(keys.revoke, request.path_params["key_id"])
    return json_response(_out(record))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/keys",
        create_key,
        "createApiKey",
        "Create an API key for a machine caller (the key is shown in this answer only)",
        tag="keys",
        body=KeyRequest,
        response=NewKeyOut,
        status=201,
        errors=(400, 401, 403, 413, 415, 422),
        auth="required",
    ),
    Endpoint(
        "GET",
        "/v1/keys",
        list_keys,
        "listApiKeys",
        "This node's API keys (never their secrets)",
        tag="keys",
        response=KeyList,
        errors=(401, 403),
        auth="required",
    ),
    Endpoint(
        "DELETE",
        "/v1/keys/{key_id}",
        revoke_key,
        "revokeApiKey",
        "Revoke an API key (at once on this process, within seconds on others)",
        tag="keys",
        response=KeyOut,
        errors=(401, 403, 404),
        auth="required",
    ),
)
