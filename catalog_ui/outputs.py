"""A capability's output as people read it, by its output schema: an object as a table
of its fields (named by their titles, described by their descriptions), a list of
objects as a table with a column per field, an object of equally long lists (a forecast's
hours and counts) as one table with a column per list, numbers formatted, true and false
as yes and no. Tensors and anything deeper show as compact text. The raw JSON stays
available beside it (the template's ``<details>``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from .forms import resolve

Translate = Callable[..., str]
MAX_ROWS = 200  # longer lists show their first rows; the raw JSON has them all
MAX_TEXT = 300
_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")


def number(value: float | int, integer: bool = False) -> str:
    """``value`` with thousands separators and about six significant digits."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (integer and float(value).is_integer()):
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e15 or size < 1e-4:
        return f"{value:.4g}"
    decimals = max(0, min(6, 5 - math.floor(math.log10(size))))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _compact(value: Any) -> str:
    """A nested list (a tensor) or anything deep, as short text."""
    if isinstance(value, list):
        inner = ", ".join(_compact(v) for v in value[:8])
        return f"[{inner}{', …' if len(value) > 8 else ''}]"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return number(value)
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


_PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp")


def _picture(value: str, schema: dict[str, Any]) -> Markup:
    """An image output, shown as the picture it is (a data: URI of its own type only)."""
    kind = str(schema["x-image"].get("output") or "image/png")
    if kind not in _PICTURE_TYPES or not _BASE64.fullmatch(value[:4096]):
        return escape(value[:MAX_TEXT])
    title = str(schema.get("title") or "")
    return Markup('<img class="output-image" alt="{}" src="data:{};base64,{}">').format(
        title, kind, value
    )


class _View:
    def __init__(self, root: dict[str, Any], _: Translate) -> None:
        self.root = root
        self._ = _

    def schema(self, schema: Any) -> dict[str, Any]:
        return resolve(schema, self.root) if isinstance(schema, dict) else {}

    def cell(self, value: Any, schema: dict[str, Any], depth: int) -> Markup:
        schema = self.schema(schema)
        if value is None:
            return Markup('<span class="meta">-</span>')
        if isinstance(value, bool):
            return escape(self._("yes") if value else self._("no"))
        if isinstance(value, int | float):
            return Markup('<span class="num">{}</span>').format(
                number(value, schema.get("type") == "integer")
            )
        if isinstance(value, str) and isinstance(schema.get("x-image"), dict):
            return _picture(value, schema)
        if isinstance(value, str):
            return escape(value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…")
        if depth >= 3 or "x-tensor" in schema:
            return Markup('<code class="tensor">{}</code>').format(_compact(value))
        return self.value(value, schema, depth + 1)

    def label(self, name: str, schema: dict[str, Any]) -> Markup:
        title = str(schema.get("title") or "")
        shown = Markup("<code>{}</code>").format(name)
        if title and title.replace(" ", "_").lower() != name.lower():
            shown = Markup("{} {}").format(title, shown)
        description = str(schema.get("description") or "")
        if description:
            shown += Markup('<br><small class="meta">{}</small>').format(description)
        return shown

    def value(self, value: Any, schema: Any, depth: int = 0) -> Markup:
        schema = self.schema(schema)
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            columns = self.columns(value)
            if columns is not None:
                return self.table(
                    [dict(zip(value, row, strict=True)) for row in zip(*columns, strict=True)],
                    {k: self.column(self.schema(props.get(k))) for k in value},
                )
            rows = Markup("").join(
                Markup('<tr data-field="{}"><th scope="row">{}</th><td>{}</td></tr>').format(
                    k, self.label(k, self.schema(props.get(k))), self.cell(v, props.get(k), depth)
                )
                for k, v in value.items()
            )
            return Markup('<table class="output fields"><tbody>{}</tbody></table>').format(rows)
        if isinstance(value, list):
            items = self.schema(schema.get("items"))
            if value and all(isinstance(v, dict) for v in value):
                props = items.get("properties") or {}
                return self.table(value, {k: self.schema(p) for k, p in props.items()})
            if all(_scalar(v) for v in value) and len(value) <= 50:
                return Markup(", ").join(self.cell(v, items, depth) for v in value)
            return Markup('<code class="tensor">{}</code>').format(_compact(value))
        return self.cell(value, schema, depth)

    def column(self, prop: dict[str, Any]) -> dict[str, Any]:
        """A list field's items' schema, named and described as the field is."""
        named = {k: prop[k] for k in ("title", "description") if k in prop}
        return {**self.schema(prop.get("items")), **named}

    @staticmethod
    def columns(value: dict[str, Any]) -> list[list[Any]] | None:
        """The lists of an object whose fields are all equally long lists of scalars."""
        lists = list(value.values())
        if len(lists) < 2 or not all(isinstance(v, list) and v for v in lists):
            return None
        if len({len(v) for v in lists}) != 1 or not all(_scalar(x) for v in lists for x in v):
            return None
        return lists

    def table(self, rows: list[dict[str, Any]], schemas: dict[str, dict[str, Any]]) -> Markup:
        names = list(schemas)
        for row in rows:
            names += [k for k in row if k not in names]
        head = Markup("").join(
            Markup('<th scope="col">{}</th>').format(self.label(n, schemas.get(n, {})))
            for n in names
        )
        body = Markup("").join(
            Markup("<tr>{}</tr>").format(
                Markup("").join(
                    Markup("<td>{}</td>").format(self.cell(row.get(n), schemas.get(n, {}), 2))
                    for n in names
                )
            )
            for row in rows[:MAX_ROWS]
        )
        more = ""
        if len(rows) > MAX_ROWS:
            more = Markup('<p class="meta">{}</p>').format(
                self._("{n} more rows in the raw JSON", n=len(rows) - MAX_ROWS)
            )
        return Markup(
            '<div class="scroll"><table class="output rows"><thead><tr>{}</tr></thead>'
            "<tbody>{}</tbody></table></div>{}"
        ).format(head, body, more)


def render(output: Any, schema: dict[str, Any], _: Translate) -> Markup:
    """``output`` as HTML (escaped throughout), read by its output ``schema``."""
    view = _View(schema, _)
    shown = view.value(output, schema)
    if not isinstance(output, dict | list):
        return Markup('<p class="output scalar">{}</p>').format(shown)
    return shown
