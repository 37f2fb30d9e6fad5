"""The page comparing two versions of a capability: what changed in the input and
output schemas and the examples, and which changes break callers (the same rules that
refuse a breaking minor version at publish, :mod:`yunnao.registry.compat`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from yunnao.plugins.errors import BadRequest, FieldError
from yunnao.registry import compat, names, schemas
from yunnao.registry.identity.middleware import identity_of

from .pages import _page, _render, _run


@_page
async def compare(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    store, who = request.app.state.catalog.store, identity_of(request)
    cap, _etag = await _run(store.describe, who, namespace, name)
    versions: list[schemas.Version] = await _run(store.list_versions, who, namespace, name)
    numbers = [v.version for v in versions]  # newest first
    chosen = {}
    for key, default in (("from", numbers[1:2] or numbers[:1]), ("to", numbers[:1])):
        value = request.query_params.get(key) or (default[0] if default else "")
        if value not in numbers:
            why = f"{cap.title} has no version {value!r}" if names.is_semver(value) else (
                f"{value!r} is not a version of {cap.title}"
            )  # fmt: skip
            raise BadRequest(why, errors=[FieldError(key, why)])
        chosen[key] = next(v for v in versions if v.version == value)
    result = compat.compare(chosen["from"], chosen["to"])
    return _render(
        request, "compare.html", cap=cap, numbers=numbers, result=result,
        old=chosen["from"].version, new=chosen["to"].version,
    )  # fmt: skip


def routes() -> list[BaseRoute]:
    return [Route("/c/{namespace}/{name}/compare", compare, methods=["GET"])]
