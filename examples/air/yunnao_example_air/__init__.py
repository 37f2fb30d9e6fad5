"""Environment department plugin: finds monitoring stations whose readings are off.

A station is anomalous when its PM2.5 is far from the city's other stations at the
same hour, measured by a robust z-score (distance from the median in units of the
median absolute deviation), so one broken sensor cannot hide itself by skewing the mean.
Baseline noise levels per station ship with the plugin (``stations.csv``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from yunnao.plugins import capability, hookimpl

# The MAD of normal noise is 0.6745 sigma: this turns a MAD into a sigma estimate.
_MAD_TO_SIGMA = 1.4826


class Reading(BaseModel):
    station: Annotated[str, Field(min_length=1, max_length=64)]
    pm25: Annotated[float, Field(ge=0, le=2000, description="µg/m³")]


@dataclass
class Finding:
    station: str
    pm25: float
    score: float
    kind: str  # "high" or "low"


@capability(
    name="air-anomaly",
    title="空气质量异常检测",
    version="1.0.0",
    summary="Flags monitoring stations whose PM2.5 is far from the other stations' readings",
    kind="algorithm",
    domain="livelihood",
    tags=["air", "anomaly", "iot"],
    classification="internal",
    owner="Ecology and Environment Bureau",
    contact="env-data@example.gov.cn",
    license="Apache-2.0",
    requirements=["numpy==2.4.6"],
    artifacts={"stations": "stations.csv"},
    examples=[
        {
            "title": "one station reads far too high",
            "input": {
                "readings": [
                    {"station": "shinan-01", "pm25": 35},
                    {"station": "shibei-02", "pm25": 38},
                    {"station": "licang-01", "pm25": 33},
                    {"station": "laoshan-03", "pm25": 180},
                    {"station": "huangdao-02", "pm25": 36},
                ]
            },
        }
    ],
)
class AirAnomaly:
    """Returns the stations whose robust z-score exceeds `threshold`, highest first.

    The score is the distance from the median reading in units of the city's spread
    (1.4826 × the median absolute deviation, a sigma that outliers cannot inflate) or
    of the station's own known sensor noise (`stations.csv`, µg/m³), whichever is
    larger, so noisy old sensors are not flagged for ordinary jitter. At least three
    readings are needed.
    """

    def __init__(self, artifacts: dict[str, Path]) -> None:
        with artifacts["stations"].open(newline="", encoding="utf-8") as f:
            self.noise = {row["station"]: float(row["noise"]) for row in csv.DictReader(f)}

    def __call__(
        self,
        readings: Annotated[list[Reading], Field(min_length=3, max_length=10_000)],
        threshold: Annotated[float, Field(gt=0, le=20)] = 3.5,
    ) -> list[Finding]:
        values = np.asarray([r.pm25 for r in readings])
        median = float(np.median(values))
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
        out = []
        for r in readings:
            # A sensor is judged against the city's spread or its own known noise,
            # whichever is larger.
            spread = max(sigma, self.noise.get(r.station, 0.0), 1e-6)
            score = (r.pm25 - median) / spread
            if abs(score) > threshold:
                out.append(
                    Finding(r.station, r.pm25, round(score, 2), "high" if score > 0 else "low")
                )
        return sorted(out, key=lambda f: -abs(f.score))


@hookimpl
def yunnao_capabilities() -> list:
    return [AirAnomaly]
