"""Publishing a pipeline (runtime ``pipeline``, see
:mod:`yunnao.runtimes.adapters.pipeline`): the catalog's check of a version before it
is stored. The steps are looked up as the publishing author sees the catalog (a step it
may not discover does not exist for it); the version's input and output schemas are
derived from the steps, whatever the request said."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from yunnao.plugins.errors import FieldError, NotFound, ValidationFailed
from yunnao.registry import schemas
from yunnao.registry.access import Identity
from yunnao.registry.store import RegistryStore

from ..adapters import pipeline
from .calls import split_ref

PIPELINE = "pipeline"
NARROW = {"public": 0, "internal": 1, "restricted": 2}


def version_check(store: RegistryStore) -> Any:
    """The catalog's hook: ``await check(identity, namespace, name, spec)`` -> the spec
    to store (a pipeline's with its derived schemas; any other as it is)."""

    async def check(
        identity: Identity, namespace: str, name: str, spec: schemas.PublishRequest
    ) -> schemas.PublishRequest:
        if spec.runtime.type != PIPELINE:
            return spec

        steps: list[tuple[str, str]] = []  # (step, its classification)

        async def describe(ns: str, step: str, name_ref: str) -> tuple[dict[str, Any], ...]:
            _, ref = split_ref(name_ref)
            seen = await anyio.to_thread.run_sync(store.discoverable, identity, ns, step)
            if not seen:
                raise NotFound(f"no capability {ns}/{step}")
            found = await anyio.to_thread.run_sync(store.resolve, ns, step, ref)
            steps.append((f"{ns}/{step}", found.classification))
            return dict(found.version.input_schema), dict(found.version.output_schema)

        inputs, outputs = await pipeline.check(namespace, name, spec.runtime.config, describe)
        for step, classification in steps:
            if NARROW[classification] > NARROW[spec.classification]:
                raise ValidationFailed(
                    f"classification: a {spec.classification} pipeline may not call {step}, "
                    f"which is {classification} (its callers could not, and its name would "
                    "show): make the pipeline at least as narrow",
                    errors=[FieldError("classification", f"at least {classification}")],
                )
        return spec.model_copy(update={"input_schema": inputs, "output_schema": outputs})

    return check


def refuse_rebinding(binding: schemas.RuntimeBinding) -> None:
    """A pipeline is declared when its version is published (its schemas come from its
    steps); it is not a binding to switch to or edit later."""
    if binding.type == PIPELINE:
        raise ValidationFailed(
            "type: a pipeline is declared when its version is published "
            "(yunnao pipeline publish), not bound later",
            errors=[FieldError("type", "publish a new version to change a pipeline")],
        )
