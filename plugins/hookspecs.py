"""Every hook a Yunnao plugin may implement, each documented here (as pytest and
datasette declare theirs).

A plugin is a module that implements some of these hooks with :data:`hookimpl`, made
known through the ``yunnao`` entry-point group of its distribution::

    # pyproject.toml of a department's plugin
    [project.entry-points.yunnao]
    traffic = "qd_traffic.capabilities"

    # qd_traffic/capabilities.py
    from yunnao.plugins import capability, hookimpl

    @capability(name="flow-forecast", title="交通流量预测", domain="governance")
    def flow_forecast(counts: list[float], horizon: int = 12) -> list[float]:
        ...

    @hookimpl
    def yunnao_capabilities():
        return [flow_forecast]

Built-in runtimes register through the same hooks as third-party ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .capability import Capability, Invocation

PROJECT = "yunnao"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def yunnao_capabilities() -> list[Capability]:
    """Contribute capabilities: return the objects made by the
    :func:`~yunnao.plugins.capability` decorator that this plugin offers.

    Called once when the plugins are loaded; every plugin's list is collected. A
    capability's name must be unique among all loaded plugins.
    """


@hookspec
def yunnao_runtimes() -> dict[str, Any]:
    """Contribute runtime adapters: return ``{runtime type: factory}``.

    Called once when the plugins are loaded, like :func:`yunnao_capabilities`; a type
    already contributed by another plugin is reported, not replaced. The factory is
    called once per node, on first use, as ``factory(config, context)``: ``config`` is
    the node's configuration for that type (``YUNNAO_RUNTIMES``) and ``context`` a
    :class:`yunnao.runtimes.adapters.base.RuntimeContext`. It returns an object
    implementing the runtime protocol of :mod:`yunnao.runtimes.adapters.base` (deploy,
    undeploy, invoke, health, describe, close). A capability version names its runtime
    by this type in its registry entry (``runtime.type``); the built-in runtimes
    ``inprocess``, ``rayserve``, ``bentoml`` and ``triton`` are registered through this
    hook too.
    """


@hookspec
def yunnao_before_invoke(invocation: Invocation) -> dict[str, Any] | None:
    """Called before a capability runs, with the validated input.

    ``invocation.inputs`` holds the validated keyword arguments. Return a new input
    dict to replace them (e.g. to normalise units; it is validated again), or None to
    leave them. Raise a :class:`~yunnao.plugins.errors.YunnaoError` to refuse the call;
    the caller receives it as a problem. Implementations run in pluggy's call order
    (the last registered first), each seeing the previous one's result.
    """


@hookspec
def yunnao_after_invoke(invocation: Invocation, output: Any) -> Any | None:
    """Called after a capability returns, with its output validated against its type
    and turned into JSON data.

    Return a replacement output (e.g. with sensitive fields masked for callers outside
    the owning department: ``invocation.caller`` says who is calling), or None to leave
    it. Implementations run in the opposite order of ``yunnao_before_invoke``, so a
    plugin's pair nests around those registered before it; each sees the previous
    one's result.
    """
