"""The ``triton`` runtime: capability versions served by NVIDIA Triton Inference Server.

Node configuration (``Settings.runtimes["triton"]``, read as :class:`TritonSettings`),
every key optional:

- ``url``: ``"127.0.0.1:8000"``, the HTTP endpoint of a running ``tritonserver`` started
  with ``--model-control-mode=explicit`` (models load and unload only when asked).
  Without it the node starts its own server on first use (the ``tritonserver`` binary
  of the ``nvidia-pytriton`` wheel, on a free loopback port, everything under
  ``<data_dir>/triton``), starts it again when a call finds it dead, and stops it on
  shutdown.
- ``repository``: that server's model repository, writable by the node (needed for
  wrapper bindings; default for a started server: ``<data_dir>/triton/models``).
- ``start_timeout`` (seconds, default 60): how long a started server may take to be ready.
- ``stop_timeout`` (seconds, default 10): how long it has to exit after SIGTERM.
- ``load_timeout`` (seconds, default 120): how long loading one model may take.
- ``retry_after`` (seconds, default 5): the ``Retry-After`` suggested while Triton is down.

A version's binding (``runtime.config``) picks one of two modes:

- wrapper (default): the node downloads the version's MLflow pyfunc model into a
  model-repository entry named after :attr:`Target.slug` and writes a Python-backend
  ``model.py`` that runs it with :func:`yunnao.runtimes.adapters.loading.load_runnable` (so
  Triton never talks to MLflow). Keys: ``instances`` (instance count, default 1), and
  ``gpus`` (a GPU count, or a list of GPU ids) or ``kind: "gpu"`` for ``KIND_GPU``
  instances (default ``KIND_CPU``). The call's JSON input travels as the UTF-8 bytes
  of one ``UINT8`` tensor ``INPUT_JSON`` and the answer as ``OUTPUT_JSON``. The model
  of an uploaded package is NotDeployable unless its binding has ``trusted: true``,
  which only the node's operators may set (the stub runs as the node's user, outside
  any sandbox); a trusted one's ``model.py`` puts the package's environment (its
  ``site-packages`` under ``<data_dir>/packages/envs/<key>``) first on the stub's path.
- passthrough: ``model`` names a model already in Triton's repository (ONNX, a
  hand-written Python model...), which the node only loads, never writes. Each
  ``x-tensor`` field of the input schema is sent as the V2 input of that name and
  datatype; each ``x-tensor`` field of the output schema is read from the output of
  that name. Every field of both schemas must be a tensor.

Why JSON travels as UINT8 and tensors through DLPack: the Python backend of Triton
2.51 (the one the wheel ships) was built against numpy 1. With numpy 2 (which Yunnao
requires) in its stub, ``Tensor.as_numpy()`` gives every element as the first one,
``Tensor(name, array)`` sends an empty tensor, and a ``BYTES`` input crashes the stub;
``np.from_dlpack`` and ``Tensor.from_dlpack`` do not go through that code.

The backend's stub process runs the system's Python and ignores ``PYTHONPATH``, so
the generated ``model.py`` first adds this interpreter's site-packages directories
(their ``.pth`` files included, which is how an editable install of Yunnao is found)
ahead of the system's; the node and the server must be on the same machine, with the
same Python minor version. Triton answering that a model is unknown or not ready (it
restarted and lost what it had loaded) makes the node load it again, once, and retry.

The package's modules, by the OS process each runs in:

- ``runtime.py`` (node): :class:`TritonRuntime`, the adapter the gateway calls; it
  talks to Triton over HTTP (tritonclient for control and passthrough calls, a
  hand-written V2 request for wrapper calls).
- ``settings.py`` (node): :class:`TritonSettings`, the node configuration above.
- ``binding.py`` (node): a version's binding read as what to load: a wrapper entry or
  a passthrough model.
- ``server.py`` (node, managing the ``tritonserver`` process): :class:`TritonServer`,
  the server the node starts when given no ``url``.
- ``repository.py`` (node): wrapper entries in the model repository
  (``config.pbtxt``, the generated ``model.py``, the downloaded model).
- ``stub.py`` (inside Triton's Python backend stub process): :class:`StubModel`, what
  a wrapper entry's ``model.py`` runs.
"""

from .binding import Deployment, deployment_of
from .repository import entry_is_current, wrapper_config, write_wrapper_entry
from .runtime import TritonRuntime
from .server import TritonServer, stub_site_dirs
from .settings import TritonSettings
from .stub import StubModel

__all__ = [
    "Deployment",
    "StubModel",
    "TritonRuntime",
    "TritonServer",
    "TritonSettings",
    "deployment_of",
    "entry_is_current",
    "stub_site_dirs",
    "wrapper_config",
    "write_wrapper_entry",
]
