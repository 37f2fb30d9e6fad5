"""Running a sandboxed helper and reading its report, which is untrusted data.

The node's helpers that run a department's code (the package inspector, the Bento
inspector) or its build (the sdist builder) run in the sandbox and write one JSON
document to their standard output. :func:`run_capped` runs such a command, keeping no
more of its output than the caller allows and killing it (its whole process group) when
it runs past its time; :func:`read_report` reads the document with a size limit into a
strict model, and :func:`failed` is the refusal both raise on field ``file``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from typing import IO, TypeVar

from pydantic import BaseModel, ValidationError

from yunnao.plugins.errors import FieldError, ValidationFailed

MAX_STDERR = 64 * 1024  # the tail kept of a helper's standard error

M = TypeVar("M", bound=BaseModel)


def failed(message: str) -> ValidationFailed:
    """The refusal of an upload whose helper failed: ``message`` on field ``file``."""
    return ValidationFailed(message, errors=[FieldError("file", message)])


def read_report(out: bytes, model: type[M], *, max_bytes: int, name: str) -> M:
    """``out``, a sandboxed helper's standard output, read as JSON into the strict
    ``model``. Raises :func:`failed` naming ``name`` (e.g. "the inspector's report")
    when it is over ``max_bytes`` or not a valid document."""
    if len(out) > max_bytes:
        raise failed(f"{name} is over {max_bytes} bytes")
    try:
        return model.model_validate(json.loads(out))
    except (ValueError, RecursionError, ValidationError) as exc:
        raise failed(f"{name} is not valid: {str(exc)[:500]}") from None


def run_capped(argv: list[str], timeout: float, max_out: int) -> tuple[int, bytes, bytes, bool]:
    """Run ``argv``; its exit status, standard output (up to just over
    ``max_out``), the tail of standard error, and whether it was stopped for
    running past ``timeout``. Nothing it prints can exhaust the node's memory."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out, max_out + 1, False)),
        threading.Thread(target=_drain, args=(proc.stderr, err, MAX_STDERR, True)),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for reader in readers:
        reader.join()
    return proc.returncode, b"".join(out), b"".join(err), timed_out


def _drain(stream: IO[bytes], sink: list[bytes], cap: int, tail: bool) -> None:
    """Read ``stream`` to its end, keeping its first (or last, with ``tail``) ``cap``
    bytes."""
    kept = 0
    while chunk := stream.read(65536):
        if tail:
            sink.append(chunk)
            kept += len(chunk)
            while kept - len(sink[0]) >= cap:
                kept -= len(sink.pop(0))
        elif kept < cap:
            sink.append(chunk[: cap - kept])
            kept += len(sink[-1])
    stream.close()
