"""JSON Schemas as people read and fill them: a table of fields, and the "try it" form.

The form has one control per top-level property: a select for an enum, a checkbox for a
boolean, a number or text box for scalars, a file picker for an image or file, and a
JSON text area for arrays and objects (tensors included). An input schema that is not
an object of properties gets one JSON text area for the whole input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from yunnao.plugins.errors import BadRequest, FieldError, ValidationFailed
from yunnao.plugins.media import FORMATS, encoded
from yunnao.registry.http import parse_json

_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("pattern", "matches {}"),
    ("format", "format {}"),
)


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/X``) followed, and a lone
    ``anyOf [X, null]`` (an optional field) read as X."""
    for _ in range(8):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        options = schema.get("anyOf")
        if isinstance(options, list):
            real = [o for o in options if o.get("type") != "null"]
            if len(real) == 1:
                rest = {k: v for k, v in schema.items() if k != "anyOf"}
                schema = {**real[0], **rest}
                continue
        break
    return schema


def type_text(schema: dict[str, Any], root: dict[str, Any]) -> str:
    schema = resolve(schema, root)
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    described = schema.get("x-image")
    if isinstance(described, dict):
        formats = ", ".join(str(f).upper() for f in described.get("formats") or ())
        return f"image ({formats})" if formats else "image"
    if isinstance(schema.get("x-file"), dict):
        return "file"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(map(str, kind))
    if kind == "array":
        items = schema.get("items")
        return f"array of {type_text(items, root)}" if isinstance(items, dict) else "array"
    return str(kind or "any")


def stream_items(schema: dict[str, Any]) -> dict[str, Any]:
    """A streaming capability's item schema (its ``$defs`` kept); any other schema as it
    is."""
    if not schema.get("x-stream") or not isinstance(schema.get("items"), dict):
        return schema
    return {**schema["items"], "$defs": schema.get("$defs", {})}


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    required: bool
    description: str
    constraints: str


def rows(schema: dict[str, Any], *, depth: int = 2) -> list[Row]:
    """The fields of an object schema, nested objects (and arrays of them) expanded as
    ``parent.child`` / ``parent[].child`` down to ``depth`` levels."""
    out: list[Row] = []

    def walk(node: dict[str, Any], prefix: str, level: int) -> None:
        node = resolve(node, schema)
        required = set(node.get("required", []))
        for name, prop in (node.get("properties") or {}).items():
            prop_r = resolve(prop, schema)
            found = [t.format(prop_r[k]) for k, t in _CONSTRAINTS if k in prop_r]
            if "default" in prop_r:
                found.append(f"default {json.dumps(prop_r['default'], ensure_ascii=False)}")
            out.append(
                Row(
                    name=prefix + name,
                    type=type_text(prop_r, schema),
                    required=name in required,
                    description=str(prop_r.get("description") or prop_r.get("title") or ""),
                    constraints=", ".join(found),
                )
            )
            if level < depth:
                if prop_r.get("type") == "object":
                    walk(prop_r, f"{prefix}{name}.", level + 1)
                items = prop_r.get("items")
                if (
                    prop_r.get("type") == "array"
                    and isinstance(items, dict)
                    and resolve(items, schema).get("type") == "object"
                ):
                    walk(items, f"{prefix}{name}[].", level + 1)

    walk(schema, "", 1)
    return out


@dataclass(frozen=True)
class Field:
    name: str
    control: str  # select | checkbox | number | integer | text | json | file
    label: str
    required: bool
    value: str  # as shown in the control
    options: tuple[str, ...] = ()
    checked: bool = False
    help: str = ""
    accept: str = ""  # a file control's media types


WHOLE = "__input__"  # the one field of a form for a non-object input schema


def fields(schema: dict[str, Any], example: Any = None) -> list[Field]:
    """Controls for ``schema``, filled from ``example`` (an input), else defaults."""
    root = resolve(schema, schema)
    props = root.get("properties")
    if root.get("type") != "object" or not isinstance(props, dict):
        shown = json.dumps(example, ensure_ascii=False, indent=1) if example is not None else ""
        return [Field(WHOLE, "json", "input", True, shown)]
    given = example if isinstance(example, dict) else {}
    required = set(root.get("required", []))
    out = []
    for name, prop in props.items():
        p = resolve(prop, schema)
        value = given.get(name, p.get("default"))
        kind = p.get("type")
        help_text = str(p.get("description") or "")
        if isinstance(p.get("x-image"), dict) or isinstance(p.get("x-file"), dict):
            described = p.get("x-image") or {}
            accept = ",".join(FORMATS[f] for f in described.get("formats", ()) if f in FORMATS)
            if not described:
                accept = ",".join((p.get("x-file") or {}).get("media_types") or [])
            out.append(Field(name, "file", name, name in required, "", help=help_text,
                             accept=accept.replace("application/octet-stream", "")))  # fmt: skip
        elif "enum" in p:
            options = tuple(json.dumps(v, ensure_ascii=False) for v in p["enum"])
            shown = json.dumps(value, ensure_ascii=False) if value is not None else ""
            out.append(
                Field(name, "select", name, name in required, shown, options, help=help_text)
            )
        elif kind == "boolean":
            out.append(
                Field(name, "checkbox", name, False, "true", checked=bool(value), help=help_text)
            )
        elif kind in ("number", "integer", "string"):
            control = "text" if kind == "string" else kind
            shown = "" if value is None else str(value)
            out.append(Field(name, control, name, name in required, shown, help=help_text))
        else:
            shown = "" if value is None else json.dumps(value, ensure_ascii=False)
            out.append(Field(name, "json", name, name in required, shown, help=help_text))
    return out


def parse(form: dict[str, Any], controls: list[Field]) -> Any:
    """The input a submitted form means, or 422 naming each field that is not what its
    control takes (the gateway then checks the input against the schema). A file
    control's value is the uploaded file's bytes, sent on as base64."""
    errors: list[FieldError] = []
    data: dict[str, Any] = {}
    for f in controls:
        if f.control == "file":
            sent = form.get(f.name)
            if isinstance(sent, bytes) and sent:
                data[f.name] = encoded(sent)
            continue
        raw = str(form.get(f.name, ""))
        if f.control == "checkbox":
            data[f.name] = raw == "true"
            continue
        if raw.strip() == "":
            continue  # left empty: absent, the schema says whether that is allowed
        where = "input" if f.name == WHOLE else f"input.{f.name}"
        try:
            if f.control in ("json", "select"):
                value: Any = parse_json(raw, what=where)
            elif f.control == "integer":
                value = int(raw)
            elif f.control == "number":
                value = float(raw)
            else:
                value = raw
        except BadRequest as exc:  # not JSON, nested too deep, a number too long
            bad_json = "not valid JSON" in exc.detail
            errors.append(FieldError(where, f"not JSON: {raw[:80]!r}" if bad_json else exc.detail))
            continue
        except ValueError:  # also an integer of more digits than Python converts
            what = "an integer" if f.control == "integer" else "a number"
            errors.append(FieldError(where, f"not {what}: {raw[:80]!r}"))
            continue
        if f.name == WHOLE:
            return value
        data[f.name] = value
    if errors:
        raise ValidationFailed("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    return data
