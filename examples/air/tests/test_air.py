"""The detector finds a broken sensor among a city's stations and tolerates noisy ones."""

from __future__ import annotations

import csv
from importlib.resources import files

import numpy as np
from yunnao_example_air import AirAnomaly

with (files("yunnao_example_air") / "stations.csv").open(encoding="utf-8") as f:
    NOISE = {row["station"]: float(row["noise"]) for row in csv.DictReader(f)}


def city(seed: int, broken: dict[str, float] | None = None) -> list[dict]:
    """One hour of readings: 40 µg/m³ everywhere, plus each sensor's own noise."""
    rng = np.random.default_rng(seed)
    readings = [
        {"station": s, "pm25": float(max(0, rng.normal(40, noise)))} for s, noise in NOISE.items()
    ]
    for r in readings:
        if broken and r["station"] in broken:
            r["pm25"] = broken[r["station"]]
    return readings


def test_a_stuck_sensor_is_found_and_nothing_else() -> None:
    for seed in range(20):
        found = AirAnomaly.run({"readings": city(seed, {"licang-02": 160.0, "shinan-03": 0.0})})
        assert {f["station"] for f in found} == {"licang-02", "shinan-03"}
        assert {f["station"]: f["kind"] for f in found} == {"licang-02": "high", "shinan-03": "low"}
        assert found[0]["station"] == "licang-02"  # the larger deviation first


def test_a_clean_city_has_no_findings() -> None:
    flagged = sum(len(AirAnomaly.run({"readings": city(seed)})) for seed in range(50))
    assert flagged <= 3  # 1,600 clean readings at 3.5 sigma: about 0.7 expected


def test_too_few_readings_are_refused_with_the_field() -> None:
    from yunnao.plugins.errors import ValidationFailed

    try:
        AirAnomaly.run({"readings": [{"station": "a", "pm25": 1}]})
    except ValidationFailed as exc:
        assert [e.field for e in exc.errors] == ["input.readings"]
    else:
        raise AssertionError("accepted one reading")


def test_known_noisy_sensors_get_more_tolerance() -> None:
    # shinan-04 is a noisy old sensor (noise 12), shibei-01 a precise one (noise 2):
    # the same 25 µg/m³ excess is jitter for one and a fault for the other.
    assert NOISE["shinan-04"] == 12 and NOISE["shibei-01"] == 2
    for seed in range(10):
        found = AirAnomaly.run({"readings": city(seed, {"shinan-04": 65.0, "shibei-01": 65.0})})
        assert "shibei-01" in {f["station"] for f in found}
        assert "shinan-04" not in {f["station"] for f in found}
