"""Train the crowd-level model on generated street scenes and export it to ONNX, next
to this module (``crowd_model.onnx``, shipped with the plugin)::

    python -m yunnao_example_vision.train

Needs the ``train`` extra (scikit-learn and skl2onnx); serving needs onnxruntime only.
Prints the accuracy on scenes generated apart from the training ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .crowd import MODEL, features
from .synthetic import scenes


def train(n: int = 2400, seed: int = 11) -> tuple[bytes, float]:
    """The ONNX model's bytes, and its accuracy on ``n // 4`` held-out scenes."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frames, levels = scenes(n, seed)
    x = np.concatenate([features(f) for f in frames])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    model.fit(x, levels)
    held_frames, held_levels = scenes(n // 4, seed + 1)
    held = np.concatenate([features(f) for f in held_frames])
    accuracy = float((model.predict(held) == held_levels).mean())
    onnx = to_onnx(model, x[:1], target_opset=17, options={"zipmap": False})
    return onnx.SerializeToString(), accuracy


def main(target: Path = MODEL) -> None:
    data, accuracy = train()
    target.write_bytes(data)
    print(f"saved {target.name} ({len(data)} bytes): held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
