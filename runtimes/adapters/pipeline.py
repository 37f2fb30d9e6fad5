"""Pipelines: a capability defined as a graph of other capabilities (runtime ``pipeline``).

A pipeline version's binding is its declaration (``yunnao pipeline publish FILE`` sends
it from a YAML file)::

    runtime:
      type: pipeline
      config:
        steps:
          - id: people                                    # a district's detector
            call: sd.qd.shinan.urban/people-detect
            input: {frame: $input.frame, min_confidence: 0.8}
            timeout: 20
          - id: crowd
            call: sd.qd.urban/crowd-level@1.0.0
            input: {frame: $input.frame}
          - id: risk                                       # the city's own counter
            call: sd.qd.urban/crowd-risk
            input: {people: $people.count, level: $crowd.level}
        output: {people: $people.count, level: $crowd.level, risk: $risk}

A step's input is built from the pipeline's input (``$input.<field>``), earlier steps'
outputs (``$<step>`` whole, ``$<step>.<field>``) and literal values. Steps run as soon
as the steps they read are done (independent ones at once).

- **At publish** (:func:`check`): every step's capability exists and is visible to the
  publishing author, each step gets every field it requires, and each value's schema
  fits the field it goes into (the types chain). The pipeline's input and output schemas
  are derived from the steps; an error names ``runtime.config.steps[i]...``.
- **At call time**, each step is an ordinary call through the gateway *as the caller*
  (access rules, rate limits, validation, usage records), forwarded to another node when
  the step's capability lives there. A step gets the time it declares (at most what is
  left of the caller's); a step that fails fails the pipeline with its own status and
  a problem naming the step (``steps.<id>``).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from yunnao.plugins.errors import (
    FieldError,
    InvocationTimeout,
    LoopDetected,
    NotDeployable,
    NotFound,
    ValidationFailed,
    YunnaoError,
    field_errors,
)
from yunnao.registry import names
from yunnao.registry.access import ANONYMOUS

from .base import RuntimeContext, RuntimeHealth, Target, current_call

REF = re.compile(r"^\$([a-z][a-z0-9_-]{0,39})(?:\.([A-Za-z_][A-Za-z0-9_]{0,63}))?$")
MAX_DEPTH = 8  # pipelines calling pipelines, at most
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("yunnao_pipeline_depth", default=0)
StepId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StepId
    call: Annotated[str, StringConstraints(max_length=500)] = Field(
        description="namespace/name, optionally @version or @latest"
    )
    input: dict[str, Any] = Field(default_factory=dict)
    timeout: Annotated[float, Field(gt=0, le=300)] | None = None


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: Annotated[list[Step], Field(min_length=1, max_length=32)]
    output: Annotated[dict[str, Any], Field(min_length=1)]


def parse(config: Mapping[str, Any], where: str = "runtime.config") -> Spec:
    """The declaration, or 422 naming what is wrong in it."""
    try:
        spec = Spec.model_validate(dict(config))
    except ValidationError as exc:
        errors = field_errors(exc, where)
        raise ValidationFailed(f"{errors[0].field}: {errors[0].message}", errors=errors) from None
    seen: set[str] = set()
    for i, step in enumerate(spec.steps):
        if step.id == "input" or step.id in seen:
            raise _invalid(
                f"{where}.steps[{i}].id", f"{step.id!r} is taken (input or an earlier step)"
            )
        seen.add(step.id)
        _ref(step.call, f"{where}.steps[{i}].call")
    return spec


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[FieldError(field, message)])


def _ref(call: str, field: str) -> tuple[str, str, str]:
    """(namespace, name, name_ref) of a step's ``call``."""
    path, _, version = call.partition("@")
    namespace, _, name = path.partition("/")
    if not names.is_namespace(namespace) or not names.is_name(name):
        raise _invalid(field, f"{call!r} is not namespace/name[@version]")
    if version and version != "latest" and not names.is_semver(version):
        raise _invalid(field, "a step names a version (or @latest), not an alias")
    return namespace, name, f"{name}@{version}" if version else name


def references(value: Any) -> list[tuple[str, str | None]]:
    """The ``$step.field`` references in a value (nested lists and objects too)."""
    if isinstance(value, str):
        found = REF.match(value)
        return [(found.group(1), found.group(2))] if found else []
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def build(value: Any, scope: Mapping[str, Any]) -> Any:
    """``value`` with each reference replaced by what it names in ``scope``."""
    if isinstance(value, str):
        found = REF.match(value)
        if not found:
            return value
        whole = scope[found.group(1)]
        field = found.group(2)
        return whole if field is None else (whole or {}).get(field)
    if isinstance(value, dict):
        return {k: build(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [build(v, scope) for v in value]
    return value


# ---------------------------------------------------------------- the check at publish

Describe = Callable[[str, str, str], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]


def _inline(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """``schema`` with local ``$ref``s replaced by what they name (self-contained)."""
    if depth > 12:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            named = defs.get(ref.removeprefix("#/$defs/"), {})
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _inline({**named, **rest}, defs, depth + 1)
        return {k: _inline(v, defs, depth + 1) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs, depth + 1) for v in schema]
    return schema


def _kind(schema: Mapping[str, Any]) -> str | None:
    if isinstance(schema.get("x-image"), dict) or isinstance(schema.get("x-file"), dict):
        return "file"
    kind = schema.get("type")
    return kind if isinstance(kind, str) else None


def fits(source: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """Why a value of schema ``source`` may not go into a field of schema ``target``,
    or None when it fits (an integer fits a number; a picture fits a picture or file)."""
    got, want = _kind(source), _kind(target)
    if got is None or want is None or got == want:
        if got == want == "array":
            items = fits(source.get("items") or {}, target.get("items") or {})
            return f"items: {items}" if items else None
        return None
    if got == "integer" and want == "number":
        return None
    return f"a {got} does not fit a {want}"


def _literal(value: Any) -> dict[str, Any]:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value))  # fmt: skip
    return {"type": kind} if kind else {}


def _source(step: str, part: str | None, outputs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The schema of ``$step`` or ``$step.part`` (an earlier step's output)."""
    schema = outputs[step]
    if part is None:
        return schema
    props = schema.get("properties") or {}
    if part not in props:
        raise _invalid(where, f"${step}.{part}: step {step!r} answers no {part!r}")
    return props[part]


async def check(
    namespace: str, name: str, config: Mapping[str, Any], describe: Describe
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a pipeline declaration (see the module) and derive its input and output
    schemas; 422 naming the first problem (a step that does not exist, or is not visible
    to the publishing author, is a bad field too)."""
    spec = parse(config)
    where = "runtime.config"
    inputs: dict[str, dict[str, Any]] = {}  # $input.<field> -> its schema (the first use's)
    required: set[str] = set()
    outputs: dict[str, dict[str, Any]] = {}  # step id -> its output schema (inlined)

    def source(value: Any, target: Mapping[str, Any], at: str, *, needed: bool) -> None:
        found = REF.match(value) if isinstance(value, str) else None
        if found is None:
            for ref_step, ref_part in references(value):  # nested: known, not typed
                if ref_step != "input" and ref_step not in outputs:
                    raise _invalid(at, f"${ref_step}: no earlier step {ref_step!r}")
                if ref_step != "input":
                    _source(ref_step, ref_part, outputs, at)
            why = None if references(value) else fits(_literal(value), target)
        elif found.group(1) == "input":
            key = found.group(2)
            if key is None:
                raise _invalid(at, "name a field of the input: $input.<field>")
            previous = inputs.setdefault(key, dict(target))
            why = fits(previous, target)
            if needed:
                required.add(key)
        else:
            step = found.group(1)
            if step not in outputs:
                later = any(s.id == step for s in spec.steps)
                raise _invalid(at, f"${step}: " + ("a step reads only earlier steps" if later
                                                   else "no such step"))  # fmt: skip
            why = fits(_source(step, found.group(2), outputs, at), target)
        if why is not None:
            raise _invalid(at, f"{value!r}: {why}")

    for i, step in enumerate(spec.steps):
        at = f"{where}.steps[{i}]"
        ns, step_name, name_ref = _ref(step.call, f"{at}.call")
        if (ns, step_name) == (namespace, name):
            raise _invalid(f"{at}.call", "a pipeline does not call itself")
        try:
            step_in, step_out = await describe(ns, step_name, name_ref)
        except NotFound as exc:
            raise _invalid(f"{at}.call", f"{exc.detail} (or it is not visible to you)") from None
        props = _inline(step_in.get("properties") or {}, step_in.get("$defs") or {})
        needs = set(step_in.get("required") or [])
        for field, value in step.input.items():
            if field not in props:
                raise _invalid(f"{at}.input.{field}", f"{step.call} has no input {field!r}")
            source(value, props[field], f"{at}.input.{field}", needed=field in needs)
        missing = sorted(needs - set(step.input))
        if missing:
            raise _invalid(f"{at}.input", f"{step.call} requires {', '.join(missing)}")
        outputs[step.id] = _inline(step_out, step_out.get("$defs") or {})
    out_props: dict[str, Any] = {}
    for field, value in spec.output.items():
        at = f"{where}.output.{field}"
        found = REF.match(value) if isinstance(value, str) else None
        if found and found.group(1) == "input":
            if found.group(2) not in inputs:
                raise _invalid(at, f"{value}: no step reads it (declare it through a step)")
            out_props[field] = inputs[found.group(2) or ""]
        elif found:
            if found.group(1) not in outputs:
                raise _invalid(at, f"{value}: no step {found.group(1)!r}")
            out_props[field] = _source(found.group(1), found.group(2), outputs, at)
        else:
            source(value, {}, at, needed=False)
            out_props[field] = _literal(value) if not references(value) else {}
    input_schema = {"type": "object", "properties": inputs, "required": sorted(required),
                    "additionalProperties": False}  # fmt: skip
    output_schema = {"type": "object", "properties": out_props, "required": sorted(out_props)}
    return input_schema, output_schema


# ---------------------------------------------------------------- the runtime

Call = Callable[
    ..., Awaitable[Any]
]  # (identity, namespace, name_ref, inputs, *, timeout, request_id)


def step_failed(step: Step, exc: YunnaoError) -> YunnaoError:
    """A step's failure as the pipeline's: the step's own status and kind, naming it."""
    failed = YunnaoError(
        f"step {step.id!r} ({step.call}): {exc.detail}",
        errors=[FieldError(f"steps.{step.id}", exc.detail), *exc.errors],
        extra={**exc.extra, "step": step.id},
    )
    failed.status, failed.slug, failed.title = exc.status, exc.slug, exc.title
    return failed


class PipelineRuntime:
    """Runs pipeline versions: each step a call through the gateway as the caller."""

    type = "pipeline"

    def __init__(self, config: Mapping[str, Any], context: RuntimeContext) -> None:
        self.context = context
        self._specs: dict[str, Spec] = {}

    async def deploy(self, target: Target) -> None:
        if self.context.call is None:
            raise NotDeployable(f"{target.id}: this node runs no pipelines (no gateway)")
        try:
            self._specs[target.slug] = parse(target.config)
        except ValidationFailed as exc:
            raise NotDeployable(f"{target.id}: {exc.detail}") from None

    async def undeploy(self, target: Target) -> None:
        self._specs.pop(target.slug, None)

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        if target.slug not in self._specs:
            await self.deploy(target)
        spec = self._specs[target.slug]
        depth = _depth.get()
        if depth >= MAX_DEPTH:
            raise LoopDetected(f"{target.id}: pipelines nested {depth} deep (a loop?)")
        call = current_call.get()
        caller = call.caller if call is not None else ANONYMOUS
        request_id = call.request_id if call is not None else None
        deadline = time.monotonic() + timeout
        scope: dict[str, Any] = {"input": inputs}
        done: dict[str, asyncio.Event] = {s.id: asyncio.Event() for s in spec.steps}
        assert self.context.call is not None
        run = self.context.call

        async def one(step: Step) -> None:
            for source, _ in references(step.input):
                if source != "input":
                    await done[source].wait()
            left = deadline - time.monotonic()
            if left <= 0:
                raise step_failed(step, _timed_out(target, step))
            namespace, _, name_ref = _ref(step.call, "call")
            _depth.set(depth + 1)
            try:
                scope[step.id] = await run(
                    caller, namespace, name_ref, build(step.input, scope),
                    timeout=min(step.timeout or left, left), request_id=request_id,
                )  # fmt: skip
            except YunnaoError as exc:
                raise step_failed(step, exc) from None
            done[step.id].set()

        tasks = [asyncio.create_task(one(step)) for step in spec.steps]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # the first failure stops the others
        return build(spec.output, scope)

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, "runs steps through the gateway")

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "deployed": sorted(self._specs)}

    async def close(self) -> None:
        self._specs.clear()


def _timed_out(target: Target, step: Step) -> YunnaoError:
    return InvocationTimeout(f"{target.id} had no time left for step {step.id!r}")
