"""Capabilities the sandbox runtime's tests run: a well-behaved one, one that fails, and
one that attacks the node from inside its worker (each attack reports what happened,
or fails the way the attack makes it fail)."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Annotated, Any, Literal

from pydantic import Field

from yunnao.plugins import capability, hookimpl


@capability(name="echo", title="Echo", version="1.0.0", classification="public")
def echo(text: Annotated[str, Field(min_length=1, max_length=100)], times: int = 1) -> str:
    return text * times


@capability(name="boom", title="Always fails", version="1.0.0", classification="public")
def boom(message: str) -> str:
    raise RuntimeError(f"secret internal detail: {message}")


@capability(name="depends", title="Needs its package's environment", version="1.0.0")
def depends() -> dict[str, str]:
    """A requirement the node lacks, installed in the package's environment only."""
    import sbx_testdep

    return {"greeting": sbx_testdep.GREETING, "prefix": sys.prefix}


Attack = Literal["whoami", "read", "connect", "allocate", "fill", "fork", "spin", "exit"]


@capability(name="attack", title="Attacks its node", version="1.0.0", classification="public")
def attack(kind: Attack, path: str = "", port: int = 0, count: int = 0) -> dict[str, Any]:
    """``read`` a file at ``path``; ``connect`` to 127.0.0.1:``port``; ``allocate``
    ``count`` GiB; ``fill`` /tmp with ``count`` GiB; ``fork`` ``count`` processes that
    sleep; ``spin`` forever; ``exit`` the worker; ``whoami``: the worker's ids."""
    if kind == "whoami":
        return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}
    if kind == "read":
        try:
            with open(path, "rb") as f:
                return {"read": f.read(64).decode(errors="replace")}
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc.strerror}"}
    if kind == "connect":
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                return {"connected": True}
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc.strerror or exc}"}
    if kind == "allocate":
        block = bytearray(count * 1024**3)  # MemoryError under the sandbox's limit
        return {"allocated": len(block)}
    if kind == "fill":
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(count * 64):
                    written += f.write(bytes(16 * 1024**2))
                    f.flush()
        except OSError as exc:
            return {"written": written, "error": f"{type(exc).__name__}: {exc.strerror}"}
        finally:
            os.unlink("/tmp/fill")
        return {"written": written}
    if kind == "fork":
        forked = 0
        try:
            for _ in range(count):
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                forked += 1
        except OSError as exc:
            return {"forked": forked, "error": f"{type(exc).__name__}: {exc.strerror}"}
        return {"forked": forked}
    if kind == "spin":
        while True:
            pass
    os._exit(3)


@hookimpl
def yunnao_capabilities():
    return [echo, boom, attack, depends]
