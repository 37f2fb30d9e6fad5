"""The forecaster learns the daily cycle: it beats "same hour yesterday" on held-out days."""

from __future__ import annotations

import numpy as np
from yunnao_example_traffic import FlowForecast
from yunnao_example_traffic.synthetic import hourly_counts
from yunnao_example_traffic.train import train


def test_training_reaches_a_useful_error() -> None:
    _, mae = train()
    counts, _ = hourly_counts(8 * 7)
    naive = np.mean(np.abs(counts[-168:] - counts[-192:-24]))  # same hour, day before
    assert mae < 0.8 * naive


def test_shipped_model_forecasts_the_evening_rush() -> None:
    counts, hour = hourly_counts(9 * 7, seed=11)  # unseen noise
    start = 24 * 60 + 12  # a Friday: counts up to 11:00, forecast 12:00 to 19:00
    out = FlowForecast.run(
        {"counts": counts[start - 24 : start].tolist(), "hour": int(hour[start - 1]), "horizon": 8}
    )
    assert out["hours"] == [12, 13, 14, 15, 16, 17, 18, 19]
    truth = counts[start : start + 8]
    assert np.mean(np.abs(np.asarray(out["counts"]) - truth)) < 60
    assert max(out["counts"]) == max(out["counts"][5:7])  # the peak is at 17-18h


def test_the_documented_example_runs() -> None:
    example = FlowForecast.examples[0]
    out = FlowForecast.run(example["input"])
    assert len(out["counts"]) == example["input"]["horizon"]
    assert all(c >= 0 for c in out["counts"])
