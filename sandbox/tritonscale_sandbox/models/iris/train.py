"""Train the `iris` demo classifier and write `weights.json` next to this file.

The committed weights.json is this script's output; run it again only to change the model:

    python sandbox/tritonscale_sandbox/models/iris/train.py

Data: a synthetic, iris-like data set: for each of the three species, samples drawn from an
independent normal distribution per feature whose mean and standard deviation are the per-species
summary statistics of Fisher's iris measurements (sepal length, sepal width, petal length,
petal width, in cm). Model: standardise -> dense 4x16 -> tanh -> dense 16x3 -> softmax, trained
with full-batch Adam on cross-entropy. Everything is seeded, so the output is reproducible.
Needs only numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

CLASSES = ("setosa", "versicolor", "virginica")
FEATURES = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")
MEANS = ((5.006, 3.428, 1.462, 0.246), (5.936, 2.770, 4.260, 1.326), (6.588, 2.974, 5.552, 2.026))
STDS = ((0.352, 0.379, 0.174, 0.105), (0.516, 0.314, 0.470, 0.198), (0.636, 0.322, 0.552, 0.275))
SEED = 7
PER_CLASS = 200
HIDDEN = 16
STEPS = 3000
LEARNING_RATE = 0.02
L2 = 1e-4


def synthetic_data(rng: np.random.Generator) -> tuple[Array, npt.NDArray[np.int64]]:
    """Samples and labels of the synthetic iris-like data set."""
    xs = [rng.normal(MEANS[c], STDS[c], size=(PER_CLASS, len(FEATURES))) for c in range(len(CLASSES))]
    x = np.clip(np.concatenate(xs), 0.05, None)
    y = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    return x, y


def softmax(z: Array) -> Array:
    """Row-wise softmax."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def train() -> dict[str, object]:
    """Train the classifier; return the weights document."""
    rng = np.random.default_rng(SEED)
    x, y = synthetic_data(rng)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    xs = (x - mean) / scale
    onehot = np.eye(len(CLASSES))[y]
    params = {
        "w1": rng.normal(0.0, 0.5, size=(len(FEATURES), HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0.0, 0.5, size=(HIDDEN, len(CLASSES))),
        "b2": np.zeros(len(CLASSES)),
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, STEPS + 1):
        h = np.tanh(xs @ params["w1"] + params["b1"])
        p = softmax(h @ params["w2"] + params["b2"])
        dz2 = (p - onehot) / len(xs)
        dh = dz2 @ params["w2"].T * (1.0 - h * h)
        grads = {
            "w2": h.T @ dz2 + L2 * params["w2"],
            "b2": dz2.sum(axis=0),
            "w1": xs.T @ dh + L2 * params["w1"],
            "b1": dh.sum(axis=0),
        }
        for k, g in grads.items():
            m, v = moments[k]
            m[:] = beta1 * m + (1 - beta1) * g
            v[:] = beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            params[k] = params[k] - LEARNING_RATE * m_hat / (np.sqrt(v_hat) + eps)
    h = np.tanh(xs @ params["w1"] + params["b1"])
    accuracy = float((softmax(h @ params["w2"] + params["b2"]).argmax(axis=1) == y).mean())
    return {
        "description": "4-16-3 tanh MLP trained by train.py on a synthetic iris-like data set",
        "classes": list(CLASSES),
        "features": list(FEATURES),
        "seed": SEED,
        "training_accuracy": round(accuracy, 4),
        "input_mean": [round(float(v), 6) for v in mean],
        "input_scale": [round(float(v), 6) for v in scale],
        **{k: np.round(v, 6).tolist() for k, v in params.items()},
    }


def main() -> None:
    """Write weights.json next to this script."""
    weights = train()
    out = Path(__file__).with_name("weights.json")
    lines = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in weights.items())
    out.write_text("{\n" + lines + "\n}\n", encoding="utf-8")
    print(f"wrote {out} (training accuracy {weights['training_accuracy']})")


if __name__ == "__main__":
    main()
