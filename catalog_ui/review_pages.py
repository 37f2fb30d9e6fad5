"""Review of what districts share upward (审核) on the pages: ``/review``, the queue of
this node's reviewers (role ``reviewer`` or ``admin``, scoped to the node), each entry
with what it holds (summary, versions, input and output), approve, and refuse with a
reason; past decisions; and, for admins, the rules that approve on arrival. The forms
post only from this node's own pages and do what the API routes do
(:mod:`yunnao.cascade.review_api`); the district sees each decision on its capability's
page (:mod:`.review_panel`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from yunnao.cascade.review import Review
from yunnao.cascade.review_api import NewRule, Refusal, held_detail
from yunnao.registry.access import Action, Entry, decide, require
from yunnao.registry.clock import BEIJING
from yunnao.registry.db import read_session
from yunnao.registry.identity.middleware import identity_of

from . import forms
from .access_pages import _validated
from .authoring import _form
from .pages import _check_origin, _page, _render, _run

FORM_BYTES = 16 << 10
STATES = ("pending", "approved", "refused")


def _when(value: Any) -> str:
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") if value else ""


def _row(review: Review) -> dict[str, Any]:
    return {
        **review.__dict__,
        "capability": f"{review.namespace}/{review.name}",
        "arrived_text": _when(review.arrived_at),
        "decided_text": _when(review.decided_at),
    }


def _cascade(request: Request) -> Any:
    cascade = request.app.state.cascade
    require(identity_of(request), Action.REVIEW, cascade.node_id)
    return cascade


@_page
async def queue(request: Request) -> Response:
    """``/review?state=``: the queue (oldest first) or past decisions, and the rules."""
    cascade = _cascade(request)
    state = request.query_params.get("state", "pending")
    if state not in STATES:
        state = "pending"
    reviews = cascade.applier.reviews

    def read() -> tuple[list[Review], int, dict[str, int], list[Any]]:
        with read_session(cascade.feed.engine) as s:
            items, total = reviews.queue(s, state=state, limit=200, offset=0)
            counts = {st: reviews.queue(s, state=st, limit=1, offset=0)[1] for st in STATES}
            return items, total, counts, reviews.rules(s)

    items, total, counts, rules = await _run(read)
    identity = identity_of(request)
    return _render(
        request,
        "review.html",
        state=state,
        items=[_row(r) for r in items],
        total=total,
        counts=counts,
        enabled=reviews.enabled,
        rules=rules,
        may_rule=decide(identity, Action.MANAGE_NODE, Entry(cascade.node_id)).allowed,
    )


@_page
async def detail(request: Request) -> Response:
    """One capability in review: what it holds, with the forms to decide it."""
    cascade = _cascade(request)
    p = request.path_params
    found = await _run(
        held_detail, cascade.feed.engine, cascade.applier.reviews, p["namespace"], p["name"]
    )
    versions = []
    for entry in found.held_versions:
        versions.append(
            {
                "version": entry.get("version"),
                "status": entry.get("status"),
                "classification": entry.get("classification"),
                "runtime": (entry.get("runtime") or {}).get("type"),
                "input_rows": forms.rows(entry.get("input_schema") or {}),
                "output_rows": forms.rows(entry.get("output_schema") or {}),
            }
        )
    return _render(
        request,
        "review_detail.html",
        r={**found.model_dump(), "capability_key": f"{found.namespace}/{found.name}",
           "arrived_text": _when(found.arrived_at), "decided_text": _when(found.decided_at)},
        cap=found.capability or {},
        versions=versions,
    )  # fmt: skip


@_page
async def approve(request: Request) -> Response:
    _check_origin(request)
    cascade = _cascade(request)
    p = request.path_params
    who = str(identity_of(request).subject)
    await _run(lambda: cascade.applier.release(p["namespace"], p["name"], by=who))
    return RedirectResponse("/review?state=approved", status_code=303)


@_page
async def refuse(request: Request) -> Response:
    _check_origin(request)
    cascade = _cascade(request)
    p = request.path_params
    form = await _form(request, FORM_BYTES)
    body = _validated(Refusal, reason=str(form.get("reason") or ""))
    who = str(identity_of(request).subject)
    await _run(
        lambda: cascade.applier.refuse(p["namespace"], p["name"], by=who, reason=body.reason)
    )
    return RedirectResponse("/review?state=refused", status_code=303)


@_page
async def add_rule(request: Request) -> Response:
    _check_origin(request)
    cascade = request.app.state.cascade
    identity = identity_of(request)
    require(identity, Action.MANAGE_NODE, cascade.node_id)
    form = await _form(request, FORM_BYTES)
    body = _validated(
        NewRule,
        **{k: (str(form.get(k) or "").strip() or None)
           for k in ("namespace", "classification", "district")},
    )  # fmt: skip

    def write() -> None:
        with cascade.applier.transaction() as s:
            cascade.applier.reviews.add_rule(
                s, namespace=body.namespace, classification=body.classification,
                district=body.district, by=str(identity.subject),
            )  # fmt: skip

    await _run(write)
    return RedirectResponse("/review#rules", status_code=303)


@_page
async def remove_rule(request: Request) -> Response:
    _check_origin(request)
    cascade = request.app.state.cascade
    require(identity_of(request), Action.MANAGE_NODE, cascade.node_id)
    rule_id = request.path_params["rule"]

    def write() -> None:
        with cascade.applier.transaction() as s:
            cascade.applier.reviews.remove_rule(s, rule_id)

    await _run(write)
    return RedirectResponse("/review#rules", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/review", queue, methods=["GET"]),
        Route("/review/rules", add_rule, methods=["POST"]),
        Route("/review/rules/{rule}/remove", remove_rule, methods=["POST"]),
        Route("/review/{namespace}/{name}", detail, methods=["GET"]),
        Route("/review/{namespace}/{name}/approve", approve, methods=["POST"]),
        Route("/review/{namespace}/{name}/refuse", refuse, methods=["POST"]),
    ]


# Audit names for the pages' POSTs (recorded, like the API's).
ACTIONS: dict[Any, str] = {
    approve: "uiReviewApprove",
    refuse: "uiReviewRefuse",
    add_rule: "uiAddReviewRule",
    remove_rule: "uiRemoveReviewRule",
}
