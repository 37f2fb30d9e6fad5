"""The ``capability`` decorator: a typed Python callable becomes a described capability.

Input and output JSON Schemas come from the type hints, through pydantic: each
parameter of the function (or of a class's ``__call__``) is a field of the input
object; the return annotation is the output. Pydantic models, dataclasses, TypedDicts,
primitives, lists, literals and :data:`~yunnao.plugins.tensor.Tensor` all work. A
schema that cannot be derived is an error at decoration time, naming the capability
and the parameter, so a mistake is caught before anything is published.

A function is the whole capability. A class is a capability with state: its
``__init__`` receives the paths of the artifacts the capability ships (a trained model,
say), and its ``__call__`` does the work::

    @capability(name="flow-forecast", title="交通流量预测", artifacts={"model": "model.json"})
    class FlowForecast:
        def __init__(self, artifacts: dict[str, Path]) -> None:
            self.model = load(artifacts["model"])

        def __call__(self, counts: list[float], horizon: int = 12) -> list[float]:
            return self.model.predict(counts, horizon)
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from .errors import OutputInvalid, SpecError, ValidationFailed, field_errors

Kind = Literal["algorithm", "model"]
Domain = Literal["governance", "livelihood", "economy", "other"]
Classification = Literal["public", "internal", "restricted"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


@dataclass(frozen=True)
class Invocation:
    """One call of a capability, as the invocation hooks see it."""

    capability: str  # "namespace/name@version" at a node, the bare name in-process
    inputs: dict[str, Any]
    caller: str | None = None  # the caller's subject; None when anonymous
    request_id: str | None = None


@dataclass
class Capability:
    """A capability as its author declared it. Made by :func:`capability`."""

    name: str
    target: Callable[..., Any] | type
    title: str
    version: str
    summary: str = ""
    description: str = ""
    summary_en: str = ""  # for English pages, when summary and description are Chinese
    description_en: str = ""
    kind: Kind = "algorithm"
    domain: Domain = "other"
    tags: list[str] = field(default_factory=list)
    classification: Classification = "internal"
    owner: str = ""
    contact: str = ""
    license: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=lambda: {"type": "inprocess"})
    input_model: type[BaseModel] = field(init=False, repr=False)
    output_adapter: TypeAdapter[Any] = field(init=False, repr=False)
    input_schema: dict[str, Any] = field(init=False, repr=False)
    output_schema: dict[str, Any] = field(init=False, repr=False)
    # A generator (``-> Iterator[Item]``) streams its items: ``item_adapter`` checks
    # each, and the output schema is the list of them, marked ``x-stream``.
    item_adapter: TypeAdapter[Any] | None = field(init=False, repr=False, default=None)
    plugin: str | None = None  # the plugin that contributed it, set when loaded

    def __post_init__(self) -> None:
        self.input_model, self.output_adapter, self.item_adapter = _derive(self.name, self.target)
        try:
            self.input_schema = self.input_model.model_json_schema()
            self.output_schema = self.output_adapter.json_schema()
        except Exception as exc:  # pydantic raises several kinds here
            raise SpecError(f"capability {self.name!r}: cannot derive JSON Schema: {exc}") from None
        if self.item_adapter is not None:
            self.output_schema["x-stream"] = True

    @property
    def streaming(self) -> bool:
        """Whether it yields its output item by item (callers may stream it)."""
        return self.item_adapter is not None

    # ------------------------------------------------------------ identity

    @property
    def module(self) -> str:
        return self.target.__module__

    @property
    def qualname(self) -> str:
        return self.target.__qualname__

    @property
    def entry(self) -> str:
        """``module:qualname``, enough to import the target again elsewhere."""
        return f"{self.module}:{self.qualname}"

    @property
    def is_class(self) -> bool:
        return isinstance(self.target, type)

    def metadata(self) -> dict[str, Any]:
        """The registry metadata of this capability (the fields of a publish request)."""
        return {
            "title": self.title,
            "summary": self.summary,
            "description": self.description,
            "summary_en": self.summary_en,
            "description_en": self.description_en,
            "kind": self.kind,
            "domain": self.domain,
            "tags": list(self.tags),
            "classification": self.classification,
            "owner": self.owner,
            "contact": self.contact,
            "license": self.license,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "examples": list(self.examples),
            "runtime": dict(self.runtime),
        }

    # ------------------------------------------------------------ running

    def check_artifacts(self) -> None:
        """Raise :class:`SpecError` unless every declared artifact file exists. Checked
        when publishing, not when decorating, so a package can build its artifacts."""
        for key, path in self.artifacts.items():
            if not path.is_file():
                raise SpecError(f"capability {self.name!r}: artifact {key!r} not found at {path}")

    def instantiate(self, artifacts: Mapping[str, Path] | None = None) -> Callable[..., Any]:
        """The callable that does the work: the function itself, or an instance of the
        class built with ``artifacts`` (default: the declared local artifact paths)."""
        if not self.is_class:
            return self.target
        if artifacts is None:
            self.check_artifacts()
            artifacts = self.artifacts
        return self.target(dict(artifacts))

    def validate_input(self, data: Any) -> dict[str, Any]:
        """Check a JSON input; the keyword arguments for the callable, or
        :class:`ValidationFailed` naming every bad field as ``input.<path>``."""
        try:
            model = self.input_model.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(
                f"input does not match the schema of {self.name}",
                errors=field_errors(exc, "input"),
            ) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def canonical_input(self, data: Any) -> dict[str, Any]:
        """``data`` validated and dumped back to JSON: defaults filled in, numbers of
        float fields as floats, tensors as nested lists."""
        self.validate_input(data)  # for its error messages
        return self.input_model.model_validate(data).model_dump(mode="json")

    def dump_output(self, value: Any) -> Any:
        """Validate an output against the return type and turn it into JSON data.
        A mismatch is the capability's bug, reported as such."""
        try:
            checked = self.output_adapter.validate_python(value)
            return self.output_adapter.dump_python(checked, mode="json")
        except ValidationError as exc:
            raise OutputInvalid(
                f"{self.name} returned output that does not match its declared type",
                errors=field_errors(exc, "output"),
            ) from None

    def dump_item(self, value: Any) -> Any:
        """One streamed item validated against the item type and turned into JSON data."""
        assert self.item_adapter is not None
        try:
            return self.item_adapter.dump_python(
                self.item_adapter.validate_python(value), mode="json"
            )
        except ValidationError as exc:
            raise OutputInvalid(
                f"{self.name} yielded an item that does not match its declared type",
                errors=field_errors(exc, "output[]"),
            ) from None

    def run(self, data: Any, *, artifacts: Mapping[str, Path] | None = None) -> Any:
        """Validate ``data``, call the capability, validate and dump its output (a
        streaming capability's items, all of them, as a list)."""
        kwargs = self.validate_input(data)
        return self.call(self.instantiate(artifacts), kwargs)

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """The JSON output of ``fn`` (this capability's callable) on validated ``kwargs``."""
        if self.item_adapter is not None:
            return [self.dump_item(item) for item in fn(**kwargs)]
        return self.dump_output(fn(**kwargs))

    def stream(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        """The JSON items of a streaming capability's callable ``fn``, one at a time; the
        generator is closed (its ``finally`` runs) when the caller stops early."""
        generator = fn(**kwargs)
        try:
            for item in generator:
                yield self.dump_item(item)
        finally:
            generator.close()


def capability(
    *,
    name: str,
    title: str,
    version: str = "0.1.0",
    summary: str = "",
    description: str | None = None,
    summary_en: str = "",
    description_en: str = "",
    kind: Kind = "algorithm",
    domain: Domain = "other",
    tags: Sequence[str] = (),
    classification: Classification = "internal",
    owner: str = "",
    contact: str = "",
    license: str = "",
    examples: Sequence[Mapping[str, Any]] = (),
    requirements: Sequence[str] = (),
    artifacts: Mapping[str, str | Path] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any] | type], Capability]:
    """Describe a function or class as a capability.

    ``description`` defaults to the target's docstring (Markdown); ``summary_en`` and
    ``description_en`` are English versions that English pages show instead. ``examples`` are
    ``{"title"?, "input", "output"?}`` dicts; their inputs are checked against the
    input schema now. ``requirements`` are pip requirement strings the capability needs
    at run time. ``artifacts`` maps names to files, relative to the module's directory,
    shipped with every published version (they must exist when publishing).
    ``runtime`` is the default runtime binding (``{"type": "inprocess"}``).
    """

    def decorate(target: Callable[..., Any] | type) -> Capability:
        if not NAME_RE.match(name):
            raise SpecError(
                f"capability name {name!r} is invalid: lowercase letters, digits, '_' or '-', "
                "starting with a letter, at most 64"
            )
        if not SEMVER_RE.match(version):
            raise SpecError(f"capability {name!r}: version {version!r} is not semver (e.g. 1.2.0)")
        base = _module_dir(target)
        files = {k: (base / Path(v)).resolve() for k, v in (artifacts or {}).items()}
        cap = Capability(
            name=name,
            target=target,
            title=title,
            version=version,
            summary=summary,
            description=inspect.cleandoc(description or target.__doc__ or ""),
            summary_en=summary_en,
            description_en=inspect.cleandoc(description_en),
            kind=kind,
            domain=domain,
            tags=list(tags),
            classification=classification,
            owner=owner,
            contact=contact,
            license=license,
            examples=[dict(e) for e in examples],
            requirements=list(requirements),
            artifacts=files,
            runtime=dict(runtime or {"type": "inprocess"}),
        )
        for i, example in enumerate(cap.examples):
            if "input" not in example:
                raise SpecError(f"capability {name!r}: example {i} has no 'input'")
            try:
                cap.validate_input(example["input"])
            except ValidationFailed as exc:
                where = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
                raise SpecError(f"capability {name!r}: example {i} is invalid: {where}") from None
        return cap

    return decorate


# ---------------------------------------------------------------- schema derivation


def _module_dir(target: Any) -> Path:
    module = sys.modules.get(target.__module__)
    file = getattr(module, "__file__", None)
    return Path(file).parent if file else Path.cwd()


def _item_type(name: str, annotation: Any) -> Any:
    """The item type of a generator's return annotation (``Iterator[T]``,
    ``Iterable[T]``, ``Generator[T, ...]``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (collections.abc.Iterator, collections.abc.Iterable,
                  collections.abc.Generator) and args:  # fmt: skip
        return args[0]
    raise SpecError(f"capability {name!r} yields its output: annotate the return as Iterator[Item]")


def _derive(
    name: str, target: Any
) -> tuple[type[BaseModel], TypeAdapter[Any], TypeAdapter[Any] | None]:
    fn = target.__call__ if isinstance(target, type) else target
    if isinstance(target, type) and fn is object.__call__:
        raise SpecError(f"capability {name!r}: class {target.__qualname__} has no __call__")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise SpecError(f"capability {name!r}: cannot resolve type hints: {exc}") from None
    fields: dict[str, Any] = {}
    params = list(inspect.signature(fn).parameters.values())
    if isinstance(target, type):
        params = params[1:]  # self
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SpecError(
                f"capability {name!r}: parameter *{p.name} cannot be described; "
                "declare each input as a named, typed parameter"
            )
        if p.name not in hints:
            raise SpecError(f"capability {name!r}: parameter {p.name!r} has no type hint")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], default)
    if "return" not in hints:
        raise SpecError(f"capability {name!r}: the return type is not annotated")
    try:
        model = create_model(
            _model_name(name) + "Input",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        item: TypeAdapter[Any] | None = None
        if inspect.isgeneratorfunction(fn):
            item_type = _item_type(name, hints["return"])
            item = TypeAdapter(item_type)
            output: TypeAdapter[Any] = TypeAdapter(list[item_type])  # type: ignore[valid-type]
        else:
            output = TypeAdapter(hints["return"])
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"capability {name!r}: cannot derive a schema: {exc}") from None
    return model, output, item


def _model_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))
