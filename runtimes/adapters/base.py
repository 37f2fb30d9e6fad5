"""The runtime protocol: what every runtime adapter implements, and what it is given.

A runtime executes capability versions somewhere: in this process, on Ray Serve, on
a BentoML service, on NVIDIA Triton, or at another node. The gateway resolves a call
to a :class:`Target` (one version and its runtime binding), makes sure the target is
deployed, and awaits :meth:`Runtime.invoke` with the validated input. Adapters are
contributed through the ``yunnao_runtimes`` hook as ``{type: factory}``; a factory is
called once per node as ``factory(config, context)`` with the node's configuration for
that runtime type (``Settings.runtimes[type]``) and a :class:`RuntimeContext`.

Adapters report failures with exceptions of ``yunnao.plugins.errors``, which the gateway
turns into HTTP answers: ``RuntimeDown`` (503 with ``Retry-After``), ``InvocationTimeout``
(504), ``NotDeployable`` (409) and ``CapabilityError`` (500; its detail is logged, never
shown to callers).
"""

from __future__ import annotations

import contextvars
import functools
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from yunnao.plugins.capability import Capability
from yunnao.registry.access import Identity


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now (for a server a runtime starts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_settings(rtype: str, config: Mapping[str, Any], known: frozenset[str]) -> None:
    """Refuse node settings a runtime does not know (a typo must not pass silently)."""
    unknown = set(config) - known
    if unknown:
        raise ValueError(
            f"unknown {rtype} runtime settings {sorted(unknown)}; known: {sorted(known)}"
        )


_SLUG_BAD = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Target:
    """One capability version as a runtime sees it."""

    namespace: str
    name: str
    version: str
    runtime: str
    config: Mapping[str, Any] = field(default_factory=dict)  # the version's binding config
    model_uri: str | None = None
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)
    content_hash: str = ""  # of the version's content: schemas, binding, model

    @property
    def id(self) -> str:
        """``namespace/name@version``."""
        return f"{self.namespace}/{self.name}@{self.version}"

    @functools.cached_property
    def slug(self) -> str:
        """A name safe for deployments and model repositories (letters, digits, _ and -),
        unique per version: ``sd_qd_traffic__flow-forecast__1_2_0``."""
        parts = (self.namespace, self.name, self.version)
        return "__".join(_SLUG_BAD.sub("_", p) for p in parts)

    def tensors(self, which: str = "input") -> dict[str, dict[str, Any]]:
        """The tensor-typed top-level fields (``x-tensor``: datatype and shape) of the
        input or output schema, by field name."""
        schema = self.input_schema if which == "input" else self.output_schema
        props = schema.get("properties", {})
        return {k: v["x-tensor"] for k, v in props.items() if "x-tensor" in v}


@dataclass(frozen=True)
class RuntimeHealth:
    ok: bool
    detail: str = ""


@dataclass
class RuntimeContext:
    """What a runtime factory may use from its node."""

    node_id: str
    data_dir: Path
    # MLflow: where models:/ URIs resolve (a runtime in another process needs these).
    tracking_uri: str | None = None
    registry_uri: str | None = None
    # Loads a models:/ URI into a runnable capability (see runtimes.loading).
    load_model: Callable[[str], Any] | None = None
    # Capabilities of the plugins loaded at this node, by name.
    capabilities: Mapping[str, Capability] = field(default_factory=dict)
    # For the remote runtime: a linked node's base URL (None when it cannot be reached
    # from here), and an assertion for it carrying the caller and binding the call:
    # ``assertion(node, caller, route=..., visited=..., deadline=...)`` (see
    # yunnao.registry.identity.assertions).
    peer_url: Callable[[str], str | None] | None = None
    assertion: Callable[..., str] | None = None
    # The node's health board and circuit breakers (yunnao.registry.health.HealthBoard):
    # the remote runtime asks it before forwarding and tells it how the call went.
    health: Any = None
    # For the pipeline runtime: one call through this node's gateway, as a caller:
    # ``call(identity, namespace, name_ref, inputs, *, timeout, request_id)`` -> output.
    call: Callable[..., Any] | None = None


@dataclass(frozen=True)
class CallContext:
    """Who made the call being run, and its request id: for runtimes that forward it.
    ``visited``: the nodes a forwarded call went through before this one; ``deadline``:
    when (epoch seconds) the original caller stops waiting. A runtime that forwards the
    call passes both on, never calls a node twice, and never works past the deadline."""

    caller: Identity
    request_id: str | None = None
    visited: tuple[str, ...] = ()
    deadline: float | None = None


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "yunnao_current_call", default=None
)


@runtime_checkable
class Runtime(Protocol):
    """What an adapter implements. All methods are called on the node's event loop."""

    type: str

    async def deploy(self, target: Target) -> None:
        """Make ``target`` ready to invoke (idempotent). Raise :class:`NotDeployable`
        for a binding the runtime cannot serve, :class:`RuntimeDown` when its server
        cannot be reached."""

    async def undeploy(self, target: Target) -> None:
        """Release what :meth:`deploy` made (idempotent)."""

    async def invoke(self, target: Target, inputs: dict[str, Any], *, timeout: float) -> Any:
        """Run the deployed ``target`` on validated JSON ``inputs`` (keyword arguments of
        the capability) and return its JSON output, within ``timeout`` seconds."""

    async def health(self) -> RuntimeHealth:
        """Whether the runtime's server is serving."""

    def describe(self) -> dict[str, Any]:
        """What an operator wants to see: type, server address, deployed targets."""

    async def close(self) -> None:
        """Release clients and servers this adapter started (node shutdown)."""
