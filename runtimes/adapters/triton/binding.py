"""A version's ``triton`` binding (its ``runtime.config``), read in the node process as
what to load: a wrapper entry the node writes, or a passthrough model already in
Triton's repository; :class:`~yunnao.plugins.errors.NotDeployable` for a binding the
runtime does not accept."""

from __future__ import annotations

from dataclasses import dataclass

from yunnao.plugins.errors import NotDeployable

from ..base import Target
from .repository import wrapper_config

BINDING_KEYS = frozenset({"model", "instances", "gpus", "kind", "trusted"})


@dataclass(frozen=True)
class Deployment:
    target: Target
    model: str  # the Triton model name
    passthrough: bool


def deployment_of(target: Target) -> Deployment:
    unknown = set(target.config) - BINDING_KEYS
    if unknown:
        raise NotDeployable(
            f"{target.id}: unknown triton binding keys {sorted(unknown)}; "
            f"known: {sorted(BINDING_KEYS)}"
        )
    if not isinstance(target.config.get("trusted", False), bool):
        raise NotDeployable(f"{target.id}: triton binding `trusted` must be true or false")
    model = target.config.get("model")
    if model is None:
        wrapper_config(target)  # refuses a bad instances/gpus/kind before any download
        return Deployment(target, target.slug, passthrough=False)
    if not isinstance(model, str) or not model or "/" in model:
        raise NotDeployable(f"{target.id}: triton binding `model` must be a model name")
    extra = sorted(set(target.config) - {"model", "trusted"})
    if extra:
        raise NotDeployable(
            f"{target.id}: {extra} apply to wrapper entries only; the config.pbtxt of "
            f"Triton model {model!r} decides its instances"
        )
    for which, schema in (("input", target.input_schema), ("output", target.output_schema)):
        props = schema.get("properties", {}) if schema.get("type") == "object" else {}
        plain = sorted(k for k, v in props.items() if "x-tensor" not in v)
        if not props or plain:
            raise NotDeployable(
                f"{target.id}: a passthrough binding maps tensor fields only; the {which} "
                f"schema has {'no fields' if not props else f'non-tensor fields {plain}'}"
            )
    return Deployment(target, model, passthrough=True)
