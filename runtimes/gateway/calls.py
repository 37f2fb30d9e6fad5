"""What one call is to the gateway: the version a reference resolves to and where it
runs (:class:`Call`, :func:`target_for`), what :meth:`Gateway.call` answers, and how a
JSON Schema's violations read as field errors (:func:`schema_errors`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from yunnao.plugins.errors import FieldError
from yunnao.registry.models import own_model_version
from yunnao.registry.store import Resolution

from ..adapters.base import Target

log = logging.getLogger("yunnao.gateway")


@dataclass(frozen=True)
class Call:
    """A resolved reference: the target version and how it is listed."""

    target: Target
    status: str  # the version's lifecycle status
    classification: str
    rate_limit: str | None = None  # the capability's own, all callers together

    @property
    def deprecated(self) -> bool:
        return self.status == "deprecated"


@dataclass(frozen=True)
class Answer:
    """What :meth:`Gateway.call` returns: the call as resolved and the output."""

    call: Call
    output: Any
    latency_ms: float  # the runtime's part: from the validated input to the output


# A front's input: the value itself, or built from the resolved call (a V2 request's
# tensors, the try-it form), once the call is admitted.
Inputs = Any | Callable[[Call], Any | Awaitable[Any]]


def split_ref(name_ref: str) -> tuple[str, str | None]:
    """``"flow-forecast@1.2.0"`` → ``("flow-forecast", "1.2.0")``; no ``@`` → ref None."""
    name, sep, ref = name_ref.partition("@")
    return name, (ref if sep else None)


def own_model(version: Any) -> str | None:
    """The model a version's runtime may load: its ``model_uri`` only when that is a
    version of ``namespace.name`` in this node's own MLflow. Whatever else a row holds
    (written before that rule, or by hand) reaches no runtime (in process, Ray Serve,
    Triton): the version then has no model to run."""
    uri = version.model_uri
    if uri is None or own_model_version(version.namespace, version.name, uri) is not None:
        return uri
    log.warning("%s names a model that is not its own (%r): not loaded", version.id, uri)
    return None


def target_of(version: Any) -> Target:
    """The runtime target of a :class:`~yunnao.registry.schemas.Version`."""
    return Target(
        namespace=version.namespace,
        name=version.name,
        version=version.version,
        runtime=version.runtime.type,
        config=version.runtime.config,
        model_uri=own_model(version),
        input_schema=version.input_schema,
        output_schema=version.output_schema,
        content_hash=version.content_hash,
    )


def target_for(resolution: Resolution) -> Target:
    """Where a resolved version runs: its own binding, or, for an entry cascaded from
    another node, the ``remote`` runtime towards the node it came through."""
    target = target_of(resolution.version)
    if resolution.via_node is None:
        return target
    config = {"node": resolution.via_node, "origin": resolution.origin_node}
    return dataclasses.replace(target, runtime="remote", config=config)


def schema_errors(validator: Draft202012Validator, data: Any, prefix: str) -> list[FieldError]:
    """JSON Schema violations as field errors (``input.readings[2]``: message)."""
    out = []
    for err in validator.iter_errors(data):
        path = prefix
        for part in err.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            out.append(FieldError(f"{path}.{missing}", "field required"))
        elif err.validator == "additionalProperties":
            extra = set(err.instance) - set(err.schema.get("properties", {}))
            out.extend(FieldError(f"{path}.{k}", "unknown field") for k in sorted(extra))
        else:
            out.append(FieldError(path, err.message))
    return sorted(out, key=lambda e: e.field)
