"""Publishing a plugin's capability: checks, MLflow, then the registry — all or nothing.

The order is chosen so that a mistake costs nothing: everything that can be checked
without side effects is checked first (address, ownership, a free version number);
then the model is logged and registered in MLflow; the registry entry, pointing at
``models:/namespace.name/N``, is written last, in one transaction. If any step after
MLflow fails — the alias, the registry write (say, a concurrent publish took the
version) — the MLflow version, its run and its artifacts are removed again, so
neither a half entry nor an orphan model version remains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import (
    Conflict,
    FieldError,
    Forbidden,
    ValidationFailed,
    field_errors,
)

from . import names, schemas
from .models import ModelStore
from .store import RegistryStore

Step = Callable[[str], None]

DEFAULT_ALIASES = ("production",)
STEPS = (
    "checking the capability",
    "logging the model to MLflow",
    "setting aliases",
    "recording the registry entry",
)


@dataclass(frozen=True)
class Published:
    version: schemas.Version
    model_uri: str
    aliases: tuple[str, ...]


def plugin_namespace(node_id: str, cap: Capability) -> str | None:
    """The namespace a loaded plugin's capability belongs to at node ``node_id``:
    ``<node>.<plugin>`` when the plugin's name makes a valid department segment
    (entry-point names are chosen that way; a package name's ``_`` becomes ``-``), else
    None. Over HTTP a plugin is published only there, and the in-process runtime runs a
    plugin's code only for versions of that namespace."""
    if not cap.plugin:
        return None
    namespace = f"{node_id}.{cap.plugin.replace('_', '-')}"
    return namespace if names.is_namespace(namespace) else None


def publish_request(cap: Capability, status: str) -> schemas.PublishRequest:
    """The registry entry ``cap`` declares, or 422 naming each field it breaks."""
    try:
        return schemas.PublishRequest(
            **cap.metadata(),
            version=cap.version,
            status=status,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ValidationFailed(
            f"{cap.name} cannot be published as declared: "
            + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=errors,
        ) from None


class Publisher:
    """Publishes capabilities of loaded plugins into one node's registry and MLflow."""

    def __init__(self, store: RegistryStore, models: ModelStore) -> None:
        self.store = store
        self.models = models

    def default_namespace(self, cap: Capability) -> str | None:
        """The plugin's own department at this node (see :func:`plugin_namespace`)."""
        return plugin_namespace(self.store.node_id, cap)

    def check(self, cap: Capability, namespace: str, aliases: Sequence[str] = ()) -> None:
        """Everything that can fail without side effects."""
        cap.check_artifacts()
        bad = [a for a in aliases if not names.is_alias(a)]
        if bad:
            raise ValidationFailed(
                f"invalid alias {bad[0]!r}: {names.ALIAS_RULE}",
                errors=[FieldError("aliases", f"{a!r}: {names.ALIAS_RULE}") for a in bad],
            )
        if not names.is_namespace(namespace):
            raise ValidationFailed(
                f"invalid namespace {namespace!r}: {names.NAMESPACE_RULE}",
                errors=[FieldError("namespace", names.NAMESPACE_RULE)],
            )
        owner = names.namespace_node(namespace)
        if owner != self.store.node_id:
            raise Forbidden(
                f"namespace {namespace!r} belongs to node {owner!r}; this node is "
                f"{self.store.node_id!r} and publishes only into its own namespaces"
            )
        if cap.version in self.store.version_numbers(namespace, cap.name):
            raise Conflict(
                f"{namespace}/{cap.name}@{cap.version} already exists; versions are immutable, "
                "raise the version in the @capability decorator",
                errors=[FieldError("version", f"{cap.version} is already taken")],
            )

    def publish(
        self,
        cap: Capability,
        *,
        namespace: str,
        status: str = "published",
        aliases: Sequence[str] | None = None,
        step: Step | None = None,
    ) -> Published:
        """Publish ``cap`` into ``namespace``. ``aliases`` default to ``production`` for a
        published version and to none for a draft."""
        step = step or (lambda _: None)
        if aliases is None:
            aliases = DEFAULT_ALIASES if status == "published" else ()
        step(STEPS[0])
        self.check(cap, namespace, aliases)
        spec = publish_request(cap, status)
        self.store.check_compatible(namespace, cap.name, spec)  # before MLflow has anything
        step(STEPS[1])
        logged = self.models.log(cap, namespace=namespace, node=self.store.node_id)
        try:
            step(STEPS[2])
            for alias in aliases:
                self.models.set_alias(logged, alias)
            step(STEPS[3])
            version = self.store.publish(
                namespace,
                cap.name,
                spec.model_copy(
                    update={"model_uri": logged.model_uri, "artifact_uri": logged.source}
                ),
            )
        except BaseException:
            self.models.undo(logged)
            raise
        return Published(version, logged.model_uri, tuple(aliases))

    def publish_all(
        self,
        caps: Sequence[Capability],
        *,
        namespace: str,
        aliases: Sequence[str] = DEFAULT_ALIASES,
        step: Step | None = None,
        also: Callable[[Any], None] | None = None,
    ) -> list[Published]:
        """Publish every capability of ``caps`` (an uploaded package's) into
        ``namespace``: all of them, or — when any check, MLflow step or the registry write
        fails — none, with every MLflow version logged on the way removed again. ``also``
        writes further rows in the registry's transaction (the package's record)."""
        step = step or (lambda _: None)
        step(STEPS[0])
        specs = []
        for cap in caps:
            self.check(cap, namespace, aliases)
            specs.append(publish_request(cap, "published"))
        logged = []
        try:
            for cap in caps:
                step(f"{STEPS[1]}: {cap.name} {cap.version}")
                logged.append(self.models.log(cap, namespace=namespace, node=self.store.node_id))
            step(STEPS[2])
            for entry in logged:
                for alias in aliases:
                    self.models.set_alias(entry, alias)
            step(STEPS[3])
            self.store.publish_many(
                [
                    (
                        namespace,
                        cap.name,
                        spec.model_copy(
                            update={"model_uri": entry.model_uri, "artifact_uri": entry.source}
                        ),
                    )
                    for cap, spec, entry in zip(caps, specs, logged, strict=True)
                ],
                also=also,
            )
        except BaseException:
            for entry in logged:
                self.models.undo(entry)
            raise
        return [
            Published(
                self.store.resolve(namespace, cap.name, cap.version).version,
                e.model_uri,
                tuple(aliases),
            )
            for cap, e in zip(caps, logged, strict=True)
        ]
