"""Invocation hooks: a plugin rewrites inputs before a capability runs and masks outputs
after, for callers outside the owning department."""

from __future__ import annotations

from typing import Any

import pytest
from yunnao_example_air import AirAnomaly

from yunnao.plugins import Invocation, hookimpl
from yunnao.plugins.errors import Forbidden, ValidationFailed
from yunnao.plugins.loader import Plugins

READINGS = {
    "readings": [
        {"station": "shinan-01", "pm25": 35},
        {"station": "shibei-02", "pm25": 38},
        {"station": "licang-01", "pm25": 33},
        {"station": "laoshan-03", "pm25": 180},
    ]
}


class MaskStations:
    """Station ids are internal to the environment department: others see the district."""

    @hookimpl
    def yunnao_after_invoke(self, invocation: Invocation, output: Any) -> Any:
        if invocation.capability != "air-anomaly" or (invocation.caller or "").startswith("env:"):
            return None
        return [{**f, "station": f["station"].split("-")[0] + "-**"} for f in output]


class StrictNights:
    """Refuses thresholds looser than 5 and tightens the default for one caller."""

    @hookimpl
    def yunnao_before_invoke(self, invocation: Invocation) -> dict[str, Any] | None:
        if invocation.inputs["threshold"] > 5:
            raise Forbidden("thresholds above 5 are not allowed by the city's policy")
        if invocation.caller == "inspector":
            return {**invocation.inputs, "threshold": "not a number"}
        return None


@pytest.fixture
def plugins() -> Plugins:
    loaded = Plugins()
    loaded.add(MaskStations(), name="mask", source="test")
    loaded.add(StrictNights(), name="policy", source="test")
    return loaded


def test_outputs_are_masked_for_other_departments(plugins: Plugins) -> None:
    own = plugins.invoke(AirAnomaly, READINGS, caller="env:zhang")
    other = plugins.invoke(AirAnomaly, READINGS, caller="traffic:li")
    assert [f["station"] for f in own] == ["laoshan-03"]
    assert [f["station"] for f in other] == ["laoshan-**"]
    assert other[0]["score"] == own[0]["score"]


def test_a_before_hook_can_refuse_and_its_replacement_is_validated(plugins: Plugins) -> None:
    with pytest.raises(Forbidden, match="city's policy"):
        plugins.invoke(AirAnomaly, {**READINGS, "threshold": 8}, caller="env:zhang")
    with pytest.raises(ValidationFailed) as err:
        plugins.invoke(AirAnomaly, READINGS, caller="inspector")
    assert [e.field for e in err.value.errors] == ["input.threshold"]


def test_without_hooks_invoke_is_run() -> None:
    assert Plugins().invoke(AirAnomaly, READINGS) == AirAnomaly.run(READINGS)
