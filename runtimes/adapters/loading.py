"""Loading a published capability into something that runs, in any process.

The node, a Ray Serve replica and Triton's Python backend all run a capability the
same way: load its MLflow pyfunc model (code, artifacts) and call the capability with
its own validation, bypassing MLflow's DataFrame-oriented ``predict`` path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunnao.plugins.capability import Capability


@dataclass(frozen=True)
class Runnable:
    """A capability ready to run: ``runnable(inputs)`` validates the JSON input with the
    capability's types, calls it and returns its validated JSON output."""

    capability: Capability
    fn: Any

    def __call__(self, inputs: dict[str, Any]) -> Any:
        kwargs = self.capability.validate_input(inputs)
        return self.capability.dump_output(self.fn(**kwargs))


def from_capability(cap: Capability) -> Runnable:
    """A plugin capability loaded in this process, with its local artifacts."""
    return Runnable(cap, cap.instantiate())


def load_runnable(
    model: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> Runnable:
    """Load ``model`` (a ``models:/name/N`` URI resolved through MLflow at
    ``tracking_uri``, or a local directory of a pyfunc model this node downloaded from
    it) as a :class:`Runnable`. Nothing else is loaded: not a URL, a run, or any other
    location MLflow's own loader would fetch and unpickle."""
    if model.startswith("models:/"):
        from yunnao.registry.models import ModelStore

        if tracking_uri is None:
            raise ValueError(f"loading {model} needs the MLflow tracking URI")
        pyfunc_model = ModelStore(tracking_uri, registry_uri).load(model)
    else:
        if not Path(model).is_dir():
            raise ValueError(f"{model!r} is neither a models:/ URI nor a downloaded model")
        import mlflow.pyfunc

        from yunnao.registry import pyfunc  # noqa: F401  (quiets MLflow's import warnings)

        pyfunc_model = mlflow.pyfunc.load_model(model)
    wrapper = pyfunc_model.unwrap_python_model()
    if getattr(wrapper, "capability", None) is None:
        raise TypeError(f"{model} is not a Yunnao capability model")
    return Runnable(wrapper.capability, wrapper.fn)


def download_model(model_uri: str, tracking_uri: str, registry_uri: str | None = None) -> str:
    """Download a ``models:/`` model's files and return the local directory (for runtime
    servers on this machine that should not talk to MLflow themselves)."""
    from yunnao.registry.models import ModelStore

    return ModelStore(tracking_uri, registry_uri).download(model_uri)
