"""Capabilities the page fixes of issue 18 are tried on: one with limits of every kind
(the try-it form's validation messages), and a tensor one whose result is a list of
records, which V2 cannot express (its V2 calls are refused; its page offers no
tritonclient snippet)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from yunnao.plugins import Tensor, capability, hookimpl
from yunnao.plugins.tensor import FP32


class Forecast(BaseModel):
    hours: list[int] = Field(description="hour of day of each forecast count")
    counts: list[float] = Field(description="vehicles per hour")


@capability(name="limits", title="有限制的预测", version="1.0.0", classification="public")
def limits(
    counts: Annotated[list[float], Field(min_length=24)],
    hour: Annotated[int, Field(ge=0, le=23)],
    plate: Annotated[str, Field(pattern=r"^[A-Z]{2}[0-9]{5}$", max_length=7)] = "AB12345",
    mode: Literal["car", "bus"] = "car",
) -> Forecast:
    return Forecast(hours=[(hour + 1) % 24], counts=[sum(counts) / len(counts)])


class Band(BaseModel):
    name: str
    share: float


class Bands(BaseModel):
    bands: list[Band] = Field(description="the share of values in each band")
    total: int


@capability(name="bands", title="数值分段", version="1.0.0", classification="public")
def bands(x: Tensor[FP32, -1]) -> Bands:
    values = [float(v) for v in x]
    low = sum(1 for v in values if v < 0.5)
    n = max(len(values), 1)
    return Bands(
        bands=[Band(name="low", share=low / n), Band(name="high", share=(len(values) - low) / n)],
        total=len(values),
    )


@hookimpl
def yunnao_capabilities():
    return [limits, bands]
