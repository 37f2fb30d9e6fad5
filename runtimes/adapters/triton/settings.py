"""The ``triton`` runtime's node settings (``Settings.runtimes["triton"]``), read in the
node process when the adapter is made; every key is optional."""

from __future__ import annotations

from ..settings import RuntimeSettings


class TritonSettings(RuntimeSettings):
    """Which Triton to use (or that the node starts its own), and how long it may take."""

    url: str | None = None
    """``"127.0.0.1:8000"``: the HTTP endpoint of a running ``tritonserver`` started with
    ``--model-control-mode=explicit``. Absent: the node starts its own server on first
    use (everything under ``<data_dir>/triton``) and stops it on shutdown."""
    repository: str | None = None
    """That server's model repository, writable by the node (needed for wrapper
    bindings; default for a started server: ``<data_dir>/triton/models``)."""
    start_timeout: float = 60
    """Seconds a started server may take to be ready."""
    stop_timeout: float = 10
    """Seconds a started server has to exit after SIGTERM."""
    load_timeout: float = 120
    """Seconds loading one model may take."""
    retry_after: int = 5
    """The ``Retry-After`` (seconds) suggested while Triton is down."""
