"""A try-it problem's field errors in the page's language, naming the limit.

The API's problem stays as the gateway wrote it (English, from JSON Schema's own
messages: "[1, 2] is too short"). For the page, the input the visitor sent is checked
again against the version's input schema: each violation's keyword (``minItems``,
``maximum``, ``pattern``...) and the schema's value for it give a message in the
visitor's language that says what the limit is ("至少 24 项，当前 2 项"). Field errors
that do not come from the schema (the form's own, a capability's own checks) keep their
text, the form's translated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from yunnao.plugins.errors import FieldError

Translate = Callable[..., str]

# What each JSON type is called in a message (message ids, translated per page).
TYPE_NAMES = {
    "number": "a number",
    "integer": "an integer",
    "string": "text",
    "array": "a list",
    "object": "an object",
    "boolean": "true or false",
    "null": "empty (null)",
}
# keyword -> message; {n} is the schema's value, {got} what was sent (its size or value).
MESSAGES = {
    "minItems": "At least {n} items; {got} given",
    "maxItems": "At most {n} items; {got} given",
    "minimum": "At least {n}; {got} given",
    "maximum": "At most {n}; {got} given",
    "exclusiveMinimum": "Greater than {n}; {got} given",
    "exclusiveMaximum": "Less than {n}; {got} given",
    "minLength": "At least {n} characters; {got} given",
    "maxLength": "At most {n} characters; {got} given",
    "minProperties": "At least {n} fields; {got} given",
    "maxProperties": "At most {n} fields; {got} given",
    "multipleOf": "A multiple of {n}; {got} given",
    "pattern": "Must match the pattern {n}",
    "format": "Must be in the format {n}",
    "enum": "One of: {n}",
    "const": "Must be {n}",
    "uniqueItems": "Each item must be different",
    "type": "Must be {n}; {got} given",
}
# The form's own messages (catalog_ui/forms.py), by their English start.
_FORM = (
    (re.compile(r"^not JSON: (.*)$", re.S), "Not valid JSON: {got}"),
    (re.compile(r"^not an integer: (.*)$", re.S), "Not an integer: {got}"),
    (re.compile(r"^not a number: (.*)$", re.S), "Not a number: {got}"),
)
_PLAIN = {
    "field required": "Required",
    "unknown field": "Not a field of this input",
    "expected an object": "Must be an object of the capability's parameters",
}


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for kind, names in (("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, names):
            return kind
    return "object"


def _path(err: ValidationError, prefix: str) -> str:
    path = prefix
    for part in err.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def message(err: ValidationError, _: Translate) -> str:
    """One schema violation in the page's language, naming its limit."""
    keyword, limit, sent = str(err.validator), err.validator_value, err.instance
    template = MESSAGES.get(keyword)
    if template is None:
        return err.message
    if keyword in ("minItems", "maxItems", "minLength", "maxLength"):
        got: Any = len(sent) if isinstance(sent, list | str) else _shown(sent)
    elif keyword in ("minProperties", "maxProperties"):
        got = len(sent) if isinstance(sent, dict) else _shown(sent)
    elif keyword == "type":
        kinds = limit if isinstance(limit, list) else [limit]
        wanted = _(" or ").join(_(TYPE_NAMES.get(str(k), str(k))) for k in kinds)
        return _(template, n=wanted, got=_(TYPE_NAMES[_type_of(sent)]))
    else:
        got = _shown(sent)
    if keyword == "enum":
        n = _(", ").join(_shown(v) for v in limit)
    elif keyword in ("pattern", "format"):
        n = str(limit)
    else:
        n = _shown(limit)
    return _(template, n=n, got=got)


def schema_messages(
    schema: dict[str, Any], data: Any, _: Translate, prefix: str = "input"
) -> dict[str, list[str]]:
    """Field path -> the messages of ``data``'s violations of ``schema`` there."""
    out: dict[str, list[str]] = {}
    try:
        errors = list(Draft202012Validator(schema).iter_errors(data))
    except Exception:
        return out
    for err in errors:
        path = _path(err, prefix)
        if err.validator in ("required", "additionalProperties"):
            continue  # these name a field of their own: the plain messages cover them
        out.setdefault(path, []).append(message(err, _))
    return out


def localize(
    errors: list[FieldError],
    _: Translate,
    *,
    schema: dict[str, Any] | None = None,
    data: Any = None,
) -> list[tuple[str, str]]:
    """``errors`` (of a problem) as (field, message in the page's language): from the
    schema where the input violated it, else the form's and plain messages translated,
    else the message as it came."""
    found = schema_messages(schema, data, _) if schema is not None and data is not None else {}
    out = []
    for e in errors:
        queue = found.get(e.field)
        if queue is not None:
            # Every limit the field breaks, once (checks that stop at the first one,
            # such as a capability's own, report fewer than the schema finds).
            if queue:
                out.append((e.field, _("; ").join(queue)))
                queue.clear()
            continue
        if e.message.lower() in _PLAIN:
            out.append((e.field, _(_PLAIN[e.message.lower()])))
            continue
        for pattern, template in _FORM:
            m = pattern.match(e.message)
            if m:
                out.append((e.field, _(template, got=m.group(1))))
                break
        else:
            out.append((e.field, e.message))
    return out
