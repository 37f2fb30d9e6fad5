"""Train the flow forecaster on synthetic counts and save it next to this module.

    python -m yunnao_example_traffic.train

Prints the mean absolute error on the last week, held out.
"""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error

from .synthetic import hourly_counts, training_set

MODEL = Path(__file__).with_name("flow_model.joblib")


def train(days: int = 8 * 7, seed: int = 7) -> tuple[Ridge, float]:
    counts, hour = hourly_counts(days, seed)
    x, y = training_set(counts, hour)
    split = len(y) - 7 * 24
    model = Ridge(alpha=1.0).fit(x[:split], y[:split])
    return model, float(mean_absolute_error(y[split:], model.predict(x[split:])))


def main() -> None:
    model, mae = train()
    joblib.dump(model, MODEL)
    print(f"saved {MODEL.name}: held-out MAE {mae:.1f} vehicles/hour")


if __name__ == "__main__":
    main()
