"""The author's SDK: schemas from type hints, validation, tensors, and bad specs caught early."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, Field

from yunnao.plugins import SpecError, Tensor, capability
from yunnao.plugins.errors import OutputInvalid, ValidationFailed
from yunnao.plugins.tensor import FP32


class Station(BaseModel):
    id: str
    pm25: float = Field(ge=0, description="µg/m³")


@dataclasses.dataclass
class Anomaly:
    station: str
    score: float


def test_schemas_come_from_type_hints() -> None:
    @capability(name="air-anomaly", title="空气质量异常检测", domain="livelihood")
    def detect(
        readings: list[Station], threshold: float = 3.0, mode: Literal["z", "iqr"] = "z"
    ) -> list[Anomaly]:
        """Flags stations whose **PM2.5** is far from the others."""
        return []

    schema = detect.input_schema
    assert schema["required"] == ["readings"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["threshold"] == {
        "default": 3.0,
        "title": "Threshold",
        "type": "number",
    }
    assert schema["properties"]["mode"]["enum"] == ["z", "iqr"]
    station = schema["$defs"]["Station"]
    assert station["properties"]["pm25"]["minimum"] == 0
    out = detect.output_schema
    assert out["type"] == "array"
    assert out["items"]["$ref"] == "#/$defs/Anomaly"
    assert detect.description == "Flags stations whose **PM2.5** is far from the others."
    assert detect.metadata()["domain"] == "livelihood"


def test_run_validates_input_and_output() -> None:
    @capability(name="scale", title="缩放")
    def scale(values: list[float], factor: float = 2.0) -> list[float]:
        return [v * factor for v in values]

    assert scale.run({"values": [1, 2.5]}) == [2.0, 5.0]
    with pytest.raises(ValidationFailed) as info:
        scale.run({"values": ["a"], "factr": 3})
    fields = {e.field for e in info.value.errors}
    assert fields == {"input.values[0]", "input.factr"}

    @capability(name="liar", title="错误输出")
    def liar(x: int) -> int:
        return "not a number"  # type: ignore[return-value]

    with pytest.raises(OutputInvalid):
        liar.run({"x": 1})


def test_a_class_receives_its_artifacts(tmp_path: Path) -> None:
    weights = Path(__file__).parents[1] / "data" / "weights.json"

    @capability(name="weighted", title="加权", artifacts={"weights": weights})
    class Weighted:
        def __init__(self, artifacts: dict[str, Path]) -> None:
            self.w = [float(x) for x in artifacts["weights"].read_text().split(",")]

        def __call__(self, values: list[float]) -> float:
            return sum(w * v for w, v in zip(self.w, values, strict=True))

    assert Weighted.is_class
    assert Weighted.input_schema["required"] == ["values"]
    assert Weighted.run({"values": [1, 1, 1]}) == pytest.approx(sum(Weighted.instantiate().w))


def test_tensors_are_numpy_arrays_with_checked_shape() -> None:
    @capability(name="row-sums", title="行求和")
    def row_sums(image: Tensor[FP32, -1, 3]) -> Tensor[FP32, -1]:
        assert isinstance(image, np.ndarray) and image.dtype == np.float32
        return image.sum(axis=1)

    assert row_sums.run({"image": [[1, 2, 3], [4, 5, 6]]}) == [6.0, 15.0]
    prop = row_sums.input_schema["properties"]["image"]
    assert prop["x-tensor"] == {"datatype": "FP32", "shape": [-1, 3]}
    assert prop["items"]["minItems"] == prop["items"]["maxItems"] == 3
    with pytest.raises(ValidationFailed, match="input does not match"):
        row_sums.run({"image": [[1, 2], [3, 4]]})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: capability(name="Bad Name", title="t")(lambda x: x), "name 'Bad Name' is invalid"),
        (lambda: capability(name="ok", title="t", version="1.0")(_typed), "not semver"),
        (lambda: capability(name="untyped", title="t")(_untyped), "parameter 'x' has no type hint"),
        (lambda: capability(name="noret", title="t")(_no_return), "return type is not annotated"),
        (lambda: capability(name="star", title="t")(_star), "parameter *args"),
        (lambda: capability(name="obj", title="t")(_opaque), "cannot derive"),
        (
            lambda: capability(name="ex", title="t", examples=[{"input": {"y": 1}}])(_typed),
            "example 0 is invalid",
        ),
        (
            lambda: capability(name="art", title="t", artifacts={"m": "missing.bin"})(
                _typed
            ).check_artifacts(),
            "artifact 'm' not found",
        ),
    ],
)
def test_bad_specs_fail_early_with_the_cause(make, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        make()


def _typed(x: int) -> int:
    return x


def _untyped(x):
    return x


def _no_return(x: int):
    return x


def _star(*args: int) -> int:
    return 0


class Opaque:
    pass


def _opaque(x: Opaque) -> int:
    return 0


def test_english_texts_travel_with_the_capability() -> None:
    from yunnao.registry.publishing import publish_request

    @capability(
        name="air-anomaly",
        title="空气质量异常检测",
        summary="找出PM2.5读数明显偏离其他站点的监测站",
        summary_en="Flags stations whose PM2.5 is far from the others",
        description_en="""
            Compares each station with the **median** of the others.
        """,
    )
    def detect(readings: list[Station]) -> list[Anomaly]:
        """与其他站点的**中位数**比较。"""
        return []

    request = publish_request(detect, "published")
    assert request.summary_en == "Flags stations whose PM2.5 is far from the others"
    assert request.description_en == "Compares each station with the **median** of the others."
    assert request.description == "与其他站点的**中位数**比较。"
