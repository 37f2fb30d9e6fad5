"""A BentoML service whose APIs cover the kinds service_capabilities must map or leave out
(read in process only, never served)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import DataframeSchema, DType, Shape
from pydantic import BaseModel


class Point(BaseModel):
    x: float
    y: float


@bentoml.service
class Kinds:
    @bentoml.api
    def scale(
        self, points: Annotated[np.ndarray, Shape((-1, 3)), DType("float32")], factor: int = 2
    ) -> Annotated[np.ndarray, Shape((-1, 3)), DType("int64")]:
        """Multiply 3-vectors."""
        return (points * factor).astype("int64")

    @bentoml.api
    def table(
        self, rows: Annotated[pd.DataFrame, DataframeSchema(orient="records")]
    ) -> list[Point]:
        """Rows as points."""
        return [Point(**r) for r in rows.to_dict("records")]

    @bentoml.api
    def moved(self, point: Point, /) -> Point:
        """A whole-body model input (positional-only)."""
        return Point(x=point.x + 1, y=point.y)

    @bentoml.api
    def echo_text(self, text: str, /) -> str:
        return text

    @bentoml.api
    def upload(self, file: Path) -> int:
        return file.stat().st_size

    @bentoml.api
    def tokens(self, text: str) -> Generator[str, None, None]:
        yield from text.split()

    @bentoml.task
    def batch_job(self, n: int) -> int:
        return n
