"""Shared by the runtime and gateway tests: the test capabilities of
``tests/data/rtplugin`` logged to a real (embedded) MLflow, and targets for them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yunnao.plugins.capability import Capability
from yunnao.registry.models import ModelStore
from yunnao.runtimes.adapters.base import Target

RT_PLUGIN_DIR = Path(__file__).parent / "data" / "rtplugin"
NAMESPACE = "sd.qd.rt"


def rt_capabilities() -> dict[str, Capability]:
    """The test plugin's capabilities, imported from its directory."""
    if str(RT_PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(RT_PLUGIN_DIR))
    import yunnao_rt

    return {c.name: c for c in yunnao_rt.yunnao_capabilities()}


@dataclass
class RtModels:
    """The test capabilities published to MLflow under ``data_dir/mlflow``."""

    models: ModelStore
    uris: dict[str, str]  # capability name -> models:/ URI

    def target(self, name: str, runtime: str, **config: Any) -> Target:
        cap = rt_capabilities()[name]
        return Target(
            namespace=NAMESPACE,
            name=name,
            version=cap.version,
            runtime=runtime,
            config=config,
            model_uri=self.uris[name],
            input_schema=cap.input_schema,
            output_schema=cap.output_schema,
        )


def publish_rt_models(data_dir: Path) -> RtModels:
    """Log every test capability as a pyfunc model (about 3 s each)."""
    models = ModelStore.embedded(data_dir)
    uris = {}
    for name, cap in rt_capabilities().items():
        logged = models.log(cap, namespace=NAMESPACE, node="sd.qd")
        uris[name] = logged.model_uri
    return RtModels(models, uris)
