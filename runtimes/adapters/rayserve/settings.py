"""The ``rayserve`` runtime's node settings (``Settings.runtimes["rayserve"]``), read
in the node process when the adapter is made; every key is optional."""

from __future__ import annotations

from ..settings import RuntimeSettings

MODEL_SOURCES = ("download", "registry")


class RayServeSettings(RuntimeSettings):
    """Where the Ray cluster is, and how long its operations may take."""

    address: str | None = None
    """An existing Ray cluster (``"127.0.0.1:6379"``, ``"auto"``). Absent: the driver
    process starts a local Ray on first use, which stops when the node does."""
    namespace: str = "yunnao"
    """The driver's Ray namespace."""
    num_cpus: int | float = 2
    """CPUs of a local Ray the driver starts (``ray.init(num_cpus=...)``)."""
    http_host: str = "127.0.0.1"
    """Where Ray Serve's own HTTP proxy listens."""
    http_port: int | None = None
    """The proxy's port. Absent: a free port; None or 0: no proxy. Serve's HTTP options
    are cluster-wide and fixed when Serve first starts on a cluster."""
    model_source: str = "download"
    """``"download"``: the node downloads model files for replicas to load (they must
    see its file system); ``"registry"``: replicas load the ``models:/`` URI themselves."""
    connect_timeout: float = 60
    """Seconds connecting to the cluster may take."""
    deploy_timeout: float = 120
    """Seconds bringing an application to RUNNING may take."""
    retry_after: int = 5
    """The ``Retry-After`` (seconds) suggested when the cluster is down."""
