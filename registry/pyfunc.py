"""A capability as an MLflow pyfunc model, loadable and runnable from its URI alone.

The model carries the capability's code (its top-level package, as MLflow
``code_paths``), its artifacts and its pinned requirements. It is logged as a "model
from code" (no pickle): a two-line script that builds this wrapper for the
capability's ``module:qualname``; on load the wrapper imports the capability again
and runs it with the same validation as everywhere else.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from yunnao.plugins.capability import Capability


def find_capability(entry: str) -> Capability:
    """Import ``module:qualname`` and return the capability it names."""
    module_name, _, qualname = entry.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Capability):
        raise TypeError(f"{entry} is not a capability (decorate it with @capability)")
    return obj


def plain(value: Any) -> Any:
    """JSON-shaped data from what MLflow's schema enforcement hands over (numpy arrays
    and scalars, pandas rows)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class CapabilityModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of one capability. ``predict`` takes one input object (or a
    DataFrame / list of them) and returns the output (or a list of outputs)."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        # Set by load_context: the capability and its instantiated callable, which
        # runtimes use directly (Yunnao validates with the capability's own types).
        self.capability: Capability | None = None
        self.fn: Any = None

    def load_context(self, context: Any) -> None:
        self.capability = find_capability(self.entry)
        artifacts = {k: Path(v) for k, v in (context.artifacts or {}).items()}
        self.fn = self.capability.instantiate(artifacts)

    # No type hints on predict: MLflow would try to derive a signature from them; the
    # signature is derived from the capability's schemas instead (signature.py).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        assert self.capability is not None, "load_context was not called"
        if hasattr(model_input, "to_dict"):  # a pandas DataFrame: one input per row
            records = [plain(r) for r in model_input.to_dict(orient="records")]
            return [self._run(r) for r in records]
        data = plain(model_input)
        if isinstance(data, list):
            return [self._run(r) for r in data]
        return self._run(data)

    def _run(self, data: Any) -> Any:
        assert self.capability is not None
        kwargs = self.capability.validate_input(data)
        return self.capability.call(self.fn, kwargs)


def model_code(entry: str) -> str:
    """The "model from code" script MLflow stores for the capability at ``entry``."""
    return (
        "import mlflow.models\n"
        "from yunnao.registry.pyfunc import CapabilityModel\n"
        f"mlflow.models.set_model(CapabilityModel({entry!r}))\n"
    )
