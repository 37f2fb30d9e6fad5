"""An uploaded capability as the publisher sees it, without its code ever being imported
by the node.

:class:`Uploaded` carries what :class:`~yunnao.registry.publishing.Publisher` and
:meth:`~yunnao.registry.models.ModelStore.log` read from a loaded plugin's
:class:`~yunnao.plugins.capability.Capability` (its metadata, schemas, examples,
artifacts, requirements and ``module:qualname`` entry), taken from the sandboxed
inspector's report, and where the package's code is (``code_root``: the folder MLflow
ships as the model's ``code_paths``). Every path it names lies inside the unpacked
package; the entry is a dotted name, since it is written into the model's script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunnao.plugins.errors import FieldError, SpecError, ValidationFailed

from .inspection import CapabilitySpec

ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$")


def _inside(root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        why = f"{what} {relative!r} lies outside the package"
        raise ValidationFailed(why, errors=[FieldError("file", why)])
    return path


@dataclass(frozen=True)
class Uploaded:
    """One capability of an uploaded package, ready to publish."""

    spec: CapabilitySpec
    package_dir: Path  # the unpacked package
    environment: str  # the key of the environment holding its requirements
    installed: tuple[str, ...]  # that environment's resolved set, name==version
    package: str = ""  # the archive's sha256

    def __post_init__(self) -> None:
        if not ENTRY.match(self.spec.entry):
            why = f"entry {self.spec.entry!r} is not module:qualname"
            raise ValidationFailed(why, errors=[FieldError("file", why)])
        _inside(self.package_dir, self.spec.code, "code")
        for key, rel in self.spec.artifacts.items():
            _inside(self.package_dir, rel, f"artifact {key!r}")

    # What Publisher and ModelStore.log read from a capability.
    def __getattr__(self, name: str) -> Any:
        if name in {
            "name",
            "version",
            "title",
            "summary",
            "description",
            "kind",
            "domain",
            "classification",
            "owner",
            "contact",
            "license",
            "input_schema",
            "output_schema",
            "entry",
            "module",
            "plugin",
        }:
            return getattr(self.spec, name)
        raise AttributeError(name)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.spec.tags)

    @property
    def examples(self) -> list[dict[str, Any]]:
        return list(self.spec.examples)

    @property
    def code_root(self) -> Path:
        return _inside(self.package_dir, self.spec.code, "code")

    @property
    def artifacts(self) -> dict[str, Path]:
        return {
            key: _inside(self.package_dir, rel, f"artifact {key!r}")
            for key, rel in self.spec.artifacts.items()
        }

    @property
    def requirements(self) -> list[str]:
        """What the model needs: the capability's own, and the package environment's."""
        return sorted({*self.spec.requirements, *self.installed})

    @property
    def uploaded(self) -> dict[str, str]:
        """The mark :meth:`~yunnao.registry.models.ModelStore.log` puts in the model's
        metadata: which package it came from and which environment it runs on."""
        return {"package": self.package, "environment": self.environment}

    @property
    def runtime(self) -> dict[str, Any]:
        """Uploaded code runs in the sandbox, on its package's environment."""
        return {"type": "sandbox", "config": {"environment": self.environment}}

    def metadata(self) -> dict[str, Any]:
        return {
            "title": self.spec.title,
            "summary": self.spec.summary,
            "description": self.spec.description,
            "summary_en": self.spec.summary_en,
            "description_en": self.spec.description_en,
            "kind": self.spec.kind,
            "domain": self.spec.domain,
            "tags": list(self.spec.tags),
            "classification": self.spec.classification,
            "owner": self.spec.owner,
            "contact": self.spec.contact,
            "license": self.spec.license,
            "input_schema": self.spec.input_schema,
            "output_schema": self.spec.output_schema,
            "examples": list(self.spec.examples),
            "runtime": self.runtime,
        }

    def check_artifacts(self) -> None:
        for key, path in self.artifacts.items():
            if not path.is_file():
                raise SpecError(f"capability {self.spec.name!r}: artifact {key!r} not found")
