"""Tensor-typed parameters, for capabilities called over the V2 inference protocol.

    from yunnao.plugins import Tensor
    from yunnao.plugins.tensor import FP32

    @capability(name="edge-density", title="图像边缘密度")
    def edge_density(image: Tensor[FP32, -1, -1]) -> Tensor[FP32, 1]:
        ...

Over JSON a tensor is a nested list of numbers of the declared rank; over the V2
protocol it is a typed tensor. Either way the function receives a numpy array of the
declared datatype (numpy is needed only by capabilities that use tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# V2 protocol datatypes -> numpy dtype names (BYTES is not a numeric tensor: left out).
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}

# The datatype names as constants, so annotations need no string literals (which
# linters take for forward references under ``from __future__ import annotations``).
BOOL, UINT8, UINT16, UINT32, UINT64 = "BOOL", "UINT8", "UINT16", "UINT32", "UINT64"
INT8, INT16, INT32, INT64 = "INT8", "INT16", "INT32", "INT64"
FP16, FP32, FP64 = "FP16", "FP32", "FP64"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's datatype and shape; ``-1`` marks a variable dimension."""

    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise TypeError(
                f"unknown tensor datatype {self.datatype!r}: use one of {', '.join(DATATYPES)}"
            )
        if not self.shape or any(not isinstance(d, int) or d < -1 or d == 0 for d in self.shape):
            raise TypeError(f"tensor shape must be positive sizes or -1, got {self.shape!r}")

    def validate(self, value: Any) -> Any:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is in every Yunnao install
            raise TypeError("tensor parameters need numpy installed") from None
        try:
            array = np.asarray(value, dtype=DATATYPES[self.datatype])
        except (TypeError, ValueError):
            raise ValueError(
                f"expected a {self.datatype} tensor of shape {list(self.shape)}: "
                "a nested list of numbers"
            ) from None
        if array.ndim != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, array.shape, strict=True)
        ):
            raise ValueError(f"tensor shape {list(array.shape)} does not match {list(self.shape)}")
        return array

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda a: a.tolist() if hasattr(a, "tolist") else a
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number: dict[str, Any] = (
            {"type": "boolean"}
            if self.datatype == "BOOL"
            else {"type": "integer"}
            if "INT" in self.datatype
            else {"type": "number"}
        )
        out: dict[str, Any] = number
        for size in reversed(self.shape):
            out = {"type": "array", "items": out}
            if size != -1:
                out["minItems"] = out["maxItems"] = size
        out["x-tensor"] = {"datatype": self.datatype, "shape": list(self.shape)}
        return out


class _TensorType:
    """``Tensor[FP32, -1, 3]`` is ``Annotated[Any, TensorSpec("FP32", (-1, 3))]``."""

    def __getitem__(self, params: Any) -> Any:
        if not isinstance(params, tuple) or len(params) < 2:
            raise TypeError("write Tensor[DATATYPE, dim, ...], e.g. Tensor[FP32, -1, 3]")
        datatype, *shape = params
        return Annotated[Any, TensorSpec(datatype, tuple(shape))]


Tensor = _TensorType()
