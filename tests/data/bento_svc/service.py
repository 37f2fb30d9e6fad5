"""A BentoML service for the BentoML runtime tests: one API per behaviour under test."""

from __future__ import annotations

import os
import time

import bentoml


# threads: sync APIs share a pool of this size, so `greet` answers while an abandoned
# `sleepy` call still sleeps.
@bentoml.service(workers=1, threads=4)
class Greeter:
    """Small APIs that answer, wait, fail and say which process runs them."""

    @bentoml.api
    def greet(self, name: str) -> str:
        """Greet someone by name.

        Returns a friendly sentence.
        """
        return f"Hello, {name}!"

    @bentoml.api
    def sleepy(self, seconds: float) -> float:
        """Sleep for the given seconds, then return them."""
        time.sleep(seconds)
        return seconds

    @bentoml.api
    def boom(self, message: str) -> str:
        """Always fail with the given message."""
        raise ValueError(message)

    @bentoml.api
    def pid(self) -> int:
        """The id of the worker process serving the call."""
        return os.getpid()
