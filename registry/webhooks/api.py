"""HTTP routes of webhooks: subscriptions, their delivery log, tests and redelivery."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ..api import Endpoint
from ..http import json_response, parse_query, read_model
from ..identity.middleware import identity_of
from .events import EVENTS
from .subscriptions import DeliveryOut, NewWebhook, WebhookOut, Webhooks


class WebhookList(BaseModel):
    items: list[WebhookOut]
    events: dict[str, str] = Field(description="every event type, with what it means")


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Annotated[str, Field(max_length=370)] | None = None


class DeliveryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["pending", "delivered", "failed"] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50


def _hooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


async def create_webhook(request: Request) -> Response:
    hooks = _hooks(request)
    body = await read_model(request, NewWebhook, 64 << 10)
    who = identity_of(request)
    await anyio.to_thread.run_sync(hooks.check_scope, who, body.scope)  # 403 before the URL
    await hooks.check_url(body.url)
    made = await anyio.to_thread.run_sync(hooks.create, who, body)
    return json_response(
        made, status=201, Location=f"/v1/webhooks/{made.id}", **{"Cache-Control": "no-store"}
    )


async def list_webhooks(request: Request) -> Response:
    params = parse_query(ListParams, dict(request.query_params))
    items = await anyio.to_thread.run_sync(
        _hooks(request).listing, identity_of(request), params.scope
    )
    return json_response(WebhookList(items=items, events=EVENTS))


async def show_webhook(request: Request) -> Response:
    got = await anyio.to_thread.run_sync(
        _hooks(request).get, identity_of(request), request.path_params["id"]
    )
    return json_response(got)


async def remove_webhook(request: Request) -> Response:
    await anyio.to_thread.run_sync(
        _hooks(request).remove, identity_of(request), request.path_params["id"]
    )
    return Response(status_code=204)


async def test_webhook(request: Request) -> Response:
    got = await anyio.to_thread.run_sync(
        _hooks(request).test, identity_of(request), request.path_params["id"]
    )
    return json_response(got, status=202)


async def list_deliveries(request: Request) -> Response:
    params = parse_query(DeliveryParams, dict(request.query_params))
    items = await anyio.to_thread.run_sync(
        lambda: _hooks(request).deliveries(
            identity_of(request),
            request.path_params["id"],
            state=params.state,
            limit=params.limit,
        )
    )
    return json_response(DeliveryList(items=items))


async def show_delivery(request: Request) -> Response:
    p = request.path_params
    got = await anyio.to_thread.run_sync(
        _hooks(request).delivery, identity_of(request), p["id"], p["delivery"]
    )
    return json_response(got)


async def redeliver(request: Request) -> Response:
    p = request.path_params
    got = await anyio.to_thread.run_sync(
        _hooks(request).redeliver, identity_of(request), p["id"], p["delivery"]
    )
    return json_response(got, status=202)


HOOK = "/v1/webhooks/{id}"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST", "/v1/webhooks", create_webhook, "createWebhook",
        "Subscribe a namespace (its authors) or this node (its operators) to events",
        tag="webhooks", body=NewWebhook, response=WebhookOut, status=201,
        errors=(400, 401, 403, 413, 415, 422), auth="required",
        description="The answer carries the signing secret (`whsec_…`), this once. "
        "Deliveries are POSTed with `webhook-id`, `webhook-timestamp` and "
        "`webhook-signature` (Standard Webhooks).",
    ),
    Endpoint(
        "GET", "/v1/webhooks", list_webhooks, "listWebhooks",
        "The subscriptions the caller may manage, and every event type",
        tag="webhooks", query=ListParams, response=WebhookList, errors=(400, 401),
        auth="required",
    ),
    Endpoint(
        "GET", HOOK, show_webhook, "getWebhook", "A subscription (never its secret)",
        tag="webhooks", response=WebhookOut, errors=(401, 404), auth="required",
    ),
    Endpoint(
        "DELETE", HOOK, remove_webhook, "removeWebhook",
        "Remove a subscription and its delivery log", tag="webhooks", status=204,
        errors=(401, 404), auth="required",
    ),
    Endpoint(
        "POST", HOOK + "/test", test_webhook, "testWebhook",
        "Send a webhook.test event to this subscription", tag="webhooks",
        response=DeliveryOut, status=202, errors=(401, 404), auth="required",
    ),
    Endpoint(
        "GET", HOOK + "/deliveries", list_deliveries, "listWebhookDeliveries",
        "A subscription's deliveries, newest first", tag="webhooks", query=DeliveryParams,
        response=DeliveryList, errors=(400, 401, 404), auth="required",
    ),
    Endpoint(
        "GET", HOOK + "/deliveries/{delivery}", show_delivery, "getWebhookDelivery",
        "One delivery with every attempt", tag="webhooks", response=DeliveryOut,
        errors=(401, 404), auth="required",
    ),
    Endpoint(
        "POST", HOOK + "/deliveries/{delivery}/redeliver", redeliver, "redeliverWebhook",
        "Send a delivery again now, with the same webhook-id", tag="webhooks",
        response=DeliveryOut, status=202, errors=(401, 404), auth="required",
    ),
)  # fmt: skip
