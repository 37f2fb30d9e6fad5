"""The node's runtimes: made from the ``yunnao_runtimes`` hook on first use, with the
node's configuration for each type, and the record of which target is deployed where.

A version's runtime binding may change while the node runs (an operator moves it from
``inprocess`` to ``triton``, or changes its replicas): the next call deploys it as now
bound and releases the old deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from yunnao.plugins.errors import NotDeployable

from .base import Runtime, RuntimeContext, RuntimeHealth, Target

log = logging.getLogger("yunnao.runtimes")

Factory = Callable[[Mapping[str, Any], RuntimeContext], Runtime]


def _binding_key(target: Target) -> str:
    return target.runtime + json.dumps(dict(target.config), sort_keys=True, default=str)


class Runtimes:
    """Runtime adapters by type, and what is deployed on them."""

    def __init__(
        self,
        factories: Mapping[str, Factory],
        configs: Mapping[str, Mapping[str, Any]],
        context: RuntimeContext,
    ) -> None:
        self.factories = dict(factories)
        self.configs = configs
        self.context = context
        self._made: dict[str, Runtime] = {}
        self._deployed: dict[str, tuple[str, Target]] = {}  # slug -> (binding key, target)
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, rtype: str) -> Runtime:
        runtime = self._made.get(rtype)
        if runtime is None:
            factory = self.factories.get(rtype)
            if factory is None:
                known = ", ".join(sorted(self.factories)) or "none"
                raise NotDeployable(f"this node has no runtime {rtype!r} (it has: {known})")
            runtime = factory(self.configs.get(rtype, {}), self.context)
            self._made[rtype] = runtime
        return runtime

    def deployed(self, target: Target) -> Runtime | None:
        """The runtime serving ``target`` if it is deployed as currently bound, else None
        (then :meth:`ready` deploys it)."""
        current = self._deployed.get(target.slug)
        if current is not None and current[0] == _binding_key(target):
            return self._made.get(target.runtime)
        return None

    async def ready(self, target: Target) -> Runtime:
        """The runtime serving ``target``, deployed as currently bound."""
        runtime = self.get(target.runtime)
        key = _binding_key(target)
        current = self._deployed.get(target.slug)
        if current is not None and current[0] == key:
            return runtime
        lock = self._locks.setdefault(target.slug, asyncio.Lock())
        async with lock:
            current = self._deployed.get(target.slug)
            if current is not None and current[0] == key:
                return runtime
            if current is not None:
                await self._release(current[1])
            await runtime.deploy(target)
            self._deployed[target.slug] = (key, target)
            log.info("deployed %s on %s", target.id, target.runtime)
        return runtime

    def forget(self, target: Target) -> None:
        """Mark ``target`` as needing deployment again (its server lost it)."""
        self._deployed.pop(target.slug, None)

    async def _release(self, old: Target) -> None:
        try:
            await self.get(old.runtime).undeploy(old)
            log.info("released %s from %s", old.id, old.runtime)
        except Exception:
            log.exception("could not release %s from %s", old.id, old.runtime)

    async def health(self) -> dict[str, RuntimeHealth]:
        out = {}
        for rtype, runtime in self._made.items():
            try:
                out[rtype] = await runtime.health()
            except Exception as exc:
                out[rtype] = RuntimeHealth(False, f"{type(exc).__name__}: {exc}")
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "available": sorted(self.factories),
            "started": {rtype: rt.describe() for rtype, rt in self._made.items()},
            "deployed": dict(sorted((t.id, t.runtime) for _, t in self._deployed.values())),
        }

    async def close(self) -> None:
        for rtype, runtime in self._made.items():
            try:
                await runtime.close()
            except Exception:
                log.exception("closing runtime %s", rtype)
        self._made.clear()
        self._deployed.clear()
