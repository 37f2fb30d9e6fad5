"""A real ``tritonserver`` (the binary of the nvidia-pytriton wheel) for the Triton runtime
tests, launched by the same code the runtime uses for a server it starts itself."""

from __future__ import annotations

import shutil
from pathlib import Path

from yunnao.runtimes.adapters.triton import TritonServer

from . import free_port


class TritonProcess(TritonServer):
    """``tritonserver`` with explicit model control on a free loopback port, its model
    repository and log under ``root``. ``start()`` after ``kill()`` or ``stop()`` brings it
    back on the same port and repository, with no model loaded (as after a crash)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, http_port=free_port(), stop_timeout=10)

    def add_model(self, source: Path) -> str:
        """Copy a hand-written model directory into the repository (the operator's part of
        a passthrough binding); its model name."""
        shutil.copytree(source, self.repository / source.name, dirs_exist_ok=True)
        return source.name
