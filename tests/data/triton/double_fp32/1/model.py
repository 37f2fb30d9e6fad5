"""A hand-written Triton Python-backend model, "already in the repository" for the
passthrough tests: y = 2 * x for an FP32 vector."""

import os
import site
import sys

# Triton's Python stub ignores PYTHONPATH (numpy is not in the system Python here): the
# test server sets it to the node's site-packages, applied here.
for _dir in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_dir)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        # Triton renames the DLPack capsules it consumes; numpy then complains about them.
        previous = sys.unraisablehook
        sys.unraisablehook = lambda u: None if "PyCapsule" in str(u.exc_value) else previous(u)

    def execute(self, requests):
        # DLPack both ways: this backend's as_numpy()/Tensor(array) misread numpy 2 arrays.
        responses = []
        for request in requests:
            x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "x"))
            y = pb_utils.Tensor.from_dlpack("y", np.ascontiguousarray(x * 2, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
