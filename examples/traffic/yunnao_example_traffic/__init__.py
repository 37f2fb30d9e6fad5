"""Traffic department plugin: forecasts hourly vehicle counts at an intersection.

The model is a scikit-learn ridge regression on the last 24 hourly counts and the hour
of day, trained on synthetic counts by ``python -m yunnao_example_traffic.train``; the
fitted model ships with the plugin as an artifact (``flow_model.joblib``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import joblib
import numpy as np
from pydantic import BaseModel, Field

from yunnao.plugins import capability, hookimpl

from .synthetic import LAGS, features


class Forecast(BaseModel):
    hours: list[int] = Field(description="hour of day of each forecast count")
    counts: list[float] = Field(description="vehicles per hour")


@capability(
    name="flow-forecast",
    title="交通流量预测",
    version="1.0.0",
    summary="Forecasts hourly vehicle counts at an intersection for the next hours",
    kind="model",
    domain="governance",
    tags=["traffic", "forecast", "timeseries"],
    classification="public",
    owner="Traffic Police Detachment",
    contact="traffic-data@example.gov.cn",
    license="Apache-2.0",
    requirements=["scikit-learn==1.9.1", "joblib==1.6.0", "numpy==2.4.6"],
    artifacts={"model": "flow_model.joblib"},
    examples=[
        {
            "title": "a weekday morning",
            "input": {
                "counts": [
                    90,
                    70,
                    60,
                    55,
                    60,
                    90,
                    180,
                    330,
                    390,
                    300,
                    230,
                    220,
                    230,
                    220,
                    215,
                    230,
                    280,
                    370,
                    400,
                    320,
                    240,
                    190,
                    150,
                    110,
                ],
                "hour": 23,
                "horizon": 3,
            },
        }
    ],
)
class FlowForecast:
    """Forecasts the next ``horizon`` hourly counts from the last 24 observed ones.

    - `counts`: the last 24 (or more) hourly counts, oldest first.
    - `hour`: the hour of day (0-23) of the newest count.

    Each step feeds its forecast back as the newest count (recursive forecasting), so
    errors grow with the horizon; keep it within a day.
    """

    def __init__(self, artifacts: dict[str, Path]) -> None:
        self.model = joblib.load(artifacts["model"])

    def __call__(
        self,
        counts: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=LAGS)],
        hour: Annotated[int, Field(ge=0, le=23)],
        horizon: Annotated[int, Field(ge=1, le=24)] = 6,
    ) -> Forecast:
        window = np.asarray(counts[-LAGS:], dtype=float)
        hours, out = [], []
        for step in range(1, horizon + 1):
            next_hour = (hour + step) % 24
            value = max(0.0, float(self.model.predict(features(window, next_hour)[None, :])[0]))
            hours.append(next_hour)
            out.append(round(value, 1))
            window = np.append(window[1:], value)
        return Forecast(hours=hours, counts=out)


@hookimpl
def yunnao_capabilities() -> list:
    return [FlowForecast]
