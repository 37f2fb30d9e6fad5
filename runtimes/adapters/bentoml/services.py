"""Reading a BentoML 1.4 service's APIs as Yunnao capability specs, for publishing.

    from yunnao.runtimes.adapters.bentoml.services import service_capabilities

    for spec in service_capabilities("service:NoiseService", Path("examples/bento")):
        name = spec.pop("name")
        PublishRequest(version="1.0.0", **spec)  # POST .../{namespace}/{name}/versions

The service is imported the way ``bentoml serve`` imports it (``bentoml.load``), in this
process. Each API's input and output schema come from the pydantic models BentoML
builds for it (``APIMethod.input_spec`` / ``output_spec``), with BentoML's own schema
types made standard JSON Schema: a numpy/torch/tf tensor becomes nested arrays with
``x-tensor`` (datatype and shape, as Yunnao's tensor parameters carry), a DataFrame an
array of records or an object of columns.

APIs a JSON call cannot drive are left out, each with a warning in the log: tasks,
streaming outputs, file or image inputs and outputs, and a positional-only input that
is not an object.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

from yunnao.registry import names

log = logging.getLogger("yunnao.runtimes.bentoml_services")

# numpy / torch / tensorflow dtype names -> V2 tensor datatypes (yunnao.plugins.tensor).
_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


class _Unsupported(Exception):
    """An API whose input or output cannot travel as one JSON value."""


def service_capabilities(service_ref: str, working_dir: Path | None = None) -> list[dict[str, Any]]:
    """One spec per API of the BentoML service ``service_ref`` ("module:Class").

    Each spec has ``name`` (a registry name: the API name lowercased, ``_`` as ``-``)
    and the :class:`~yunnao.registry.schemas.PublishRequest` fields ``title``,
    ``summary``, ``description`` (from the API's docstring), ``input_schema``,
    ``output_schema`` and ``runtime`` (a ``bentoml`` binding that starts the service
    from ``working_dir``, default the current directory). Raises ``ValueError`` when
    the service cannot be imported or two APIs map to the same name."""
    import bentoml

    root = (working_dir or Path.cwd()).expanduser().resolve()
    try:
        # reload: a module of the same name (every example's "service") may be loaded.
        svc = bentoml.load(service_ref, working_dir=str(root), reload=True)
    except Exception as exc:
        raise ValueError(
            f"cannot import BentoML service {service_ref!r} from {root}: {exc}"
        ) from exc
    apis = getattr(svc, "apis", None)
    if apis is None:
        raise ValueError(f"{service_ref!r} is a BentoML <1.2 service: use @bentoml.service")
    specs: dict[str, dict[str, Any]] = {}
    for api_name, method in apis.items():
        try:
            spec = _spec(service_ref, root, api_name, method)
        except _Unsupported as exc:
            log.warning("BentoML API %s of %s left out: %s", api_name, service_ref, exc)
            continue
        if spec["name"] in specs:
            raise ValueError(
                f"BentoML APIs of {service_ref!r} clash as capability name {spec['name']!r}"
            )
        specs[spec["name"]] = spec
    return list(specs.values())


def capability_name(api_name: str) -> str:
    """A registry name for an API: lowercase, ``_`` as ``-``, at most 64 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", api_name.lower().replace("_", "-"))
    name = re.sub(r"-{2,}", "-", name).strip("-")[:64].rstrip("-")
    if not names.is_name(name):
        raise ValueError(f"BentoML API {api_name!r} has no valid capability name ({name!r})")
    return name


def _spec(service_ref: str, root: Path, api_name: str, method: Any) -> dict[str, Any]:
    if method.is_task:
        raise _Unsupported("a task API (submit, then poll) is not a call")
    if method.is_stream:
        raise _Unsupported("a streaming output is not one JSON value")
    if method.input_spec.multipart_fields:
        raise _Unsupported(f"file inputs {method.input_spec.multipart_fields} need multipart")
    input_schema = _json_schema(method.input_spec, "input")
    if input_schema.pop("root_input", False) and input_schema.get("type") != "object":
        raise _Unsupported("its positional-only input is not an object of named fields")
    output_schema = _json_schema(method.output_spec, "output")
    summary, description = _doc(method.doc)
    return {
        "name": capability_name(api_name),
        "title": api_name.replace("_", " ").strip().capitalize()[:200],
        "summary": summary,
        "description": description,
        "input_schema": input_schema,
        "output_schema": output_schema,
        "runtime": {
            "type": "bentoml",
            "config": {"service": service_ref, "api": api_name, "working_dir": str(root)},
        },
    }


def _json_schema(model: Any, which: str) -> dict[str, Any]:
    """The model's JSON Schema (a root model's is its root type's, unwrapped by BentoML)
    in validation mode, where BentoML describes tensors with dtype and shape."""
    schema = model.model_json_schema(mode="validation")
    if which == "output":
        schema.pop("root_input", None)
    # BentoML's generated model names ("Input", "PtIODescriptor") mean nothing to callers.
    title = str(schema.pop("title", "")).removesuffix("IODescriptor")
    if title and title != "Input":
        schema["title"] = title
    return _standard(schema, which)


def _standard(node: Any, which: str) -> Any:
    """``node`` with BentoML's schema types (tensor, dataframe, file) made standard."""
    if isinstance(node, list):
        return [_standard(v, which) for v in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    labels = {k: node[k] for k in ("title", "description") if k in node}
    if kind == "tensor":
        return {**labels, **_tensor(node)}
    if kind == "dataframe":
        if node.get("orient", "records") == "columns":
            return {**labels, "type": "object", "additionalProperties": {"type": "array"}}
        return {**labels, "type": "array", "items": {"type": "object"}}
    if kind == "file":
        raise _Unsupported(f"a file {which} is not JSON")
    return {k: _standard(v, which) for k, v in node.items()}


def _tensor(node: dict[str, Any]) -> dict[str, Any]:
    """Nested arrays of the tensor's rank, with ``x-tensor`` when dtype and shape are known."""
    dtype = node.get("dtype")
    datatype = _DATATYPES.get(str(dtype).removeprefix("torch.")) if dtype else None
    # BentoML writes an unknown dimension as -1 (or leaves the shape out).
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in node.get("shape") or ()]
    leaf: dict[str, Any] = (
        {"type": "boolean"}
        if datatype == "BOOL"
        else {"type": "integer"}
        if datatype and "INT" in datatype
        else {"type": "number"}
    )
    if not shape:
        return {"type": "array", "items": {"anyOf": [leaf, {"type": "array"}]}}
    out: dict[str, Any] = leaf
    for size in reversed(shape):
        out = {"type": "array", "items": out}
        if size > 0:
            out["minItems"] = out["maxItems"] = size
    if datatype:
        out["x-tensor"] = {"datatype": datatype, "shape": list(shape)}
    return out


def _doc(doc: str | None) -> tuple[str, str]:
    """Summary (the docstring's first paragraph, one line) and description (all of it)."""
    text = inspect.cleandoc(doc or "")
    first = " ".join(text.split("\n\n", 1)[0].split())
    if len(first) > 500:
        first = first[:497].rstrip() + "..."
    return first, text
