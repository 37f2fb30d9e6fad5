"""The operator page's form for names: an admin or operator of the node sets the
node's titles and its departments' (creating a department that has none yet), as
``PATCH /v1/node`` and ``PUT /v1/namespaces/{namespace}`` would."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from yunnao.plugins.errors import ValidationFailed, field_errors
from yunnao.registry.access import Action, require
from yunnao.registry.identity.middleware import identity_of
from yunnao.registry.titles import Titles, TitlesPatch

from .authoring import _form
from .pages import _check_origin, _page, _run

NODE = "node"  # the form's target for the node itself
FORM_BYTES = 16 << 10


@_page
async def set_titles(request: Request) -> Response:
    _check_origin(request)
    titles: Titles = request.app.state.titles
    identity = identity_of(request)
    form = await _form(request, FORM_BYTES)
    target = str(form.get("target") or "").strip()
    try:
        patch = TitlesPatch(
            title_zh=str(form.get("title_zh") or ""), title_en=str(form.get("title_en") or "")
        )
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ValidationFailed(f"{errors[0].field}: {errors[0].message}", errors=errors) from None
    if target == NODE:
        require(identity, Action.NAME_NODE, titles.node_id)
        await _run(titles.set_node, patch)
    else:
        titles.check_own(target)
        require(identity, Action.NAME, target)
        await _run(lambda: titles.put_namespace(target, patch, create=True))
    return RedirectResponse("/ops#h-names", status_code=303)


def routes() -> list[BaseRoute]:
    return [Route("/ops/titles", set_titles, methods=["POST"])]


# Audit names for the page's POST (recorded, like the API's).
ACTIONS: dict[Any, str] = {set_titles: "uiSetTitles"}
