"""Synthetic hourly vehicle counts at an intersection: a daily cycle with morning and
evening rush hours, a quieter weekend, and noise. Deterministic for a given seed."""

from __future__ import annotations

import numpy as np

LAGS = 24  # the model sees the last 24 hourly counts


def hourly_counts(days: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(counts, hour of day) for ``days`` days, starting on a Monday at 00:00."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (hours // 24) % 7 < 5
    base = 120 + 80 * np.sin((hour_of_day - 6) / 24 * 2 * np.pi)
    rush = 260 * np.exp(-((hour_of_day - 8) ** 2) / 2) + 220 * np.exp(
        -((hour_of_day - 18) ** 2) / 3
    )
    counts = base + np.where(weekday, rush, 0.35 * rush) + rng.normal(0, 15, hours.size)
    return np.clip(counts, 0, None), hour_of_day


def features(window: np.ndarray, next_hour: int) -> np.ndarray:
    """Model features for predicting the count at ``next_hour`` from the 24 before it."""
    angle = next_hour / 24 * 2 * np.pi
    return np.concatenate([window[-LAGS:] / 100.0, [np.sin(angle), np.cos(angle)]])


def training_set(counts: np.ndarray, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = [features(counts[i - LAGS : i], int(hour_of_day[i])) for i in range(LAGS, counts.size)]
    return np.asarray(rows), counts[LAGS:]
