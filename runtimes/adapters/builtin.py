"""The built-in runtimes, contributed through the same hook as any plugin's.

Adapters for external servers are imported when first used: Ray, BentoML and the
Triton client take seconds to import, and a node that never binds a version to them
should not pay for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from yunnao.plugins.hookspecs import hookimpl

from .base import Runtime, RuntimeContext

BUILTIN: dict[str, str] = {
    "inprocess": "yunnao.runtimes.adapters.inprocess:InProcessRuntime",
    "rayserve": "yunnao.runtimes.adapters.rayserve:RayServeRuntime",
    "bentoml": "yunnao.runtimes.adapters.bentoml:BentoMLRuntime",
    "triton": "yunnao.runtimes.adapters.triton:TritonRuntime",
    "remote": "yunnao.runtimes.adapters.remote:RemoteRuntime",
    "sandbox": "yunnao.runtimes.adapters.sandbox:SandboxRuntime",
    "pipeline": "yunnao.runtimes.adapters.pipeline:PipelineRuntime",
}


def _lazy(ref: str) -> Any:
    def factory(config: Mapping[str, Any], context: RuntimeContext) -> Runtime:
        module, _, attr = ref.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls(config, context)

    factory.__qualname__ = f"lazy({ref})"
    return factory


@hookimpl
def yunnao_runtimes() -> dict[str, Any]:
    return {rtype: _lazy(ref) for rtype, ref in BUILTIN.items()}
