"""A version's ``bentoml`` binding (its ``runtime.config``), read in the node process
as which service to reach (adopted by ``url``, started from ``service`` and
``working_dir``, or an uploaded Bento served in the sandbox: ``bento``, its archive's
SHA-256) and which API to call;
:class:`~yunnao.plugins.errors.NotDeployable` for a binding the runtime does not
accept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yunnao.plugins.errors import NotDeployable

from ..base import Target

BINDING_KEYS = frozenset({"url", "service", "working_dir", "api", "bento"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Binding:
    """Which service a target is served by, and its API there."""

    key: str  # the service: its URL, or service ref + working dir
    api: str
    url: str | None = None
    service: str | None = None
    working_dir: Path | None = None
    bento: str | None = None  # an uploaded Bento's sha256 (see sandboxed.py)


def parse_binding(target: Target) -> Binding:
    """The target's binding config, checked."""
    config = dict(target.config)
    unknown = set(config) - BINDING_KEYS
    if unknown:
        raise NotDeployable(
            f"{target.id}: unknown bentoml binding keys {sorted(unknown)}; "
            f"known: {sorted(BINDING_KEYS)}"
        )
    api = str(config.get("api") or target.name.replace("-", "_"))
    url, service, bento = config.get("url"), config.get("service"), config.get("bento")
    if sum(map(bool, (url, service, bento))) != 1 or (bento and "working_dir" in config):
        raise NotDeployable(
            f"{target.id}: a bentoml binding needs exactly one of `url` (a running service), "
            "`service` (module:Class to start) or `bento` (an uploaded Bento)"
        )
    if bento:
        if not (isinstance(bento, str) and _SHA256.match(bento)):
            raise NotDeployable(f"{target.id}: bentoml `bento` must be an uploaded Bento's sha256")
        return Binding(key=f"bento:{bento}", api=api, bento=bento)
    if url:
        url = str(url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise NotDeployable(f"{target.id}: bentoml url {url!r} is not http(s)")
        return Binding(key=url, api=api, url=url)
    working_dir = Path(str(config.get("working_dir") or ".")).expanduser().resolve()
    return Binding(
        key=f"{service}@{working_dir}", api=api, service=str(service), working_dir=working_dir
    )
