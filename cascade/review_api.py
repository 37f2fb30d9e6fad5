"""HTTP routes of the review of what children share upward (:mod:`.review`): the queue
and its decisions for this node's reviewers, the rules for its admins, and, at a child,
what the nodes above decided about one of its capabilities."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import NotFound, Unauthorized
from yunnao.registry import names
from yunnao.registry.access import Action, Identity, require
from yunnao.registry.api import Endpoint
from yunnao.registry.db import read_session
from yunnao.registry.http import json_response, parse_query, read_model
from yunnao.registry.identity.middleware import identity_of
from yunnao.registry.schemas import Classification
from yunnao.registry.tables import ReviewHeld

from .review import Review, Reviews, decisions
from .state import cascade_of

_held = ReviewHeld.__table__  # type: ignore[attr-defined]
State = Literal["pending", "approved", "refused"]


class ReviewOut(BaseModel):
    namespace: str
    name: str
    title: str | None = Field(description="the capability's title, as the district sent it")
    classification: str | None
    origin_node: str = Field(description="the node that published it")
    via_node: str = Field(description="the child it came through")
    state: State
    reason: str | None = Field(description="why it was refused")
    decided_by: str | None = Field(description="the reviewer, or the rule, that decided")
    decided_at: datetime | None
    arrived_at: datetime
    rule_id: str | None = Field(description="the rule that approved it on arrival")
    versions: list[str] = Field(description="versions held for the decision")


class ReviewDetail(ReviewOut):
    capability: dict[str, Any] | None = Field(
        description="the held capability entry (its metadata), as its origin signed it"
    )
    held_versions: list[dict[str, Any]] = Field(
        description="the held version entries (schemas, examples, runtime)"
    )


class ReviewList(BaseModel):
    node: str
    enabled: bool = Field(description="whether this node reviews what its children share")
    items: list[ReviewOut]
    total: int


class ReviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Annotated[
        Literal["pending", "approved", "refused", "all"], Field(description="which to list")
    ] = "pending"
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    offset: Annotated[int, Field(ge=0)] = 0


class Refusal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
        Field(description="why: the district sees it on the capability's page"),
    ]


class Approved(ReviewOut):
    applied: int = Field(description="entries written to the catalog")


class NewRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Annotated[
        str | None, Field(max_length=370, description="a namespace, or a node: all under it")
    ] = None
    classification: Classification | None = None
    district: Annotated[
        str | None, Field(max_length=330, description="a node id: it and the nodes below it")
    ] = None

    @model_validator(mode="after")
    def _some(self) -> NewRule:
        if self.namespace is None and self.classification is None and self.district is None:
            raise ValueError("give at least one of namespace, classification, district")
        if self.namespace is not None and not names.NAMESPACE_RE.match(self.namespace):
            raise ValueError(f"namespace: {names.NAMESPACE_RULE}")
        if self.district is not None and not names.is_node_id(self.district):
            raise ValueError(f"district: {names.NODE_ID_RULE}")
        return self


class RuleOut(BaseModel):
    id: str
    namespace: str | None
    classification: str | None
    district: str | None
    created_by: str | None
    created_at: datetime | None


class RuleList(BaseModel):
    items: list[RuleOut]


class DecisionOut(BaseModel):
    reviewer: str = Field(description="the node above that decided")
    state: State
    reason: str | None
    decided_at: datetime | None


class DecisionList(BaseModel):
    namespace: str
    name: str
    items: list[DecisionOut] = Field(description="nearest reviewer first")


def _reviews(request: Request) -> Reviews:
    return cascade_of(request).applier.reviews


def _reviewer(request: Request) -> Identity:
    identity = identity_of(request)
    require(identity, Action.REVIEW, cascade_of(request).node_id)
    return identity


def _who(identity: Identity) -> str:
    return str(identity.subject)


def _out(review: Review) -> dict[str, Any]:
    return {
        "namespace": review.namespace, "name": review.name, "title": review.title,
        "classification": review.classification, "origin_node": review.origin_node,
        "via_node": review.via_node, "state": review.state, "reason": review.reason,
        "decided_by": review.decided_by, "decided_at": review.decided_at,
        "arrived_at": review.arrived_at, "rule_id": review.rule_id,
        "versions": list(review.versions),
    }  # fmt: skip


async def list_reviews(request: Request) -> Response:
    _reviewer(request)
    query = parse_query(ReviewQuery, dict(request.query_params))
    reviews = _reviews(request)

    def read() -> tuple[list[Review], int]:
        with read_session(cascade_of(request).feed.engine) as s:
            state = None if query.state == "all" else query.state
            return reviews.queue(s, state=state, limit=query.limit, offset=query.offset)

    items, total = await anyio.to_thread.run_sync(read)
    return json_response(
        ReviewList(
            node=reviews.node_id,
            enabled=reviews.enabled,
            items=[ReviewOut(**_out(r)) for r in items],
            total=total,
        )
    )


def held_detail(engine: sa.Engine, reviews: Reviews, namespace: str, name: str) -> ReviewDetail:
    """One review with the entries it holds (for the reviewer's page too)."""
    with read_session(engine) as s:
        review = reviews.get(s, namespace, name)
        rows = s.execute(
            sa.select(_held.c.entity, _held.c.item)
            .where(_held.c.namespace == namespace, _held.c.name == name)
            .order_by(_held.c.origin_seq)
        ).all()
    capability = next((item["entry"] for entity, item in rows if entity == "capability"), None)
    versions = [item["entry"] for entity, item in rows if entity == "version"]
    return ReviewDetail(**_out(review), capability=capability, held_versions=versions)


async def show_review(request: Request) -> Response:
    _reviewer(request)
    p = request.path_params
    detail = await anyio.to_thread.run_sync(
        held_detail, cascade_of(request).feed.engine, _reviews(request), p["namespace"], p["name"]
    )
    return json_response(detail)


async def approve(request: Request) -> Response:
    identity = _reviewer(request)
    cascade = cascade_of(request)
    p = request.path_params
    applied = await anyio.to_thread.run_sync(
        lambda: cascade.applier.release(p["namespace"], p["name"], by=_who(identity))
    )
    review = await anyio.to_thread.run_sync(_one, request, p["namespace"], p["name"])
    return json_response(Approved(**_out(review), applied=applied))


async def refuse(request: Request) -> Response:
    identity = _reviewer(request)
    cascade = cascade_of(request)
    p = request.path_params
    body = await read_model(request, Refusal, 16 << 10)
    await anyio.to_thread.run_sync(
        lambda: cascade.applier.refuse(
            p["namespace"], p["name"], by=_who(identity), reason=body.reason
        )
    )
    review = await anyio.to_thread.run_sync(_one, request, p["namespace"], p["name"])
    return json_response(ReviewOut(**_out(review)))


def _one(request: Request, namespace: str, name: str) -> Review:
    with read_session(cascade_of(request).feed.engine) as s:
        return _reviews(request).get(s, namespace, name)


async def list_rules(request: Request) -> Response:
    _reviewer(request)
    reviews = _reviews(request)

    def read() -> list[RuleOut]:
        with read_session(cascade_of(request).feed.engine) as s:
            return [RuleOut(**r.__dict__) for r in reviews.rules(s)]

    return json_response(RuleList(items=await anyio.to_thread.run_sync(read)))


async def add_rule(request: Request) -> Response:
    identity = identity_of(request)
    cascade = cascade_of(request)
    require(identity, Action.MANAGE_NODE, cascade.node_id)
    body = await read_model(request, NewRule, 16 << 10)

    def write() -> RuleOut:
        with cascade.applier.transaction() as s:
            rule = cascade.applier.reviews.add_rule(
                s, namespace=body.namespace, classification=body.classification,
                district=body.district, by=_who(identity),
            )  # fmt: skip
        return RuleOut(**rule.__dict__)

    made = await anyio.to_thread.run_sync(write)
    return json_response(made, status=201, Location=f"/v1/cascade/review-rules/{made.id}")


async def remove_rule(request: Request) -> Response:
    cascade = cascade_of(request)
    require(identity_of(request), Action.MANAGE_NODE, cascade.node_id)
    rule_id = request.path_params["rule"]

    def write() -> bool:
        with cascade.applier.transaction() as s:
            return cascade.applier.reviews.remove_rule(s, rule_id)

    if not await anyio.to_thread.run_sync(write):
        raise NotFound(f"no review rule {rule_id}")
    return Response(status_code=204)


async def show_decisions(request: Request) -> Response:
    """What the nodes above decided about a capability the caller may see here."""
    p = request.path_params
    store = request.app.state.catalog.store
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized("sign in to read review decisions")
    await anyio.to_thread.run_sync(store.describe, identity, p["namespace"], p["name"])

    def read() -> list[DecisionOut]:
        with read_session(store.engine) as s:
            found = decisions(s, p["namespace"], p["name"])
        return [DecisionOut(reviewer=d.reviewer, state=d.state, reason=d.reason,
                            decided_at=d.decided_at) for d in found]  # fmt: skip

    items = await anyio.to_thread.run_sync(read)
    return json_response(DecisionList(namespace=p["namespace"], name=p["name"], items=items))


_CAP = "/v1/cascade/reviews/{namespace}/{name}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET", "/v1/cascade/reviews", list_reviews, "cascadeReviews",
        "The review queue: capabilities from child nodes waiting for (or given) a decision",
        tag="review", query=ReviewQuery, response=ReviewList, errors=(401, 403, 422),
        auth="required",
        description="For this node's reviewers (role `reviewer` or `admin`, scoped to the "
        "node). `state=pending` (the default) lists the oldest arrival first.",
    ),
    Endpoint(
        "GET", _CAP, show_review, "cascadeReview",
        "One capability in review, with the entries held for the decision",
        tag="review", response=ReviewDetail, errors=(401, 403, 404), auth="required",
    ),
    Endpoint(
        "POST", _CAP + "/approve", approve, "cascadeApprove",
        "Approve: the held entries enter this node's catalog and travel further up",
        tag="review", response=Approved, errors=(401, 403, 404, 409), auth="required",
        description="The decision is signed by this node and travels down to the "
        "capability's district. Later versions of an approved capability apply at once.",
    ),
    Endpoint(
        "POST", _CAP + "/refuse", refuse, "cascadeRefuse",
        "Refuse, with a reason the district sees; a newer version puts it back in the queue",
        tag="review", body=Refusal, response=ReviewOut,
        errors=(400, 401, 403, 404, 409, 415, 422), auth="required",
    ),
    Endpoint(
        "GET", "/v1/cascade/review-rules", list_rules, "cascadeReviewRules",
        "Rules that approve what matches on arrival", tag="review", response=RuleList,
        errors=(401, 403), auth="required",
    ),
    Endpoint(
        "POST", "/v1/cascade/review-rules", add_rule, "cascadeAddReviewRule",
        "Approve on arrival what matches every field given (namespace, classification, "
        "district); admins", tag="review", body=NewRule, response=RuleOut, status=201,
        errors=(400, 401, 403, 415, 422), auth="required",
    ),
    Endpoint(
        "DELETE", "/v1/cascade/review-rules/{rule}", remove_rule, "cascadeRemoveReviewRule",
        "Remove a review rule (what it approved stays approved); admins", tag="review",
        status=204, errors=(401, 403, 404), auth="required",
    ),
    Endpoint(
        "GET", "/v1/cascade/decisions/{namespace}/{name}", show_decisions, "cascadeDecisions",
        "What the nodes above decided about one of this node's capabilities (审核中 / 已通过 / "
        "未通过)", tag="review", response=DecisionList, errors=(401, 404), auth="required",
    ),
)  # fmt: skip
