"""What Ray Serve runs for one capability version: the Serve deployment options read
from the version's binding (in the node process), and :class:`CapabilityReplica`, the
deployment class, which runs in Ray Serve's replica processes (Ray pickles it by
reference: this module must stay importable in a Ray worker, without Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from yunnao.plugins.errors import NotDeployable, YunnaoError

from ..base import Target

BINDING_KEYS = frozenset(
    {"num_replicas", "autoscaling", "num_cpus", "num_gpus", "max_ongoing_requests", "trusted"}
)


class CapabilityReplica:
    """The Serve deployment class of one capability version. Its module is imported by
    reference in Ray workers, so it must stay importable without Ray."""

    def __init__(
        self,
        model: str,
        tracking_uri: str | None,
        registry_uri: str | None,
        allow_uploaded: bool = False,
    ) -> None:
        from yunnao.runtimes.adapters.loading import load_runnable

        self._runnable = load_runnable(
            model, tracking_uri, registry_uri, allow_uploaded=allow_uploaded
        )

    def run(self, inputs: dict[str, Any]) -> Any:
        """Handle calls: the capability's JSON output for JSON ``inputs``."""
        return self._runnable(inputs)

    async def __call__(self, request: Any) -> Any:
        """Ray Serve's HTTP proxy: a POST of the input JSON, answered with the output
        JSON; invalid input answers the capability's validation error (422)."""
        from starlette.responses import JSONResponse

        try:
            inputs = await request.json()
        except ValueError:
            inputs = None
        if not isinstance(inputs, dict):
            detail = "the body must be a JSON object of the capability's inputs"
            return JSONResponse({"detail": detail}, status_code=400)
        try:
            # Off the replica's event loop, which serves its other requests meanwhile.
            output = await asyncio.to_thread(self._runnable, inputs)
        except YunnaoError as exc:
            errors = [e.as_dict() for e in exc.errors]
            return JSONResponse({"detail": exc.detail, "errors": errors}, status_code=exc.status)
        return JSONResponse(output)


def deployment_options(target: Target) -> dict[str, Any]:
    """Serve deployment options from a version's binding; :class:`NotDeployable` for a
    binding this runtime does not accept."""
    config = target.config
    unknown = sorted(set(config) - BINDING_KEYS)
    if unknown:
        accepted = ", ".join(sorted(BINDING_KEYS))
        raise NotDeployable(f"{target.id}: unknown rayserve binding keys {unknown} ({accepted})")

    def number(key: str, default: float) -> float:
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise NotDeployable(f"{target.id}: {key} must be a number >= 0, not {value!r}")
        return value

    def count(key: str) -> int:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NotDeployable(f"{target.id}: {key} must be an integer >= 1, not {value!r}")
        return value

    trusted(target)
    actor = {"num_cpus": number("num_cpus", 0.5), "num_gpus": number("num_gpus", 0)}
    options: dict[str, Any] = {"ray_actor_options": actor}
    if "autoscaling" in config:
        if "num_replicas" in config:
            raise NotDeployable(f"{target.id}: give num_replicas or autoscaling, not both")
        if not isinstance(config["autoscaling"], Mapping):
            raise NotDeployable(f"{target.id}: autoscaling must be an object")
        options["autoscaling_config"] = dict(config["autoscaling"])
    else:
        options["num_replicas"] = count("num_replicas") if "num_replicas" in config else 1
    if "max_ongoing_requests" in config:
        options["max_ongoing_requests"] = count("max_ongoing_requests")
    return options


def trusted(target: Target) -> bool:
    """The binding's ``trusted``: whether the node's operators let an uploaded package's
    model run on Ray Serve (its workers run as the node's user, outside any sandbox).
    Never an author's to set (``yunnao.registry.bindings``)."""
    value = target.config.get("trusted", False)
    if not isinstance(value, bool):
        raise NotDeployable(f"{target.id}: rayserve binding `trusted` must be true or false")
    return value
