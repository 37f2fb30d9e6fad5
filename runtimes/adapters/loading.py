"""Loading a published capability into something that runs, in any process.

The node, a Ray Serve replica and Triton's Python backend all run a capability the
same way: load its MLflow pyfunc model (code, artifacts) and call the capability with
its own validation, bypassing MLflow's DataFrame-oriented ``predict`` path.

A model logged from an uploaded package carries ``uploaded`` in its MLmodel metadata
(written by the node, never by the package: see
:meth:`~yunnao.registry.models.ModelStore.log`). Loading one imports a department's
code, so the loader refuses it unless its caller runs it somewhere the node allows
(``allow_uploaded``): the sandbox's worker, or a Ray Serve or Triton binding its
operators marked ``trusted``. The marker is read from the MLmodel file before anything
of the model is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunnao.plugins.capability import Capability
from yunnao.plugins.errors import NotDeployable

MLMODEL = "MLmodel"
UPLOADED = "uploaded"  # the key of the marker in the model's ``yunnao`` metadata


@dataclass(frozen=True)
class Runnable:
    """A capability ready to run: ``runnable(inputs)`` validates the JSON input with the
    capability's types, calls it and returns its validated JSON output."""

    capability: Capability
    fn: Any

    def __call__(self, inputs: dict[str, Any]) -> Any:
        kwargs = self.capability.validate_input(inputs)
        return self.capability.call(self.fn, kwargs)

    def stream(self, inputs: dict[str, Any]) -> Iterator[Any]:
        """A streaming capability's JSON items, one at a time (see Capability.stream)."""
        return self.capability.stream(self.fn, self.capability.validate_input(inputs))


def from_capability(cap: Capability) -> Runnable:
    """A plugin capability loaded in this process, with its local artifacts."""
    return Runnable(cap, cap.instantiate())


def load_runnable(
    model: str,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    *,
    allow_uploaded: bool = False,
) -> Runnable:
    """Load ``model`` (a ``models:/name/N`` URI resolved through MLflow at
    ``tracking_uri``, or a local directory of a pyfunc model this node downloaded from
    it) as a :class:`Runnable`. Nothing else is loaded: not a URL, a run, or any other
    location MLflow's own loader would fetch and unpickle. A model of an uploaded
    package is :class:`NotDeployable` unless ``allow_uploaded`` (checked before any of
    its code is imported)."""
    if model.startswith("models:/"):
        if tracking_uri is None:
            raise ValueError(f"loading {model} needs the MLflow tracking URI")
        local = download_model(model, tracking_uri, registry_uri)
    else:
        if not Path(model).is_dir():
            raise ValueError(f"{model!r} is neither a models:/ URI nor a downloaded model")
        local = model
    if not allow_uploaded:
        refuse_uploaded(model, uploaded_of(local))
    import mlflow.pyfunc

    from yunnao.registry import pyfunc  # noqa: F401  (quiets MLflow's import warnings)

    try:
        pyfunc_model = mlflow.pyfunc.load_model(local)
    except Exception as exc:
        if model.startswith("models:/"):
            from yunnao.registry.models import _mlflow_error

            raise _mlflow_error(f"loading {model}", exc) from exc
        raise
    wrapper = pyfunc_model.unwrap_python_model()
    if getattr(wrapper, "capability", None) is None:
        raise TypeError(f"{model} is not a Yunnao capability model")
    return Runnable(wrapper.capability, wrapper.fn)


def uploaded_of(model_dir: str | Path) -> dict[str, str] | None:
    """The ``uploaded`` marker of a downloaded model (``{"package": <sha256>,
    "environment": <key>}``), or None for a model of a plugin the node's operator
    installed. Read from the MLmodel file only: nothing of the model is imported."""
    import yaml

    try:
        text = (Path(model_dir) / MLMODEL).read_text(encoding="utf-8")
    except OSError:
        raise NotDeployable(f"{model_dir} holds no MLflow model (no {MLMODEL} file)") from None
    meta = (yaml.safe_load(text) or {}).get("metadata") or {}
    marker = (meta.get("yunnao") or {}).get(UPLOADED) if isinstance(meta, dict) else None
    if marker is None:
        return None
    if not isinstance(marker, dict):  # the node writes a dict; anything else is refused
        return {"package": "", "environment": ""}
    return {k: str(marker.get(k) or "") for k in ("package", "environment")}


def refuse_uploaded(
    what: str, marker: dict[str, str] | None, where: str = "as the node's user"
) -> None:
    """:class:`NotDeployable` when ``marker`` says the model is an uploaded package's,
    saying where such code may run instead."""
    if marker is None:
        return
    raise NotDeployable(
        f"{what} is the model of an uploaded package (sha256 {marker['package'][:12]}), "
        f"whose code is not run {where}: it runs in the sandbox runtime "
        '(PUT .../runtime {"type": "sandbox"}), or on Ray Serve or Triton where an '
        "operator of this node binds it with config `trusted: true`"
    )


def download_model(model_uri: str, tracking_uri: str, registry_uri: str | None = None) -> str:
    """Download a ``models:/`` model's files and return the local directory (for runtime
    servers on this machine that should not talk to MLflow themselves)."""
    from yunnao.registry.models import ModelStore

    return ModelStore(tracking_uri, registry_uri).download(model_uri)
