"""An MLflow model signature from a capability's JSON Schemas.

Each input field becomes a named column (required or not) with MLflow's nearest type:
integers ``long``, numbers ``double``, arrays ``Array``, objects with properties
``Object``, free-form maps ``Map``; tensors become nested arrays of their element
type. Inputs are expected in their canonical JSON form (numbers as floats, as
``Capability.canonical_input`` gives them), since MLflow refuses an integer where a
double is declared. What MLflow's type system cannot say (unions of several types, arbitrary JSON)
becomes ``AnyType`` rather than a wrong type. The full JSON Schema stays in the
registry entry; the signature is what MLflow tools see.
"""

from __future__ import annotations

from typing import Any

from mlflow.models.signature import ModelSignature
from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Map, Object, Property, Schema

from yunnao.plugins.capability import Capability

_SCALARS = {
    "integer": DataType.long,
    "number": DataType.double,
    "string": DataType.string,
    "boolean": DataType.boolean,
}


def signature_of(cap: Capability) -> ModelSignature:
    """The MLflow signature of ``cap``. A capability without parameters gets no input
    schema (MLflow refuses an empty one), so MLflow does not check its input."""
    props = cap.input_schema.get("properties", {})
    inputs = _object_columns(cap.input_schema) if props else None
    outputs = Schema([ColSpec(_dtype(cap.output_schema, cap.output_schema.get("$defs", {})))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _object_columns(schema: dict[str, Any]) -> Schema:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return Schema(
        [
            ColSpec(_dtype(prop, defs), name=name, required=name in required)
            for name, prop in schema.get("properties", {}).items()
        ]
    )


def _dtype(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _dtype(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    tensor = schema.get("x-tensor")
    if tensor:
        # Elements as JSON carries them: float tensors arrive as doubles.
        datatype = tensor["datatype"]
        out: Any = (
            DataType.boolean
            if datatype == "BOOL"
            else DataType.long
            if "INT" in datatype
            else DataType.double
        )
        for _ in tensor["shape"]:
            out = Array(out)
        return out
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return _dtype(options[0], defs) if len(options) == 1 else AnyType()
    if "enum" in schema:
        kinds = {type(v) for v in schema["enum"]}
        if kinds == {str}:
            return DataType.string
        return DataType.long if kinds == {int} else AnyType()
    kind = schema.get("type")
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        return Array(_dtype(items, defs)) if isinstance(items, dict) else AnyType()
    if kind == "object":
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            return Object(
                [Property(n, _dtype(p, defs), required=n in required) for n, p in props.items()]
            )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") in _SCALARS:
            return Map(_SCALARS[extra["type"]])
    return AnyType()
