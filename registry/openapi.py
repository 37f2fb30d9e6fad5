"""The OpenAPI 3.1 document, generated from the Endpoint declarations and pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .api import Endpoint
from .problems import MEDIA_TYPE
from .schemas import Problem

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted (queued as a job)",
    204: "No content",
    304: "Not modified",
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    410: "Gone (retired)",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests (see Retry-After)",
    500: "Capability failed (with an error id)",
    502: "Model store error",
    503: "Unavailable",
    504: "Timed out",
    508: "Loop detected (a forwarded call would visit a node twice)",
}
_REF = "#/components/schemas/{model}"


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": prop}
        if prop.get("type") == "array":
            param.update(style="form", explode=True)
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def document(
    endpoints: tuple[Endpoint, ...],
    *,
    title: str,
    version: str,
    extra_paths: dict[str, Any] | None = None,
) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Problem}
    for e in endpoints:
        models.update(m for m in (e.body, e.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    problem_ref = {"$ref": _REF.format(model="Problem")}

    paths: dict[str, Any] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "operationId": e.operation_id,
            "summary": e.summary,
            "tags": [e.tag],
            "responses": {},
        }
        if e.description:
            op["description"] = e.description
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"{(\w+)}", e.path)
        ]
        if e.query is not None:
            params += _query_parameters(e.query, schemas)
        if e.conditional:
            header = "If-None-Match" if e.method == "GET" else "If-Match"
            params.append(
                {"name": header, "in": "header", "required": False, "schema": {"type": "string"}}
            )
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=e.body.__name__)}}
                },
            }
        if e.raw_body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {e.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(e.status, "OK")}
        if e.response is not None:
            ok["content"] = {
                "application/json": {"schema": {"$ref": _REF.format(model=e.response.__name__)}}
            }
        op["responses"][str(e.status)] = ok
        if e.conditional and e.method == "GET":
            op["responses"]["304"] = {"description": _STATUS_TEXT[304]}
        for status in e.errors:
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": {MEDIA_TYPE: {"schema": problem_ref}},
            }
        if e.auth == "required":
            op["security"] = [{"bearer": []}]
        elif e.auth == "optional":
            op["security"] = [{}, {"bearer": []}]
        paths.setdefault(e.path, {})[e.method.lower()] = op
    for path, item in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
