"""Which runtime bindings are an author's to set, and which are the node operator's.

A version's binding (``runtime: {type, config}``) decides where its calls go. Settings
that only size or tune a runtime the node runs (replicas, CPUs, instances,
concurrency) are the author's; anything that names another host, URL, directory,
cluster address, model or node (``remote``; BentoML ``url``, ``service``,
``working_dir``; a Triton passthrough ``model``; any key this module does not know) is
an operator's decision: only operators and admins scoped to the whole node may set it.
The rule is an allow-list, so a key a runtime learns later is the operator's until it
is listed here.

``trusted`` (``rayserve``, ``triton``) is never an author's: it lets the model of an
uploaded package run on Ray Serve's workers or in Triton's Python stub, which run as
the node's user outside any sandbox (they see the node's data directory, its key and
the network). Only the node's operators may vouch for a department's code that way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yunnao.plugins.errors import FieldError, Forbidden

from .access import Action, Entry, Identity, decide
from .schemas import RuntimeBinding

# Runtime type -> the binding keys an author may set. A type not listed here (``remote``,
# runtimes added by plugins) takes an operator for any binding but an empty config;
# ``remote`` takes an operator even with none.
AUTHOR_KEYS: Mapping[str, frozenset[str]] = {
    "inprocess": frozenset({"max_concurrency"}),
    "rayserve": frozenset(
        {"num_replicas", "autoscaling", "num_cpus", "num_gpus", "max_ongoing_requests"}
    ),
    "triton": frozenset({"instances", "gpus", "kind"}),
    # ``bento``: a Bento uploaded to the version's own namespace (the runtime checks),
    # served in the sandbox; ``url``, ``service`` and ``working_dir`` stay the operator's.
    "bentoml": frozenset({"api", "bento"}),
    # Limits are capped by the node's own; an environment is one the node built for an
    # uploaded package (dependencies only, read-only). The network is the operator's.
    "sandbox": frozenset(
        {"memory_mb", "cpu_seconds", "processes", "open_files", "workers", "threads", "environment"}
    ),
    # A pipeline's steps are calls through the gateway as the caller: nothing it reaches
    # is more than its callers may reach themselves.
    "pipeline": frozenset({"steps", "output"}),
}
OPERATOR_TYPES = frozenset({"remote"})
TRUSTED = "trusted"
_TRUSTED_WHY = (
    "`trusted` runs an uploaded package's code on Ray Serve or Triton as the node's user, "
    "outside the sandbox"
)


def reaching_out(binding: RuntimeBinding | Mapping[str, Any]) -> list[str]:
    """The parts of ``binding`` that only an operator may set, as field paths inside it
    (``type``, ``config.url``); [] for a binding an author may set."""
    if isinstance(binding, RuntimeBinding):
        rtype, config = binding.type, binding.config
    else:
        rtype, config = str(binding.get("type", "inprocess")), dict(binding.get("config") or {})
    if rtype in OPERATOR_TYPES:
        return ["type"]
    allowed = AUTHOR_KEYS.get(rtype, frozenset())
    return [f"config.{k}" for k in sorted(config) if k not in allowed]


def may_bind_outside(identity: Identity, node_id: str) -> bool:
    """An operator or admin of this node (a token scoped to the node's own id), not a
    caller forwarded by a linked node: the policy module's ``bind-external``."""
    return decide(identity, Action.BIND_EXTERNAL, Entry(node_id)).allowed


def require_binding(
    identity: Identity, binding: RuntimeBinding, node_id: str, *, field: str = "runtime"
) -> None:
    """Refuse (403, naming each field) a binding that reaches outside the node unless
    ``identity`` is one of the node's operators. ``field``: where the binding is in
    the request body (``runtime`` in a publish, the body itself for a rebind)."""
    outside = reaching_out(binding)
    if not outside or may_bind_outside(identity, node_id):
        return
    prefix = f"{field}." if field else ""
    why = (
        f"a {binding.type} binding that names another host, URL, directory, cluster, "
        f"model or node is set by the operators of node {node_id} only"
    )
    allowed = sorted(AUTHOR_KEYS.get(binding.type, ()))
    hint = f"; authors may set {', '.join(allowed)}" if allowed else ""
    if f"config.{TRUSTED}" in outside:
        hint += f"; {_TRUSTED_WHY}: ask an operator of node {node_id} to bind it"
    raise Forbidden(
        f"{field or 'runtime'}: {why}{hint}",
        errors=[
            FieldError(
                prefix + part,
                f"{_TRUSTED_WHY}, which the operators of node {node_id} decide"
                if part == f"config.{TRUSTED}"
                else why,
            )
            for part in outside
        ],
    )
