"""A version's ``sandbox`` binding (its ``runtime.config``), read in the node process as
the workers to start: their limits, network, count and threads, and the environment of
an uploaded package they run on (``environment``: its key, an environment the node
built under ``<data_dir>/packages/envs``). A binding may lower the node's limits, never
raise them, and asks for the network only where the node's operator allows it;
anything else is :class:`~yunnao.plugins.errors.NotDeployable`."""

from __future__ import annotations

from dataclasses import dataclass

from yunnao.plugins.errors import NotDeployable
from yunnao.registry.packages.environments import KEY_RE
from yunnao.registry.packages.sandbox import Limits

from ..base import Target
from .settings import SandboxSettings

# Binding key -> the node setting that is its default and ceiling.
CEILINGS = {
    "memory_mb": "memory_mb",
    "cpu_seconds": "cpu_seconds",
    "processes": "processes",
    "open_files": "open_files",
    "workers": "workers_per_version",
    "threads": "threads",
}
BINDING_KEYS = frozenset({*CEILINGS, "network", "environment"})
# Below these a worker cannot even start Python and load its model.
FLOORS = {"memory_mb": 64, "processes": 8, "open_files": 16}


@dataclass(frozen=True)
class Binding:
    """What the workers of one version get."""

    limits: Limits
    network: bool
    workers: int
    threads: int
    environment: str | None = None  # an uploaded package's environment key


def binding_of(target: Target, settings: SandboxSettings) -> Binding:
    """``target``'s binding within the node's ``settings``; NotDeployable naming the key
    for an unknown key, a value that is not a whole number in range, or the network
    where the node does not allow it."""
    config = dict(target.config)
    unknown = set(config) - BINDING_KEYS
    if unknown:
        raise NotDeployable(
            f"{target.id}: unknown sandbox binding keys {sorted(unknown)}; "
            f"known: {sorted(BINDING_KEYS)}"
        )
    values = {}
    for key, setting in CEILINGS.items():
        ceiling = int(getattr(settings, setting))
        value = config.get(key, ceiling)
        if isinstance(value, bool) or not isinstance(value, int):
            raise NotDeployable(f"{target.id}: sandbox binding `{key}` must be a whole number")
        floor = FLOORS.get(key, 1)
        if not floor <= value <= ceiling:
            raise NotDeployable(
                f"{target.id}: sandbox binding `{key}` is {value}; this node allows "
                f"{floor} to {ceiling} (its runtime setting `{setting}`)"
            )
        values[key] = value
    network = config.get("network", False)
    if not isinstance(network, bool):
        raise NotDeployable(f"{target.id}: sandbox binding `network` must be true or false")
    if network and not settings.allow_network:
        raise NotDeployable(
            f"{target.id}: its binding asks for the network, which this node's sandbox "
            "does not give (the operator's runtime setting `allow_network`)"
        )
    environment = config.get("environment")
    if environment is not None and not (isinstance(environment, str) and KEY_RE.match(environment)):
        raise NotDeployable(
            f"{target.id}: sandbox binding `environment` must be the key of an environment "
            "this node built for an uploaded package"
        )
    limits = Limits(
        memory_mb=values["memory_mb"],
        cpu_seconds=values["cpu_seconds"],
        processes=values["processes"],
        open_files=values["open_files"],
    )
    return Binding(limits, network, values["workers"], values["threads"], environment)
