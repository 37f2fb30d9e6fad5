"""Street noise, as a city's environment department might serve it with BentoML.

Two APIs: ``noise_level`` summarises sound-level readings from a roadside meter, and
``classify_zone`` checks day and night levels against the limits of China's acoustic
environment standard (GB 3096-2008) for a functional zone.

    bentoml serve service:NoiseService --port 3000
"""

from __future__ import annotations

from typing import Annotated, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, Field

Decibels = Annotated[float, Field(ge=0, le=200, description="A-weighted level, dB(A)")]
Zone = Literal["0", "1", "2", "3", "4a", "4b"]

# GB 3096-2008, table 1: (day, night) limits in dB(A) for each functional zone.
LIMITS: dict[str, tuple[float, float]] = {
    "0": (50, 40),  # convalescence areas
    "1": (55, 45),  # residential, schools, hospitals
    "2": (60, 50),  # mixed residential and commercial
    "3": (65, 55),  # industrial and logistics
    "4a": (70, 55),  # both sides of highways, arterial roads, urban rail above ground
    "4b": (70, 60),  # both sides of railway main lines
}


class NoiseLevel(BaseModel):
    """Statistical levels of a series of readings, in dB(A)."""

    count: int = Field(description="number of readings")
    leq: float = Field(description="equivalent continuous level: the energy average")
    l10: float = Field(description="level exceeded 10% of the time (peaks)")
    l50: float = Field(description="median level")
    l90: float = Field(description="level exceeded 90% of the time (background)")
    lmax: float
    lmin: float


class Excess(BaseModel):
    limit: float = Field(description="the zone's limit, dB(A)")
    measured: float
    over_by: float = Field(description="dB(A) above the limit; 0 when within it")


class ZoneVerdict(BaseModel):
    """Whether a zone's day and night levels keep to its limits."""

    zone: Zone
    compliant: bool
    day: Excess
    night: Excess


def _excess(limit: float, measured: float) -> Excess:
    return Excess(limit=limit, measured=measured, over_by=round(max(0.0, measured - limit), 1))


@bentoml.service(workers=1)
class NoiseService:
    """Road traffic noise statistics and zone compliance (GB 3096-2008)."""

    @bentoml.api
    def noise_level(
        self, readings: Annotated[list[Decibels], Field(min_length=1, max_length=100_000)]
    ) -> NoiseLevel:
        """Summarise sound-level readings taken at regular intervals.

        `leq` averages the sound energy (10·log10 of the mean of 10^(L/10)), so a few
        loud passing trucks weigh more than in an arithmetic mean; L10, L50 and L90 are
        the levels exceeded 10%, 50% and 90% of the time.
        """
        levels = np.asarray(readings, dtype=float)
        leq = 10 * np.log10(np.mean(np.power(10.0, levels / 10)))
        l90, l50, l10 = np.percentile(levels, [10, 50, 90])
        return NoiseLevel(
            count=int(levels.size),
            leq=round(float(leq), 1),
            l10=round(float(l10), 1),
            l50=round(float(l50), 1),
            l90=round(float(l90), 1),
            lmax=float(levels.max()),
            lmin=float(levels.min()),
        )

    @bentoml.api
    def classify_zone(self, zone: Zone, day_db: Decibels, night_db: Decibels) -> ZoneVerdict:
        """Check a functional zone's day and night Leq against its GB 3096-2008 limits.

        Zones: 0 convalescence, 1 residential, 2 mixed, 3 industrial, 4a along roads,
        4b along railways. Day is 06:00-22:00, night 22:00-06:00.
        """
        day_limit, night_limit = LIMITS[zone]
        day, night = _excess(day_limit, day_db), _excess(night_limit, night_db)
        return ZoneVerdict(
            zone=zone, compliant=day.over_by == 0 and night.over_by == 0, day=day, night=night
        )
