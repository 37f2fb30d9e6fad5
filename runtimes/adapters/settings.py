"""Typed node settings of the runtime adapters (in the node process).

Each adapter's node configuration (``Settings.runtimes[type]``, the ``YUNNAO_RUNTIMES``
JSON) is a pydantic model derived from :class:`RuntimeSettings`, with each key's type,
default and meaning (``TritonSettings`` in ``triton/settings.py``, ``RayServeSettings``,
``BentoMLSettings``, ``InProcessSettings``, ``RemoteSettings``), read once by the
adapter's constructor with :meth:`RuntimeSettings.parse`. A key the model does not
know is refused with :func:`~yunnao.runtimes.adapters.base.check_settings`'s message
("unknown triton runtime settings [...]; known: [...]"); a value of the wrong type
with one that names the key. Both are ``ValueError``.

A version's binding (its ``runtime.config``) is another thing: each adapter reads
and refuses it per target, at deploy time (``NotDeployable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from .base import check_settings


class RuntimeSettings(BaseModel):
    """The base of every adapter's settings: unknown keys refused, values typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def parse(cls, rtype: str, config: Mapping[str, Any]) -> Self:
        """``config`` as these settings; ``ValueError`` for an unknown key (when the model
        forbids extra keys) or a value of the wrong type."""
        if cls.model_config.get("extra") == "forbid":
            check_settings(rtype, config, frozenset(cls.model_fields))
        try:
            return cls.model_validate(dict(config))
        except ValidationError as exc:
            problems = "; ".join(map(_problem, exc.errors()))
            raise ValueError(f"invalid {rtype} runtime settings: {problems}") from None


def _problem(error: Any) -> str:
    """One refused value: ``key: what is wrong (got value)``."""
    key = ".".join(map(str, error["loc"])) or "(settings)"
    return f"{key}: {error['msg']} (got {error['input']!r})"
