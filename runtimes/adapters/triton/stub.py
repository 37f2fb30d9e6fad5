"""What runs inside Triton: :class:`StubModel`, the model of a wrapper entry, run by
Triton's Python backend in its stub process (the system's Python with the node's
site-packages, see ``repository.py``). The generated ``model.py`` imports it from
here by name, so this module's path is part of every wrapper entry written."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

# The wrapper model's one input and one output: JSON as the UTF-8 bytes of a UINT8 tensor.
INPUT_JSON, OUTPUT_JSON = "INPUT_JSON", "OUTPUT_JSON"


def _quiet_consumed_capsules(previous: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def hook(unraisable: Any) -> None:
        # Triton renames the DLPack capsules it consumes (after releasing their memory
        # itself), and numpy's capsule destructor then reports the unexpected name.
        exc = unraisable.exc_value
        if isinstance(exc, ValueError) and "PyCapsule_GetPointer" in str(exc):
            return
        previous(unraisable)

    return hook


class StubModel:
    """A wrapper entry's model inside Triton's Python backend: ``model.py`` subclasses it
    with ``model_dir``, the downloaded pyfunc model. One JSON input in, the capability's
    JSON output out; an exception becomes that request's error, with its message."""

    model_dir: str
    allow_uploaded = False  # True only in entries of uploaded models bound `trusted`

    def initialize(self, args: dict[str, str]) -> None:
        from yunnao.runtimes.adapters.loading import load_runnable

        sys.unraisablehook = _quiet_consumed_capsules(sys.unraisablehook)
        self.run = load_runnable(self.model_dir, allow_uploaded=self.allow_uploaded)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # only exists inside the stub

        responses = []
        for request in requests:
            try:
                raw = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, INPUT_JSON))
                result = self.run(json.loads(raw.tobytes()))
                data = json.dumps(result, ensure_ascii=False).encode()
                # Writable: numpy refuses to export a read-only array through DLPack.
                out = np.frombuffer(bytearray(data), dtype=np.uint8)
                tensor = pb_utils.Tensor.from_dlpack(OUTPUT_JSON, out)
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            except Exception as exc:
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
