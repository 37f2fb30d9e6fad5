"""The ``sandbox`` runtime's node settings (``Settings.runtimes["sandbox"]``), read in
the node process when the adapter is made; every key is optional. The limits here are
each worker's defaults and ceilings: a version's binding may lower them, never raise
them (see ``binding.py``)."""

from __future__ import annotations

from pydantic import Field

from ..settings import RuntimeSettings


class SandboxSettings(RuntimeSettings):
    """How the node runs department code in sandboxed workers, and within what limits."""

    enforce: bool = True
    """Refuse to run department code where bubblewrap (``bwrap``) is missing. ``false``
    trusts uploaded code on such a machine: workers then run with the resource limits
    alone, as the node's user, seeing the node's files."""
    allow_network: bool = False
    """Whether a version's binding may ask ``network: true`` (a worker with the host's
    network); without it such a binding is refused."""
    memory_mb: int = Field(2048, ge=64)
    """Address space of one worker, in MiB (numpy and friends map a lot of it)."""
    cpu_seconds: int = Field(3600, ge=1)
    """CPU time one worker may use over its life; past it the kernel kills it (it is
    then replaced)."""
    processes: int = Field(64, ge=8)
    """Processes and threads of one worker's user (a fork bomb stops here)."""
    open_files: int = Field(256, ge=16)
    """Open files of one worker."""
    workers_per_version: int = Field(1, ge=1, le=64)
    """Worker processes of one version (a binding may ask fewer)."""
    threads: int = Field(4, ge=1, le=64)
    """Calls one worker runs at once (its threads, which take turns reading the socket);
    further calls wait in the socket."""
    start_timeout: float = Field(60, gt=0)
    """Seconds a worker may take to load its model and say it is ready."""
    restart_backoff: float = Field(0.5, ge=0)
    """Seconds before starting a worker again after its second failure in a row (a
    crash, a kill after a timeout), doubling with each further one; the first restart is
    immediate. A call the worker answers resets the count."""
    restart_backoff_max: float = Field(30, ge=0)
    """The longest wait between restarts."""
    max_message_mb: int = Field(64, ge=1)
    """The largest answer (in MiB) the node reads from a worker; a larger one is the
    worker's failure (it is killed and replaced)."""
