"""``/metrics`` as one reader may see it: the series of capabilities the policy module
lets that reader discover (:mod:`~yunnao.registry.visibility`), and every series that
names no capability. Reading the node's metrics at all is ``read-node`` (operators and
admins of the node); which capabilities show is ``discover``, decided per capability."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from yunnao.registry import visibility
from yunnao.registry.access import Identity


class _Families:
    """What ``generate_latest`` reads: something with ``collect()``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def exposition(registry: Any, identity: Identity, engine: sa.Engine) -> bytes:
    """The text exposition of ``registry`` for ``identity``."""
    families = list(registry.collect())

    def key(sample: Any) -> visibility.Key | None:
        ref = sample.labels.get("capability")
        return None if ref is None else visibility.split_capability(ref)

    named = {k for f in families for s in f.samples if (k := key(s)) is not None}
    seen = visibility.visible(identity, engine, named)
    shown = []
    for family in families:
        samples = [s for s in family.samples if "capability" not in s.labels or key(s) in seen]
        if len(samples) != len(family.samples):
            family = copy.copy(family)
            family.samples = samples
        shown.append(family)
    return generate_latest(_Families(shown))  # type: ignore[arg-type]
