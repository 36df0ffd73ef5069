"""Triton Python-backend model `iris`: a small numpy MLP classifier with fixed weights.

Runs inside Triton's Python 3.11 stub (Debian's Python: standard library + numpy only).
`tritonscale_sandbox.triton.model_repository` copies this file and `weights.json` (written by
`train.py`) to `<repo>/<name>/1/`.

Input FEATURES FP32 [4]: sepal length, sepal width, petal length, petal width (cm).
Outputs PROBABILITIES FP32 [3] (setosa, versicolor, virginica; each row sums to 1) and
LABEL BYTES [1] (the most likely class name). Batched requests are evaluated in one matrix
product.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    """Evaluates standardise -> dense -> tanh -> dense -> softmax."""

    def initialize(self, args: dict[str, str]) -> None:
        weights = json.loads(Path(__file__).with_name("weights.json").read_text(encoding="utf-8"))
        self.mean = np.asarray(weights["input_mean"], dtype=np.float64)
        self.scale = np.asarray(weights["input_scale"], dtype=np.float64)
        self.w1 = np.asarray(weights["w1"], dtype=np.float64)
        self.b1 = np.asarray(weights["b1"], dtype=np.float64)
        self.w2 = np.asarray(weights["w2"], dtype=np.float64)
        self.b2 = np.asarray(weights["b2"], dtype=np.float64)
        self.labels = np.array([c.encode() for c in weights["classes"]], dtype=np.object_)

    def predict(self, x: Any) -> Any:
        """Class probabilities for rows of features."""
        h = np.tanh(((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.w1 + self.b1)
        z = h @ self.w2 + self.b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy() for request in requests]
        probabilities = self.predict(np.concatenate(inputs)) if inputs else np.zeros((0, 3))
        responses = []
        start = 0
        for x in inputs:
            rows = int(x.shape[0])
            p = probabilities[start : start + rows]
            start += rows
            labels = self.labels[p.argmax(axis=1)].reshape(rows, 1)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("PROBABILITIES", p.astype(np.float32)),
                        pb_utils.Tensor("LABEL", labels),
                    ]
                )
            )
        return responses
