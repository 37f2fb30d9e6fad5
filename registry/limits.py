"""Rate limit specs: ``"100/s"``, ``"5000/day"``, ``"10/min burst 50"``.

A limit is a token bucket: ``burst`` tokens at most (by default the count), refilled at
count/period, so ``"5000/day"`` is a daily quota that refills steadily rather than at
midnight. The buckets themselves live in :mod:`yunnao.runtimes.gateway.ratelimit`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_MAX_COUNT = 10**9
_UNITS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
_SPEC = re.compile(
    r"\s*([0-9]+)\s*/\s*([a-z]+)\s*(?:burst\s+([0-9]+)\s*)?", re.IGNORECASE | re.ASCII
)
_FORMS = (
    "expected 'N/UNIT' or 'N/UNIT burst B', where UNIT is one of "
    "s, sec, second, m, min, minute, h, hour, d, day and N, B are positive integers "
    f"up to {_MAX_COUNT} (e.g. '100/min', '10/s burst 50')"
)


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens added per second
    burst: float  # bucket capacity
    text: str  # the spec as given, e.g. "100/min"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate limit {self.text!r}: rate must be positive")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"rate limit {self.text!r}: burst must be at least 1")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"N/UNIT"`` or ``"N/UNIT burst B"``; the burst defaults to N."""
        match = _SPEC.fullmatch(text) if isinstance(text, str) else None
        if match is None or match[2].lower() not in _UNITS:
            raise ValueError(f"invalid rate limit {text!r}: {_FORMS}")
        count = int(match[1])
        burst = int(match[3]) if match[3] is not None else count
        if not (1 <= count <= _MAX_COUNT and 1 <= burst <= _MAX_COUNT):
            raise ValueError(f"invalid rate limit {text!r}: {_FORMS}")
        return cls(rate=count / _UNITS[match[2].lower()], burst=float(burst), text=text)
