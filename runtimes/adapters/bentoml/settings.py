"""The ``bentoml`` runtime's node settings (``Settings.runtimes["bentoml"]``), read in
the node process when the adapter is made; every key is optional."""

from __future__ import annotations

from typing import Any

from ..settings import RuntimeSettings


class BentoMLSettings(RuntimeSettings):
    """How the node starts, waits for and stops the services it runs itself."""

    start_timeout: float = 60
    """Seconds a started service may take to answer ``/readyz``."""
    stop_timeout: float = 10
    """Seconds a started service has to shut down after SIGTERM before it is killed."""
    retry_after: int = 5
    """The ``Retry-After`` (seconds) suggested when a service is down or restarting."""
    bentoml: str | None = None
    """The ``bentoml`` executable for started services (default: the one next to this
    Python, else the one on PATH); point it at another virtual environment to run a
    service with dependencies the node does not have."""
    home: str | None = None
    """``BENTOML_HOME`` for started services (default: the node's environment variable
    if set, else ``<data_dir>/bentoml/home``)."""
    env: dict[str, Any] | None = None
    """Extra environment variables for started services (values as text)."""
