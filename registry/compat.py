"""Whether a new version keeps its callers working: schema compatibility within a major.

Semantic versioning promises that a minor or patch version does not break callers.
Publishing ``1.4.0`` is compared with the newest earlier version of major 1 (any status
but draft), and refused with each break named when it would break a caller that works
with that version:

- **input** (what callers send): a new required field; a field's type narrowed (number
  → integer, or a type taken away); an enum, const, range, length, item count or
  pattern made stricter or newly set; extra fields refused where they were allowed.
- **output** (what callers read): a field removed or no longer required; a field's type
  widened or changed (integer → number: a caller parsing integers breaks); an enum
  widened, a range loosened; a pattern or format changed.
- **examples**: an example input of the old version missing from the new one (callers
  copy them).

Adding an optional input, accepting more, returning more fields or narrower values is
compatible. Where two schemas use composition (``anyOf``, ``oneOf``, ``allOf``,
``$ref``, ``not``, ``if``) and differ there, the part is reported as a break: it cannot
be compared reliably, and a major version costs the author less than a surprise costs
every caller.

Major version 0 is initial development (as in Cargo): ``0.3.0`` may break ``0.2.x``,
but a patch ``0.2.1`` may not break ``0.2.0``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import semver
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, select

from yunnao.plugins.errors import BreakingChange, FieldError

from . import schemas
from .tables import CapabilityRow, VersionRow

_COMPOSED = ("anyOf", "oneOf", "allOf", "$ref", "not", "if", "then", "else", "$defs")
_COSMETIC = frozenset({"title", "description", "examples", "default", "$comment", "deprecated"})
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
# Lower bounds (a larger value is stricter) and upper bounds (a smaller one is stricter).
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


# What a break is, as a code (for pages in other languages) and its English message.
MESSAGES = {
    "example-removed": "example {title!r} was removed",
    "no-value": "changed from any value to no value",
    "any-value": "may now be any value",
    "composition": "its anyOf/oneOf/allOf/$ref part changed and cannot be compared",
    "type-changed": "type changed from {old} to {new}",
    "values-limited": "values limited to {values!r}",
    "was-limited": "was limited to {values!r}, now is not",
    "values-refused": "values {values!r} no longer accepted",
    "may-return": "may now return {values!r}",
    "rule-changed": "{rule} {old} → {new}",
    "newly-required": "newly required",
    "extra-refused": "fields it does not declare are now refused",
    "no-longer-accepted": "no longer accepted",
    "removed": "removed",
    "not-always-returned": "no longer always returned",
}


@dataclass(frozen=True)
class Break:
    field: str  # where: "input.speed", "output.items[].id", "examples[0]"
    code: str  # a key of MESSAGES
    params: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        return MESSAGES[self.code].format(**dict(self.params))

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def _b(field: str, code: str, **params: Any) -> Break:
    shown = {k: v if isinstance(v, str) else repr(v) for k, v in params.items()}
    return Break(field, code, tuple(shown.items()))


@dataclass(frozen=True)
class Change:
    """One difference between two versions' schemas (breaking or not), for the diff view."""

    field: str
    kind: str  # added | removed | changed
    old: Any
    new: Any
    breaking: bool


def baseline(new: str, existing: Iterable[tuple[str, str]]) -> str | None:
    """The version ``new`` must stay compatible with: the newest of ``existing``
    ((version, status) pairs) below it in the same compatibility line, drafts left out;
    None when ``new`` starts a line (a new major, or a new minor of major 0)."""
    target = semver.Version.parse(new)
    best: semver.Version | None = None
    for number, status in existing:
        if status == "draft":
            continue
        v = semver.Version.parse(number)
        same_line = v.major == target.major and (target.major > 0 or v.minor == target.minor)
        if same_line and v < target and (best is None or v > best):
            best = v
    return str(best) if best is not None else None


def next_line(version: str) -> str:
    """The first version of the next compatibility line: ``2.0.0`` after ``1.4.0``,
    ``0.3.0`` after ``0.2.1``."""
    v = semver.Version.parse(version)
    return str(v.bump_major() if v.major > 0 else v.bump_minor())


def breaks(old: dict[str, Any], new: dict[str, Any]) -> list[Break]:
    """What in ``new`` (a version's ``input_schema``, ``output_schema`` and ``examples``)
    breaks a caller of ``old``."""
    out: list[Break] = []
    _accepts_all(new.get("input_schema") or {}, old.get("input_schema") or {}, "input", out)
    _keeps_promises(old.get("output_schema") or {}, new.get("output_schema") or {}, "output", out)
    kept = {_canonical(e.get("input")) for e in new.get("examples") or []}
    for i, example in enumerate(old.get("examples") or []):
        if _canonical(example.get("input")) not in kept:
            title = example.get("title") or f"#{i + 1}"
            out.append(_b(f"examples[{i}]", "example-removed", title=title))
    return out


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference of the two versions' schemas and examples, breaking ones marked."""
    breaking = {b.field for b in breaks(old, new)}
    out: list[Change] = []
    for part in ("input_schema", "output_schema"):
        side = part.split("_")[0]
        a, b = _flatten(old.get(part) or {}, side), _flatten(new.get(part) or {}, side)
        for key in sorted(a.keys() | b.keys()):
            if a.get(key, _MISSING) == b.get(key, _MISSING):
                continue
            field, _, rule = key.rpartition("#")
            kind = "added" if key not in a else "removed" if key not in b else "changed"
            out.append(
                Change(
                    f"{field} {rule}".strip(), kind, a.get(key), b.get(key),
                    rule not in _COSMETIC and field in breaking,
                )
            )  # fmt: skip
    old_examples = {_canonical(e.get("input")): e for e in old.get("examples") or []}
    new_examples = {_canonical(e.get("input")): e for e in new.get("examples") or []}
    for key in old_examples.keys() - new_examples.keys():
        out.append(Change("examples", "removed", old_examples[key].get("input"), None, True))
    for key in new_examples.keys() - old_examples.keys():
        out.append(Change("examples", "added", None, new_examples[key].get("input"), False))
    return out


def check_publish(s: Session, row: CapabilityRow, spec: schemas.PublishRequest) -> None:
    """Refuse a minor or patch version that breaks callers of the one before it in its
    major , naming each break."""
    existing = s.exec(
        select(VersionRow.version, VersionRow.status).where(VersionRow.capability_id == row.id)
    ).all()
    base = baseline(spec.version, [(v, st) for v, st in existing])
    if base is None:
        return
    old = s.exec(
        select(VersionRow).where(VersionRow.capability_id == row.id, VersionRow.version == base)
    ).one()
    found = breaks(
        {"input_schema": old.input_schema, "output_schema": old.output_schema,
         "examples": old.examples},
        spec.model_dump(include={"input_schema", "output_schema", "examples"}, mode="json"),
    )  # fmt: skip
    if found:
        raise BreakingChange(
            f"{row.namespace}/{row.name}@{spec.version} would break callers of {base}: "
            + "; ".join(f"{b.field}: {b.message}" for b in found)
            + f". Publish it as {next_line(spec.version)}, a new major version, instead",
            errors=[FieldError(b.field, b.message) for b in found],
        )


class CompareParams(BaseModel):
    """Query string of ``GET /v1/capabilities/{namespace}/{name}/compare``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: schemas.SemVer = Field(alias="from", description="the older version")
    to: schemas.SemVer = Field(description="the newer version")


class BreakOut(BaseModel):
    field: str = Field(description="where: input.speed, output.items[].id, examples[0]")
    message: str
    code: str = Field(description="what kind of break: " + ", ".join(MESSAGES))
    params: dict[str, str] = Field(description="what the message names, by name")


class ChangeOut(BaseModel):
    field: str = Field(description="the field and the rule that differs: input.speed type")
    kind: str = Field(description="added, removed or changed")
    old: Any = None
    new: Any = None
    breaking: bool


class Comparison(BaseModel):
    """What changed from one version to another, and what of it breaks callers."""

    from_: str = Field(serialization_alias="from")
    to: str
    checked_on_publish: bool = Field(
        description="whether `to` is a later minor or patch of `from`'s line, so that "
        "publishing it checks compatibility (a new major may break)"
    )
    compatible: bool = Field(description="no break: a caller of `from` works with `to`")
    breaks: list[BreakOut]
    changes: list[ChangeOut]


def compare(old: schemas.Version, new: schemas.Version) -> Comparison:
    """Compare two versions of one capability (``old`` the one callers use now)."""
    parts = {"input_schema", "output_schema", "examples"}
    a, b = old.model_dump(include=parts, mode="json"), new.model_dump(include=parts, mode="json")
    found = breaks(a, b)
    line = baseline(new.version, [(old.version, "published")]) == old.version
    return Comparison(
        from_=old.version, to=new.version, checked_on_publish=line, compatible=not found,
        breaks=[BreakOut(**x.as_dict(), code=x.code, params=dict(x.params)) for x in found],
        changes=[ChangeOut(**vars(c)) for c in changes(a, b)],
    )  # fmt: skip


# ---------------------------------------------------------------- rules

_MISSING = object()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _types(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a schema admits (every type when it names none)."""
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        return frozenset(_type_of(v) for v in values)
    t = schema.get("type")
    if t is None:
        return _ALL_TYPES
    found = frozenset([t] if isinstance(t, str) else t)
    return found | {"integer"} if "number" in found else found


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def _show(types: frozenset[str]) -> str:
    if types == _ALL_TYPES:
        return "any type"
    named = sorted(set(types) - ({"integer"} if "number" in types else set()))
    return " or ".join(named) if named else "nothing"


def _composed_differs(wide: dict[str, Any], narrow: dict[str, Any]) -> bool:
    return any(_canonical(wide.get(k)) != _canonical(narrow.get(k)) for k in _COMPOSED)


def _contains(wide: Any, narrow: Any, where: str, out: list[Break], *, input_side: bool) -> None:
    """Report where ``wide`` does not admit every value ``narrow`` admits, by the rules
    of this level. On the input side ``wide`` is the new version (it must accept what
    the old one accepted); on the output side it is the old one (the new may return
    only what the old could)."""
    if wide is True or wide == {} or narrow is False:
        return
    old, new = (narrow, wide) if input_side else (wide, narrow)
    if wide is False or narrow is True:
        out.append(_b(where, "no-value" if input_side else "any-value"))  # fmt: skip
        return
    if _composed_differs(wide, narrow):
        out.append(_b(where, "composition"))
        return
    if _types(narrow) - _types(wide):
        out.append(_b(where, "type-changed", old=_show(_types(old)), new=_show(_types(new))))
        return
    wide_enum, narrow_enum = _enum(wide), _enum(narrow)
    if wide_enum is not None:
        allowed = {_canonical(v) for v in wide_enum}
        if narrow_enum is None:
            code = "values-limited" if input_side else "was-limited"
            out.append(_b(where, code, values=wide_enum))
        else:
            extra = [v for v in narrow_enum if _canonical(v) not in allowed]
            if extra:
                code = "values-refused" if input_side else "may-return"
                out.append(_b(where, code, values=extra))
    for keys, looser in ((_LOWER, lambda n, w: n < w), (_UPPER, lambda n, w: n > w)):
        for key in keys:
            if key in wide and (key not in narrow or looser(narrow[key], wide[key])):
                out.append(_rule(where, key, old, new))
    for key in ("pattern", "format", "multipleOf"):
        if key in wide and wide[key] != narrow.get(key):
            out.append(_rule(where, key, old, new))


def _rule(where: str, key: str, old: dict[str, Any], new: dict[str, Any]) -> Break:
    return _b(where, "rule-changed", rule=key, old=old.get(key, "unset"),
              new=new.get(key, "unset"))  # fmt: skip


def _accepts_all(new: Any, old: Any, where: str, out: list[Break]) -> None:
    """Input: ``new`` must accept every request ``old`` accepted."""
    before = len(out)
    _contains(new, old, where, out, input_side=True)
    if len(out) > before or not isinstance(new, dict) or not isinstance(old, dict):
        return
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    for name in sorted(set(new.get("required") or []) - set(old.get("required") or [])):
        out.append(_b(f"{where}.{name}", "newly-required"))
    if new.get("additionalProperties", True) is False:
        if old.get("additionalProperties", True) is not False:
            out.append(_b(where, "extra-refused"))
        for name in sorted(set(old_props) - set(new_props)):
            out.append(_b(f"{where}.{name}", "no-longer-accepted"))
    for name in sorted(set(old_props) & set(new_props)):
        _accepts_all(new_props[name], old_props[name], f"{where}.{name}", out)
    if "items" in new or "items" in old:
        _accepts_all(new.get("items", {}), old.get("items", {}), where + "[]", out)


def _keeps_promises(old: Any, new: Any, where: str, out: list[Break]) -> None:
    """Output: every answer ``new`` gives must be one ``old`` could have given, in the
    fields callers read (new fields are fine: callers do not read them yet)."""
    before = len(out)
    _contains(old, new, where, out, input_side=False)
    if len(out) > before or not isinstance(new, dict) or not isinstance(old, dict):
        return
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    for name in sorted(set(old_props) - set(new_props)):
        out.append(_b(f"{where}.{name}", "removed"))
    for name in sorted(set(old.get("required") or []) - set(new.get("required") or [])):
        if name in new_props:
            out.append(_b(f"{where}.{name}", "not-always-returned"))
    for name in sorted(set(old_props) & set(new_props)):
        _keeps_promises(old_props[name], new_props[name], f"{where}.{name}", out)
    if "items" in new or "items" in old:
        _keeps_promises(old.get("items", {}), new.get("items", {}), where + "[]", out)


def _flatten(schema: Any, where: str) -> dict[str, Any]:
    """``{"field#rule": value}`` for every rule of every field, for the diff view."""
    out: dict[str, Any] = {}
    if not isinstance(schema, dict):
        out[f"{where}#schema"] = schema
        return out
    required = set(schema.get("required") or [])
    for key, value in schema.items():
        if key in ("properties", "items", "required"):
            continue
        out[f"{where}#{key}"] = value
    for name, sub in (schema.get("properties") or {}).items():
        out.update(_flatten(sub, f"{where}.{name}"))
        out[f"{where}.{name}#required"] = name in required
    if "items" in schema:
        out.update(_flatten(schema["items"], where + "[]"))
    return out
