"""Capabilities the runtime and gateway tests run on every runtime: a tensor one (for
the V2 protocol), a JSON one, a slow one, a failing one, and one that says which
process ran it (proof that a call left the node)."""

from __future__ import annotations

import os
import time
from typing import Annotated

from pydantic import BaseModel, Field

from yunnao.plugins import Tensor, capability, hookimpl
from yunnao.plugins.tensor import FP32


class Doubled(BaseModel):
    y: Tensor[FP32, -1] = Field(description="the input times two")


@capability(name="double", title="Double a tensor", version="1.0.0", classification="public")
def double(x: Tensor[FP32, -1]) -> Doubled:
    return Doubled(y=x * 2)


@capability(name="greet", title="Greet", version="1.0.0", classification="public")
def greet(name: Annotated[str, Field(min_length=1, max_length=50)], excited: bool = False) -> str:
    return f"你好, {name}{'!' if excited else '.'}"


@capability(name="sleepy", title="Sleep a while", version="1.0.0", classification="public")
def sleepy(seconds: Annotated[float, Field(ge=0, le=60)]) -> float:
    time.sleep(seconds)
    return seconds


@capability(name="boom", title="Always fails", version="1.0.0", classification="public")
def boom(message: str) -> str:
    raise RuntimeError(f"secret internal detail: {message}")


@capability(name="pid", title="Which process ran me", version="1.0.0", classification="public")
def pid() -> int:
    return os.getpid()


@hookimpl
def yunnao_capabilities():
    return [double, greet, sleepy, boom, pid]
