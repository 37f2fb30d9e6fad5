"""The ``sandbox`` runtime: each capability version runs in worker processes of its own
inside a bubblewrap sandbox (:mod:`yunnao.registry.packages.sandbox`), the default for
department code.

A worker sees its version's model files (downloaded by the node from its own MLflow, a
copy readable only by the worker's sandbox user), the Python it runs on and the node's
own code, all read-only; a private ``/tmp``; no network (unless the binding asks and the
node allows it); nothing of the node's data directory, key or store, nor any other
version's files. It runs as a user of its own under limits on memory, CPU time,
processes and open files. The node talks to it over a Unix socket pair: one
persistent connection of length-prefixed JSON messages, calls tagged by id so several
are in flight (``protocol.py``).

Failures cost only that worker: a call that overruns its timeout kills the worker's
whole sandbox (504) and a fresh one is started; a worker that dies (a crash, a limit,
the kernel's OOM killer) fails its calls in flight (500, the gateway adds an error id)
and is replaced, immediately the first time and then after a backoff doubling from
``restart_backoff`` up to ``restart_backoff_max``; meanwhile its calls get 503 with
``Retry-After``. Where bubblewrap is missing the runtime refuses to deploy unless the
node's operator set ``enforce`` to false.

Node configuration (``Settings.runtimes["sandbox"]``): :class:`SandboxSettings`. A
version's binding (``runtime.config``) may lower ``memory_mb``, ``cpu_seconds``,
``processes``, ``open_files``, ``workers`` and ``threads`` below the node's settings
(never raise them) and ask ``network: true`` where ``allow_network`` is on. A version
published from an uploaded package is bound with ``environment``: the key of the
environment the node built for the package's requirements (``<data_dir>/packages/
envs/<key>``), whose Python its workers run on, the environment read-only in their
sandbox; without it they run on the node's own Python.

The package's modules, by the OS process each runs in:

- ``runtime.py`` (node): :class:`SandboxRuntime`, the adapter the gateway calls:
  deployments, workers per version, restarts with backoff.
- ``settings.py`` (node): :class:`SandboxSettings`.
- ``binding.py`` (node): a version's binding read as its workers' limits.
- ``status.py`` (node): the sandbox's state for ``/readyz`` and the operator page.
- ``process.py`` (node): :class:`WorkerProcess`, the node's end of one worker.
- ``protocol.py`` (both): the messages between them.
- ``worker.py`` (inside the sandbox): the worker, run as ``python -m
  yunnao.runtimes.adapters.sandbox.worker``.
"""

from .binding import Binding, binding_of
from .process import WorkerFailed, WorkerProcess
from .runtime import SandboxRuntime
from .settings import SandboxSettings

__all__ = [
    "Binding",
    "SandboxRuntime",
    "SandboxSettings",
    "WorkerFailed",
    "WorkerProcess",
    "binding_of",
]
