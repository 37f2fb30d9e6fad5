"""The catalog API: search, show, versions, publish, lifecycle, update and delete.

Each route is declared once as an :class:`Endpoint`, which both mounts it and
describes it in the OpenAPI document (:mod:`~yunnao.registry.openapi`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import FieldError, Forbidden, NotFound, Unavailable, ValidationFailed

from . import compat, health_view, names, schemas, search
from .access import Action, require, require_role
from .bindings import require_binding
from .http import json_response, not_modified, parse_query, read_model
from .identity.middleware import identity_of
from .models import own_model_rule, own_model_version
from .publishing import Publisher
from .store import RegistryStore

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Catalog:
    """What the routes need from the node: its store, its publisher (plugins loaded at
    the node and MLflow) and its request limits."""

    store: RegistryStore
    max_body_bytes: int = 1 << 20
    publisher: Publisher | None = None
    capabilities: Mapping[str, Capability] = field(default_factory=dict)
    # Checks a version before it is stored, per runtime type (a pipeline's steps), and
    # may complete it: ``await check_version(identity, namespace, name, spec)`` -> spec.
    check_version: Callable[..., Awaitable[schemas.PublishRequest]] | None = None


@dataclass(frozen=True)
class Endpoint:
    """One HTTP operation: how it is mounted and how OpenAPI describes it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str = "catalog"
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    raw_body: str | None = None  # the media type of a body that is a file, not JSON
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: Literal["none", "optional", "required"] = "optional"
    conditional: bool = False
    description: str = ""


class SearchParams(BaseModel):
    """Query string of ``GET /v1/capabilities``. Repeat a facet to OR its values."""

    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, Field(max_length=200, description="full-text query")] = ""
    domain: list[schemas.Domain] = Field(default_factory=list)
    node: list[str] = Field(default_factory=list, description="origin node id")
    namespace: list[str] = Field(default_factory=list)
    runtime: list[str] = Field(default_factory=list)
    classification: list[schemas.Classification] = Field(default_factory=list)
    status: list[schemas.Status] = Field(
        default_factory=list,
        description="default: everything the caller may see (published and deprecated; "
        "also drafts and retired entries in namespaces the caller may write)",
    )
    kind: list[schemas.Kind] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list, description="all given tags must be present")
    sort: Literal["relevance", "name", "-name", "updated", "-updated"] | None = Field(
        None, description="default: relevance with q, else -updated"
    )
    page: Annotated[int, Field(ge=1, le=10_000)] = 1
    per_page: Annotated[int, Field(ge=1, le=100)] = 20


_LIST_PARAMS = {
    n
    for n, f in SearchParams.model_fields.items()
    if f.annotation is not None and getattr(f.annotation, "__origin__", None) is list
}


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def _path(request: Request) -> tuple[str, str]:
    return request.path_params["namespace"], request.path_params["name"]


async def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Store calls are blocking (SQLAlchemy): keep them off the event loop."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def _link_header(request: Request, page: int, per_page: int, total: int) -> str:
    last = max(1, -(-total // per_page))
    links = []
    for rel, target in (("first", 1), ("prev", page - 1), ("next", page + 1), ("last", last)):
        if 1 <= target <= last and (rel in ("first", "last") or target != page):
            url = request.url.include_query_params(page=target, per_page=per_page)
            links.append(f'<{url}>; rel="{rel}"')
    return ", ".join(links)


async def search_capabilities(request: Request) -> Response:
    raw: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        raw[key] = values if key in _LIST_PARAMS else values[-1]
    params = parse_query(SearchParams, raw)
    filters = {
        facet: list(getattr(params, facet)) for facet in search.FACETS if getattr(params, facet)
    }
    query = search.SearchQuery(
        q=params.q,
        filters=filters,
        sort=params.sort or "",
        page=params.page,
        per_page=params.per_page,
    )
    page = await _run(_catalog(request).store.search, identity_of(request), query)
    await health_view.add_health(request, page.items)
    body = schemas.SearchPage(
        items=page.items,
        total=page.total,
        page=params.page,
        per_page=params.per_page,
        facets=page.facets,
    )
    link = _link_header(request, params.page, params.per_page, page.total)
    return json_response(body, **({"Link": link} if link else {}))


async def show_capability(request: Request) -> Response:
    namespace, name = _path(request)
    cap, etag = await _run(_catalog(request).store.describe, identity_of(request), namespace, name)
    if (unchanged := not_modified(request, etag)) is not None:
        return unchanged
    await health_view.add_health(request, [cap])  # live: not part of the ETag
    return json_response(cap, etag=etag)


async def list_versions(request: Request) -> Response:
    namespace, name = _path(request)
    items = await _run(_catalog(request).store.list_versions, identity_of(request), namespace, name)
    return json_response(schemas.VersionList(items=items))


async def show_version(request: Request) -> Response:
    namespace, name = _path(request)
    version, etag = await _run(
        _catalog(request).store.get_version,
        identity_of(request),
        namespace,
        name,
        request.path_params["version"],
    )
    return not_modified(request, etag) or json_response(version, etag=etag)


async def compare_versions(request: Request) -> Response:
    namespace, name = _path(request)
    params = parse_query(compat.CompareParams, dict(request.query_params))
    store, who = _catalog(request).store, identity_of(request)
    old, _ = await _run(store.get_version, who, namespace, name, params.from_)
    new, _ = await _run(store.get_version, who, namespace, name, params.to)
    return JSONResponse(compat.compare(old, new).model_dump(mode="json", by_alias=True))


def _check_new_address(namespace: str, name: str) -> None:
    errors = []
    if not names.is_namespace(namespace):
        errors.append(
            FieldError("namespace", f"invalid namespace {namespace!r}: {names.NAMESPACE_RULE}")
        )
    if not names.is_name(name):
        errors.append(FieldError("name", f"invalid capability name {name!r}: {names.NAME_RULE}"))
    if errors:
        raise ValidationFailed("; ".join(e.message for e in errors), errors=errors)


def _own_model(
    catalog: Catalog, namespace: str, name: str, spec: schemas.PublishRequest
) -> schemas.PublishRequest:
    """``spec`` with the model this node logged for ``namespace.name`` in its own MLflow,
    and that model's artifact URI as MLflow has it; any other model location is a 422
    naming the field. (An author never chooses what the node loads.)"""
    if spec.model_uri is None:
        why = "set by the node with the version's model_uri; without a model there is none"
        raise ValidationFailed(f"artifact_uri: {why}", errors=[FieldError("artifact_uri", why)])
    number = own_model_version(namespace, name, spec.model_uri)
    if number is None:
        rule = own_model_rule(namespace, name)
        raise ValidationFailed(
            f"model_uri {spec.model_uri!r} {rule}", errors=[FieldError("model_uri", rule)]
        )
    if catalog.publisher is None:
        why = "this node has no model store, so a version here cannot name a model"
        raise ValidationFailed(f"model_uri: {why}", errors=[FieldError("model_uri", why)])
    source = catalog.publisher.models.registered_source(namespace, name, number)
    if source is None:
        why = f"this node's MLflow has no version {number} of the model {namespace}.{name}"
        raise ValidationFailed(f"model_uri: {why}", errors=[FieldError("model_uri", why)])
    if spec.artifact_uri is not None and spec.artifact_uri != source:
        why = f"must be where this node's MLflow keeps {spec.model_uri} ({source}), or left out"
        raise ValidationFailed(f"artifact_uri: {why}", errors=[FieldError("artifact_uri", why)])
    return spec.model_copy(update={"artifact_uri": source})


async def publish_version(request: Request) -> Response:
    namespace, name = _path(request)
    _check_new_address(namespace, name)
    identity = identity_of(request)
    require(identity, Action.PUBLISH, namespace)
    catalog = _catalog(request)
    spec = await read_model(request, schemas.PublishRequest, catalog.max_body_bytes)
    if "access" in spec.model_fields_set:
        request.state.audit_action = Action.GRANT.value
        require(identity, Action.GRANT, namespace)
    require_binding(identity, spec.runtime, catalog.store.node_id)
    if catalog.check_version is not None:
        spec = await catalog.check_version(identity, namespace, name, spec)
    if spec.model_uri is not None or spec.artifact_uri is not None:
        spec = await _run(_own_model, catalog, namespace, name, spec)
    version = await _run(catalog.store.publish, namespace, name, spec)
    location = f"/v1/capabilities/{namespace}/{name}/versions/{version.version}"
    return json_response(version, status=201, Location=location)


async def publish_plugin(request: Request) -> Response:
    catalog = _catalog(request)
    identity = identity_of(request)
    # Writers only, before anything else: the answer lists the node's loaded plugins.
    require_role(identity, Action.PUBLISH)
    body = await read_model(request, schemas.PluginPublishRequest, catalog.max_body_bytes)
    if catalog.publisher is None:
        raise Unavailable("this node has no model store configured for publishing")
    cap = catalog.capabilities.get(body.capability)
    if cap is None:
        loaded = ", ".join(sorted(catalog.capabilities)) or "none"
        raise NotFound(
            f"no capability {body.capability!r} among the plugins loaded at this node "
            f"(loaded: {loaded})"
        )
    # A plugin's code is its department's: over HTTP it goes only into that namespace,
    # never into one whose author would then run (and expose) another department's code.
    namespace = catalog.publisher.default_namespace(cap)
    if namespace is None:
        why = (
            f"plugin {cap.plugin!r} names no department, so it cannot be published over "
            "HTTP; the node's operator publishes it with `yunnao publish --namespace`"
        )
        raise ValidationFailed(why, errors=[FieldError("namespace", why)])
    if body.namespace is not None and body.namespace != namespace:
        why = (
            f"{body.capability} belongs to plugin {cap.plugin!r} and is published only into "
            f"that plugin's own namespace, {namespace}"
        )
        raise Forbidden(
            f"namespace {body.namespace!r}: {why}", errors=[FieldError("namespace", why)]
        )
    _check_new_address(namespace, cap.name)
    require(identity, Action.PUBLISH, namespace)
    published = await _run(
        catalog.publisher.publish,
        cap,
        namespace=namespace,
        status=body.status,
        aliases=body.aliases,
    )
    version = published.version
    location = f"/v1/capabilities/{namespace}/{cap.name}/versions/{version.version}"
    return json_response(version, status=201, Location=location)


async def update_capability(request: Request) -> Response:
    namespace, name = _path(request)
    identity = identity_of(request)
    require(identity, Action.UPDATE, namespace)
    catalog = _catalog(request)
    patch = await read_model(request, schemas.MetaPatch, catalog.max_body_bytes)
    if "access" in patch.model_fields_set:
        request.state.audit_action = Action.GRANT.value
        require(identity, Action.GRANT, namespace)
    cap, etag = await _run(
        catalog.store.update_metadata,
        namespace,
        name,
        patch,
        if_match=request.headers.get("if-match"),
    )
    return json_response(cap, etag=etag)


async def transition_version(request: Request) -> Response:
    namespace, name = _path(request)
    require(identity_of(request), Action.TRANSITION, namespace)
    catalog = _catalog(request)
    body = await read_model(request, schemas.TransitionRequest, catalog.max_body_bytes)
    version, etag = await _run(
        catalog.store.transition,
        namespace,
        name,
        request.path_params["version"],
        body.status,
        if_match=request.headers.get("if-match"),
    )
    return json_response(version, etag=etag)


async def delete_capability(request: Request) -> Response:
    namespace, name = _path(request)
    require(identity_of(request), Action.DELETE, namespace)
    await _run(
        _catalog(request).store.delete, namespace, name, if_match=request.headers.get("if-match")
    )
    return Response(status_code=204)


CAP = "/v1/capabilities/{namespace}/{name}"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/publish",
        publish_plugin,
        "publishPlugin",
        "Publish a capability of a plugin loaded at this node (through MLflow)",
        body=schemas.PluginPublishRequest,
        response=schemas.Version,
        status=201,
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 502, 503),
        auth="required",
        tag="publishing",
        description="Validates the capability, logs it to MLflow as a pyfunc model, "
        "registers it as a version of `namespace.name` with the given aliases, and records "
        "the registry entry pointing at `models:/namespace.name/N`. A failure at any step "
        "removes what earlier steps made.",
    ),
    Endpoint(
        "GET",
        "/v1/capabilities",
        search_capabilities,
        "searchCapabilities",
        "Search the catalog (full text, facets, pagination)",
        query=SearchParams,
        response=schemas.SearchPage,
        errors=(400, 401),
        description="Results and facet counts include only entries the caller may "
        "discover. Pagination links are also in the `Link` header.",
    ),
    Endpoint(
        "GET",
        CAP,
        show_capability,
        "getCapability",
        "Show a capability",
        response=schemas.Capability,
        errors=(401, 404),
        conditional=True,
    ),
    Endpoint(
        "PATCH",
        CAP,
        update_capability,
        "updateCapability",
        "Update a capability's metadata (fields not given stay as they are)",
        body=schemas.MetaPatch,
        response=schemas.Capability,
        errors=(400, 401, 403, 404, 412, 413, 415, 422),
        auth="required",
        conditional=True,
    ),
    Endpoint(
        "DELETE",
        CAP,
        delete_capability,
        "deleteCapability",
        "Delete a capability (a tombstone in the change log)",
        status=204,
        errors=(401, 403, 404, 412),
        auth="required",
        conditional=True,
    ),
    Endpoint(
        "GET",
        CAP + "/versions",
        list_versions,
        "listVersions",
        "List a capability's versions, newest first",
        response=schemas.VersionList,
        errors=(401, 404),
    ),
    Endpoint(
        "POST",
        CAP + "/versions",
        publish_version,
        "publishVersion",
        "Publish a new version (creates the capability on its first version)",
        body=schemas.PublishRequest,
        response=schemas.Version,
        status=201,
        errors=(400, 401, 403, 409, 413, 415, 422),
        auth="required",
    ),
    Endpoint(
        "GET",
        CAP + "/compare",
        compare_versions,
        "compareVersions",
        "Compare two versions' schemas and examples, with what breaks callers",
        query=compat.CompareParams,
        response=compat.Comparison,
        errors=(400, 401, 404),
        description="`from` is the version callers use now, `to` the other. A minor or "
        "patch version that breaks callers of the version before it in its major is "
        "refused at publish (409 `breaking-change`); this shows why, or what a new major "
        "changes.",
    ),
    Endpoint(
        "GET",
        CAP + "/versions/{version}",
        show_version,
        "getVersion",
        "Show a version",
        response=schemas.Version,
        errors=(401, 404),
        conditional=True,
    ),
    Endpoint(
        "POST",
        CAP + "/versions/{version}/lifecycle",
        transition_version,
        "transitionVersion",
        "Move a version along draft → published → deprecated → retired",
        body=schemas.TransitionRequest,
        response=schemas.Version,
        errors=(400, 401, 403, 404, 409, 412, 413, 415, 422),
        auth="required",
        conditional=True,
    ),
)


def routes(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> list[Route]:
    return [Route(e.path, e.handler, methods=[e.method], name=e.operation_id) for e in endpoints]
