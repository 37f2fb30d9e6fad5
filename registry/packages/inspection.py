"""Inspecting an uploaded package: the node's side of :mod:`.inspector`.

:func:`inspect_package` starts the inspector in the sandbox, with the package's
environment and unpacked code read-only, no network and the given limits, waits for it
(up to ``timeout``), and reads its document. The document comes from untrusted code, so
it is read with limits (its size, every string's and list's length) into strict models;
anything else is a refusal. Problems the inspector reports (an import error, a failing
example, a capability whose spec is invalid) become one
:class:`~yunnao.plugins.errors.ValidationFailed`, each problem a ``FieldError`` (an
import error's message carries its traceback), and the full list under ``problems``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from yunnao.plugins.errors import FieldError, ValidationFailed

from . import sandbox
from .environments import Environment
from .inspector import PROGRESS
from .runner import failed, read_report, run_capped

MODULE = "yunnao.registry.packages.inspector"
TIMEOUT = 120.0
MAX_DOCUMENT = 8 * 1024 * 1024  # bytes of the inspector's standard output

Short = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Json = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Distribution(_Strict):
    name: Short
    version: Short


class PluginEntry(_Strict):
    name: Short
    module: Short
    capabilities: Annotated[list[Short], Field(max_length=200)]


class Problem(_Strict):
    kind: Literal["no-plugins", "import", "plugin", "spec", "artifact", "code", "example"]
    message: Text
    field: Short = "file"
    plugin: Short | None = None
    capability: Short | None = None
    traceback: Text | None = None


class ExampleResult(_Strict):
    index: Annotated[int, Field(ge=0, le=1000)]
    ok: bool


class CapabilitySpec(_Strict):
    """A capability as the package declares it: what publishing needs, no code."""

    name: Short
    version: Short
    title: Short
    summary: Text
    description: Text
    summary_en: Text = ""
    description_en: Text = ""
    kind: Short
    domain: Short
    tags: Annotated[list[Short], Field(max_length=64)]
    classification: Short
    owner: Short
    contact: Short
    license: Short
    input_schema: Json
    output_schema: Json
    examples: Annotated[list[Json], Field(max_length=50)]
    artifacts: dict[Short, Annotated[str, StringConstraints(max_length=1024)]]
    requirements: Annotated[list[Short], Field(max_length=200)]
    runtime: Json
    entry: Annotated[str, StringConstraints(max_length=500)]  # module:qualname
    module: Short
    code: Annotated[str, StringConstraints(max_length=1024)]  # package-relative path
    plugin: Short
    example_results: Annotated[list[ExampleResult], Field(max_length=50)]


class Inspection(_Strict):
    """The inspector's document."""

    distribution: Distribution
    plugins: Annotated[list[PluginEntry], Field(max_length=100)]
    capabilities: Annotated[list[CapabilitySpec], Field(max_length=200)]
    problems: Annotated[list[Problem], Field(max_length=1000)]


def inspect_package(
    package_dir: Path,
    dist_info: str,
    env: Environment,
    *,
    key: str,
    limits: sandbox.Limits | None = None,
    timeout: float = TIMEOUT,
    enforce: bool = True,
) -> Inspection:
    """Inspect the package unpacked at ``package_dir`` (``dist_info``: its
    ``*.dist-info`` folder) on environment ``env``, in a sandbox keyed ``key``.

    Returns the inspection when the package loads, every capability checks out and
    every example passes; raises :class:`ValidationFailed` otherwise (field errors name
    the plugin, capability, example and field; ``extra["problems"]`` lists them all,
    tracebacks included). ``enforce=False`` runs without bubblewrap, under the limits
    only (an operator who trusts uploaded code on a machine without it)."""
    package_dir = Path(package_dir).resolve()
    box = sandbox.Sandbox(
        key=key,
        read_only=(package_dir, env.path.resolve()),
        network=False,
        limits=limits or sandbox.Limits(),
    )
    argv = [str(env.python), "-I", "-m", MODULE, str(package_dir), dist_info]
    command = sandbox.command(box, argv, enforce=enforce)
    code, out, err, timed_out = run_capped(command, timeout, MAX_DOCUMENT)
    where = _last_progress(err)
    if timed_out:
        raise failed(
            f"inspecting the package did not finish within {timeout:.0f} s"
            + (f"; it was {where}" if where else ""),
        )
    if code != 0:
        tail = err.decode("utf-8", "replace").strip()[-4000:]
        raise failed(
            f"the inspector exited with status {code}"
            + (f" while {where}" if where else "")
            + (f":\n{tail}" if tail else "")
        )
    inspection = read_report(out, Inspection, max_bytes=MAX_DOCUMENT, name="the inspector's report")
    if inspection.problems:
        raise _problems(inspection.problems)
    if not inspection.capabilities:
        raise failed("the package's plugins contribute no capabilities")
    return inspection


def _problems(problems: list[Problem]) -> ValidationFailed:
    errors = []
    for p in problems:
        message = p.message + (f"\n{p.traceback}" if p.traceback else "")
        errors.append(FieldError(p.field, message))
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ValidationFailed(
        f"the package does not pass inspection: {first.field}: {first.message}{more}",
        errors=errors,
        extra={"problems": [p.model_dump(exclude_none=True) for p in problems]},
    )


def _last_progress(err: bytes) -> str | None:
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.startswith(PROGRESS)]
    return lines[-1].removeprefix(PROGRESS) if lines else None
