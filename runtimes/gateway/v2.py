"""The Open Inference Protocol (KServe V2), for capabilities whose parameters and
results are tensors and scalars, so ``tritonclient.http`` and KServe V2 clients call
them unchanged, whatever runtime serves them.

A capability ``namespace/name`` is the V2 model ``namespace.name`` (names have no
dots, so the last dot splits them); V2 model versions are capability versions. Each
top-level input field is a V2 input: an ``x-tensor`` field has its declared datatype
and shape; a number, integer, boolean or string field is a one-element FP64, INT64,
BOOL or BYTES tensor; an image or file field is a one-element BYTES tensor (the file's
bytes in binary data, its base64 text in JSON). Outputs map the same way (a result that
is not an object is the single output ``output``); a capability with an output that
does not map is refused (400 naming it) rather than answered with fewer outputs. Both
JSON and the binary tensor extension (``Inference-Header-Content-Length``) are
understood, in requests and responses. Calls take the gateway's path (access,
validation, hooks, runtime, usage records). Errors are problem documents that also
carry V2's ``error`` member.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunnao.plugins.errors import BadRequest, FieldError, NotFound, ValidationFailed, YunnaoError
from yunnao.plugins.media import encoded, media_fields, payload
from yunnao.plugins.tensor import DATATYPES
from yunnao.registry.api import Endpoint
from yunnao.registry.http import parse_json, read_body
from yunnao.registry.identity.middleware import identity_of

from ..adapters.base import Target
from .calls import Call

HEADER_LENGTH = "inference-header-content-length"
MAX_DIMS = 32  # numpy takes at most 64; no capability's tensor has more than a few
_SCALARS = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}


def _spec(prop: dict[str, Any]) -> tuple[str, list[int]] | None:
    """(datatype, shape) of one schema field, or None if it is not a tensor or scalar."""
    if "x-tensor" in prop:
        return prop["x-tensor"]["datatype"], list(prop["x-tensor"]["shape"])
    kind = prop.get("type")
    if isinstance(kind, str) and kind in _SCALARS:
        return _SCALARS[kind], [1]
    return None


def tensor_specs(schema: dict[str, Any]) -> dict[str, tuple[str, list[int]]] | None:
    """The V2 tensors of an input or output schema, or None if it does not map."""
    if schema.get("type") == "object" and "properties" in schema:
        specs = {}
        for name, prop in schema["properties"].items():
            spec = _spec(prop)
            if spec is None:
                return None
            specs[name] = spec
        return specs
    spec = _spec(schema)
    return {"output": spec} if spec is not None else None


def unexpressible_outputs(schema: dict[str, Any]) -> list[str]:
    """The outputs of an output schema that are not V2 tensors or scalars (``output`` for
    a whole result that is neither); empty when every output maps."""
    if schema.get("type") == "object" and isinstance(schema.get("properties"), dict):
        return [n for n, prop in schema["properties"].items() if _spec(prop) is None]
    return [] if _spec(schema) is not None else ["output"]


def v2_callable(input_schema: dict[str, Any], output_schema: dict[str, Any]) -> bool:
    """Whether a capability can be called over V2: its inputs and its outputs all map to
    tensors (what the V2 routes check; the catalog offers a tritonclient snippet then)."""
    return tensor_specs(input_schema) is not None and not unexpressible_outputs(output_schema)


def _model(request: Request) -> tuple[str, str]:
    model = request.path_params["model"]
    namespace, dot, name = model.rpartition(".")
    if not dot:
        raise NotFound(f"no model {model!r}: V2 model names are <namespace>.<name>")
    return namespace, name


def _name_ref(request: Request) -> str:
    _, name = _model(request)
    version = request.path_params.get("version")
    return f"{name}@{version}" if version else name


def _tensor_capability(call: Call) -> None:
    """V2 serves capabilities whose parameters and results are all tensors and scalars:
    one whose parameters are not is no V2 model (404); one whose outputs are not is
    refused before it runs (400 naming them), rather than answering no outputs."""
    if tensor_specs(dict(call.target.input_schema)) is None:
        raise NotFound(
            f"{call.target.id} is not a tensor capability (its parameters are not all tensors "
            "and scalars): call it with POST /v1/invoke"
        )
    bad = unexpressible_outputs(dict(call.target.output_schema))
    if bad:
        raise BadRequest(
            f"{call.target.id} answers {', '.join(bad)}, which V2 cannot express as tensors "
            "(only tensors and number, integer, boolean or string values are): call it "
            "with POST /v1/invoke",
            errors=[FieldError(f"outputs.{n}", "not a tensor or scalar") for n in bad],
        )


async def _call(request: Request) -> Call:
    namespace, _ = _model(request)
    gateway = request.app.state.invoker.gateway
    call = await gateway.resolve(identity_of(request), namespace, _name_ref(request))
    _tensor_capability(call)
    return call


def v2_errors(handler: Callable[[Request], Awaitable[Response]]) -> Any:
    """Problems from V2 routes also carry ``error``, the member V2 clients read."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except YunnaoError as exc:
            exc.extra.setdefault("error", f"{exc.title}: {exc.detail}")
            raise

    wrapped.__name__ = handler.__name__
    return wrapped


# ---------------------------------------------------------------- health, metadata


async def server_metadata(request: Request) -> Response:
    return JSONResponse(
        {
            "name": "yunnao",
            "version": metadata.version("yunnao"),
            "extensions": ["binary_tensor_data"],
        }
    )


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True})


def _tensor_metadata(schema: dict[str, Any]) -> list[dict[str, Any]]:
    specs = tensor_specs(schema) or {}
    return [{"name": n, "datatype": d, "shape": s} for n, (d, s) in specs.items()]


async def model_metadata(request: Request) -> Response:
    call = await _call(request)
    target = call.target
    return JSONResponse(
        {
            "name": request.path_params["model"],
            "versions": [target.version],
            "platform": f"yunnao-{target.runtime}",
            "inputs": _tensor_metadata(dict(target.input_schema)),
            "outputs": _tensor_metadata(dict(target.output_schema)),
        }
    )


async def model_ready(request: Request) -> Response:
    await _call(request)
    return JSONResponse({"name": request.path_params["model"], "ready": True})


# ---------------------------------------------------------------- inference


def _decode_bytes(raw: bytes, *, text: bool = True) -> list[Any]:
    """A binary BYTES tensor's elements: text, or (``text=False``, a file's) bytes."""
    items: list[Any] = []
    at = 0
    while at < len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        data = raw[at + 4 : at + 4 + size]
        if at + 4 + size > len(raw):
            raise ValueError(f"an element of {size} bytes runs past the data")
        items.append(data.decode("utf-8") if text else data)
        at += 4 + size
    return items


def _encode_bytes(items: list[str | bytes]) -> bytes:
    out = b""
    for item in items:
        data = item if isinstance(item, bytes) else item.encode("utf-8")
        out += struct.pack("<I", len(data)) + data
    return out


def _invalid(field: str, message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[FieldError(field, message)])


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _input_value(
    i: int,
    tensor: dict[str, Any],
    spec: tuple[str, list[int]],
    blob: bytes,
    at: int,
    *,
    file: bool = False,
) -> tuple[Any, int]:
    """One V2 input as the JSON value of its field; and where the next binary part starts."""
    where = f"inputs[{i}]"
    datatype = spec[0]
    name, given = tensor.get("name"), tensor.get("datatype")
    shape = tensor.get("shape")
    if given != datatype:
        raise _invalid(
            f"{where}.datatype",
            f"expected {datatype}",
            f"{where} ({name}): datatype {given}, expected {datatype}",
        )
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        raise _invalid(
            f"{where}.shape",
            "a list of non-negative integers",
            f"{where} ({name}): shape must be a list of sizes",
        )
    if len(shape) > MAX_DIMS:
        raise _invalid(
            f"{where}.shape",
            f"at most {MAX_DIMS} dimensions",
            f"{where} ({name}): shape has {len(shape)} dimensions, at most {MAX_DIMS} are taken",
        )
    count = math.prod(shape)  # exact: no overflow, whatever the sizes
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None and not _is_size(size):
        raise _invalid(
            f"{where}.parameters.binary_data_size",
            "a non-negative integer",
            f"{where} ({name}): binary_data_size must be a number of bytes, not {size!r}",
        )
    try:
        if size is not None:
            raw, at = blob[at : at + size], at + size
            if len(raw) != size:
                raise BadRequest(f"{where} ({name}): binary data shorter than {size} bytes")
            if datatype == "BYTES":
                elements = _decode_bytes(raw, text=not file)
                values: Any = np.empty(len(elements), dtype=object)
                values[:] = elements
            else:
                values = np.frombuffer(raw, dtype=DATATYPES[datatype])
        else:
            if "data" not in tensor:
                raise _invalid(
                    f"{where}.data",
                    "field required",
                    f"{where} ({name}) has neither data nor binary_data_size",
                )
            data = tensor["data"]
            if datatype == "BYTES":
                values = np.asarray(data, dtype=object).reshape(-1)
                if not all(isinstance(v, str) for v in values):
                    raise _invalid(
                        f"{where}.data",
                        "strings, in a flat list or nested as the shape",
                        f"{where} ({name}): BYTES data must be strings",
                    )
            else:
                values = np.asarray(data, dtype=DATATYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError, struct.error, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"{where} ({name}): cannot read its {datatype} data: {exc}",
            errors=[FieldError(f"{where}.data", f"not {datatype} data: {exc}")],
        ) from None
    if values.size != count:
        raise _invalid(
            f"{where}.shape",
            f"holds {count} elements, data has {values.size}",
            f"{where} ({name}): {values.size} elements do not fill shape {shape}",
        )
    try:
        return values.reshape(shape), at
    except (ValueError, OverflowError) as exc:  # e.g. [0, 2**70]: no elements, too large
        raise _invalid(
            f"{where}.shape", f"not a shape numpy can take: {exc}", f"{where} ({name}): {exc}"
        ) from None


def _check_header(header: dict[str, Any]) -> None:
    """The members of an inference request that name things are what V2 says they are
    (so that a list where an object belongs is a 422 naming it, not a failure)."""

    def parameters(value: Any, where: str) -> None:
        if value is not None and not isinstance(value, dict):
            raise _invalid(where, "an object", f"{where} must be an object")

    parameters(header.get("parameters"), "parameters")
    tensors = header.get("inputs")
    if not isinstance(tensors, list):
        raise _invalid("inputs", "required", "inputs: expected a list of tensors")
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise _invalid(f"inputs[{i}]", "an object", f"inputs[{i}] must be a tensor object")
        if not isinstance(tensor.get("name"), str):
            raise _invalid(f"inputs[{i}].name", "a string", f"inputs[{i}]: name must be a string")
        parameters(tensor.get("parameters"), f"inputs[{i}].parameters")
    outputs = header.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise _invalid("outputs", "a list", "outputs must be a list of requested outputs")
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise _invalid(
                f"outputs[{i}]", "an object with a name", f"outputs[{i}] must name an output"
            )
        parameters(output.get("parameters"), f"outputs[{i}].parameters")


def _inputs(target: Target, header: dict[str, Any], blob: bytes) -> dict[str, Any]:
    specs = tensor_specs(dict(target.input_schema)) or {}
    _check_header(header)
    out: dict[str, Any] = {}
    at = 0
    for i, tensor in enumerate(header["inputs"]):
        name = tensor["name"]
        if name in out:
            raise _invalid(
                f"inputs[{i}].name", "named once", f"inputs[{i}]: input {name!r} is sent twice"
            )
        if name not in specs:
            raise ValidationFailed(
                f"inputs[{i}]: {target.id} has no input {name!r} (it has: {', '.join(specs)})",
                errors=[FieldError(f"inputs[{i}].name", "unknown input")],
            )
        prop = target.input_schema["properties"][name]
        file = "x-image" in prop or "x-file" in prop  # raw bytes, or base64 text
        array, at = _input_value(i, tensor, specs[name], blob, at, file=file)
        if file and array.size == 1:
            item = array.reshape(-1)[0]
            out[name] = encoded(item) if isinstance(item, bytes) else item
        elif "x-tensor" in prop:
            out[name] = array.tolist()
        elif array.size == 1:
            item = array.reshape(-1)[0]
            out[name] = item.item() if hasattr(item, "item") else item
        else:
            raise ValidationFailed(
                f"inputs[{i}] ({name}) is a scalar: send one element",
                errors=[FieldError(f"inputs[{i}].shape", "one element")],
            )
    return out


def _outputs(
    target: Target, output: Any, header: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    schema = dict(target.output_schema)
    specs = tensor_specs(schema) or {}
    values = output if "properties" in schema else {"output": output}
    params = header.get("parameters") or {}
    requested = {o.get("name"): o.get("parameters") or {} for o in header.get("outputs") or []}
    binary_default = bool(params.get("binary_data_output"))
    results, blobs = [], []
    props = schema.get("properties") or {"output": schema}
    for name, (datatype, _) in specs.items():
        if requested and name not in requested:
            continue
        value = values.get(name) if isinstance(values, dict) else None
        if value is None:
            continue
        prop = props.get(name) or {}
        if ("x-image" in prop or "x-file" in prop) and isinstance(value, str):
            value = _file_output(value, requested.get(name, {}).get("binary_data", binary_default))
        dtype = object if datatype == "BYTES" else DATATYPES[datatype]
        array = np.asarray(value, dtype=dtype)
        if array.ndim == 0:
            array = array.reshape(1)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if requested.get(name, {}).get("binary_data", binary_default):
            raw = (
                _encode_bytes([v if isinstance(v, bytes) else str(v) for v in array.reshape(-1)])
                if datatype == "BYTES"
                else array.tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = (
                [str(v) for v in array.reshape(-1)]
                if datatype == "BYTES"
                else array.reshape(-1).tolist()
            )
        results.append(entry)
    return results, blobs


def _file_output(value: str, binary: bool) -> str | bytes:
    """An image or file output: its bytes in binary data (what a tritonclient user
    saves), its base64 text in JSON."""
    if not binary:
        return value
    try:
        return payload(value)
    except ValueError:
        return value


async def infer(request: Request) -> Response:
    invoker = request.app.state.invoker
    namespace, _ = _model(request)
    header: dict[str, Any] = {}

    async def inputs(call: Call) -> dict[str, Any]:
        files = media_fields(dict(call.target.input_schema))
        limit = invoker.max_upload_bytes if files else invoker.max_body_bytes
        raw = await read_body(request, limit)
        length = request.headers.get(HEADER_LENGTH)
        if length is not None:
            if not length.isdigit() or int(length) > len(raw):
                raise BadRequest(
                    f"{HEADER_LENGTH} {length!r} does not fit the {len(raw)}-byte body"
                )
            head, blob = raw[: int(length)], raw[int(length) :]
        else:
            head, blob = raw, b""
        parsed = parse_json(head, what="inference request")
        if not isinstance(parsed, dict):
            raise BadRequest("inference request must be a JSON object")
        header.update(parsed)
        return _inputs(call.target, header, blob)

    answer = await invoker.gateway.call(
        identity_of(request),
        namespace,
        _name_ref(request),
        inputs,
        timeout=invoker.default_timeout,
        client=request.client.host if request.client else None,
        request_id=request.state.request_id,
        mode="v2",
        accept=_tensor_capability,
    )
    call, output = answer.call, answer.output
    outputs, blobs = _outputs(call.target, output, header)
    body: dict[str, Any] = {
        "model_name": request.path_params["model"],
        "model_version": call.target.version,
        "outputs": outputs,
    }
    if "id" in header:
        body["id"] = header["id"]
    text = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


M = "/v2/models/{model}"
MV = "/v2/models/{model}/versions/{version}"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v2", server_metadata, "v2ServerMetadata", "V2 server metadata", tag="v2"),
    Endpoint("GET", "/v2/health/live", live, "v2Live", "V2 liveness", tag="v2"),
    Endpoint("GET", "/v2/health/ready", ready, "v2Ready", "V2 readiness", tag="v2"),
    *(
        e
        for path, suffix in ((M, ""), (MV, "Version"))
        for e in (
            Endpoint("GET", path, v2_errors(model_metadata), f"v2ModelMetadata{suffix}",
                     "V2 model metadata (inputs and outputs as tensors)", tag="v2",
                     errors=(400, 401, 404, 410)),
            Endpoint("GET", path + "/ready", v2_errors(model_ready), f"v2ModelReady{suffix}",
                     "V2 model readiness", tag="v2", errors=(400, 401, 404, 410)),
            Endpoint("POST", path + "/infer", v2_errors(infer), f"v2Infer{suffix}",
                     "V2 inference (JSON or binary tensor data)", tag="v2",
                     errors=(400, 401, 403, 404, 410, 413, 422, 429, 500, 503, 504)),
        )
    ),
)  # fmt: skip
