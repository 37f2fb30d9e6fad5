"""HTTP routes for the names people use: this node's titles and its departments'.

``GET /v1/node`` is open to every caller, as ``/v1/cascade/node`` is; the departments a
node knows are listed to signed-in callers only (which departments exist is not for
strangers). Changing titles needs the node's admin or operator (``name-node``), or for
a department also an author scoped to it (``name``).
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Unauthorized

from .access import Action, require
from .api import Endpoint
from .http import json_response, read_model
from .identity.middleware import identity_of
from .titles import NamespaceList, NamespaceOut, NodeOut, Titles, TitlesPatch

MAX_BODY = 16 << 10
NS = "/v1/namespaces/{namespace}"


def _titles(request: Request) -> Titles:
    titles: Titles = request.app.state.titles
    return titles


async def get_node(request: Request) -> Response:
    return json_response(await anyio.to_thread.run_sync(_titles(request).node))


async def set_node(request: Request) -> Response:
    titles = _titles(request)
    require(identity_of(request), Action.NAME_NODE, titles.node_id)
    patch = await read_model(request, TitlesPatch, MAX_BODY)
    return json_response(await anyio.to_thread.run_sync(titles.set_node, patch))


def _signed_in(request: Request) -> None:
    if not identity_of(request).authenticated:
        raise Unauthorized("departments are listed to signed-in callers: send a bearer token")


async def list_namespaces(request: Request) -> Response:
    _signed_in(request)
    items = await anyio.to_thread.run_sync(_titles(request).namespaces)
    return json_response(NamespaceList(items=items))


async def get_namespace(request: Request) -> Response:
    _signed_in(request)
    titles = _titles(request)
    found = await anyio.to_thread.run_sync(titles.namespace, request.path_params["namespace"])
    return json_response(found)


async def put_namespace(request: Request) -> Response:
    return await _write_namespace(request, create=True)


async def patch_namespace(request: Request) -> Response:
    return await _write_namespace(request, create=False)


async def _write_namespace(request: Request, *, create: bool) -> Response:
    titles = _titles(request)
    namespace = request.path_params["namespace"]
    titles.check_own(namespace)
    require(identity_of(request), Action.NAME, namespace)
    patch = await read_model(request, TitlesPatch, MAX_BODY)
    out, created = await anyio.to_thread.run_sync(
        lambda: titles.put_namespace(namespace, patch, create=create)
    )
    return json_response(out, status=201 if created else 200)


_WRITE_ERRORS = (400, 401, 403, 413, 415, 422)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/node",
        get_node,
        "getNodeTitles",
        "This node's id and titles (Chinese and English)",
        tag="names",
        response=NodeOut,
    ),
    Endpoint(
        "PATCH",
        "/v1/node",
        set_node,
        "setNodeTitles",
        "Set this node's titles (admin or operator of the node); the cascade carries them up",
        tag="names",
        body=TitlesPatch,
        response=NodeOut,
        errors=_WRITE_ERRORS,
        auth="required",
        description="A title left out stays; an empty one is cleared. Titles are at most "
        "200 characters, without control or format characters.",
    ),
    Endpoint(
        "PUT",
        "/v1/node",
        set_node,
        "putNodeTitles",
        "Set this node's titles (the same as PATCH)",
        tag="names",
        body=TitlesPatch,
        response=NodeOut,
        errors=_WRITE_ERRORS,
        auth="required",
    ),
    Endpoint(
        "GET",
        "/v1/namespaces",
        list_namespaces,
        "listNamespaces",
        "Every department known here with its node and titles",
        tag="names",
        response=NamespaceList,
        errors=(401,),
        auth="required",
    ),
    Endpoint(
        "GET",
        NS,
        get_namespace,
        "getNamespace",
        "A department's node and titles",
        tag="names",
        response=NamespaceOut,
        errors=(401, 404),
        auth="required",
    ),
    Endpoint(
        "PUT",
        NS,
        put_namespace,
        "putNamespace",
        "Create one of this node's departments, or set its titles (201 when created)",
        tag="names",
        body=TitlesPatch,
        response=NamespaceOut,
        errors=_WRITE_ERRORS,
        auth="required",
        description="Admins and operators of the node, and authors scoped to the "
        "department, may name it; a department of another node is a 403, whatever the "
        "token.",
    ),
    Endpoint(
        "PATCH",
        NS,
        patch_namespace,
        "setNamespaceTitles",
        "Set the titles of one of this node's departments (404 when it does not exist)",
        tag="names",
        body=TitlesPatch,
        response=NamespaceOut,
        errors=(*_WRITE_ERRORS, 404),
        auth="required",
    ),
)
