"""Triton Python-backend model with a simulated, configurable service time.

Runs inside Triton's Python 3.11 stub (Debian's Python: standard library + numpy only).
`tritonscale_sandbox.triton.model_repository` copies this file to `<repo>/<name>/1/model.py`
and renders `config.pbtxt.tmpl` next to it.

One `execute` call is one batch. It takes

    service_ms = (base_ms + per_item_ms * items) * slow_factor * noise

where `items` is the number of rows across all requests of the batch (Triton's dynamic batcher
hands the model a list of requests), `noise` is 1 unless the `jitter` parameter sets the sigma
of a mean-one log-normal factor. The time is spent in `time.sleep`, which releases the GIL, so
the model behaves like an accelerator: one instance serves one batch at a time and requests
queue (and batch) in front of it.

Parameters (config.pbtxt `parameters`, string values): base_ms, per_item_ms, jitter, seed,
load_s (seconds the model takes to load: the replica's cold start).

A shared accelerator: if environment `TRITONSCALE_ACCELERATOR_LOCK` names a file, every batch
holds an exclusive lock on it, so the servers of one replica (the model's and its variants',
render.variants) run one batch at a time between them, as on one GPU.

The slow factor, for making one replica slower than its peers that share the model name:
  - environment `TRITONSCALE_SLOW_FACTOR` (a float, default 1) of the tritonserver process;
  - if environment `TRITONSCALE_SIM_CONTROL` names a JSON file `{"slow_factor": 10}`, its
    value wins; the file is re-read whenever its modification time changes, so the factor can
    change while the server runs.

Inputs/outputs: INPUT0 FP32 [-1] -> OUTPUT0 FP32 [-1] (INPUT0 echoed), BATCH_SIZE INT32 [1]
(items in the batch this request was executed in), REPLICA BYTES [1] (environment
`TRITONSCALE_REPLICA`, default the host name: which replica answered).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import socket
import time
import zlib
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    """Sleeps for a configurable time per batch and echoes its input."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        self.base_ms = float(params.get("base_ms") or 0.0)
        self.per_item_ms = float(params.get("per_item_ms") or 0.0)
        self.jitter = float(params.get("jitter") or 0.0)
        seed = int(params.get("seed") or 0)
        load_s = float(params.get("load_s") or 0.0)
        if load_s > 0:
            time.sleep(load_s)  # a large model loading: the replica is not ready until it has
        lock = os.environ.get("TRITONSCALE_ACCELERATOR_LOCK") or ""
        self.accelerator = open(lock, "a") if lock else None  # noqa: SIM115 (held for the model's life)
        instance = args.get("model_instance_name", "")
        self.rng = random.Random(seed * 1_000_003 + zlib.crc32(instance.encode()))
        self.env_factor = float(os.environ.get("TRITONSCALE_SLOW_FACTOR") or 1.0)
        self.control_path = os.environ.get("TRITONSCALE_SIM_CONTROL") or ""
        self.control_mtime_ns = -1
        self.control_factor: float | None = None
        replica = os.environ.get("TRITONSCALE_REPLICA") or socket.gethostname()
        self.replica = np.array([replica.encode()], dtype=np.object_)

    def slow_factor(self) -> float:
        """The current slow factor: the control file's when it exists, else the environment's."""
        if not self.control_path:
            return self.env_factor
        try:
            mtime_ns = os.stat(self.control_path).st_mtime_ns
        except OSError:
            self.control_mtime_ns, self.control_factor = -1, None
            return self.env_factor
        if mtime_ns != self.control_mtime_ns:
            try:
                with open(self.control_path, encoding="utf-8") as handle:
                    self.control_factor = float(json.load(handle)["slow_factor"])
                self.control_mtime_ns = mtime_ns
            except (OSError, ValueError, KeyError, TypeError):
                pass  # half-written or malformed: keep the previous value, retry next batch
        return self.env_factor if self.control_factor is None else self.control_factor

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.accelerator is not None:
            fcntl.flock(self.accelerator, fcntl.LOCK_EX)
        try:
            return self._run(requests)
        finally:
            if self.accelerator is not None:
                fcntl.flock(self.accelerator, fcntl.LOCK_UN)

    def _run(self, requests: list[Any]) -> list[Any]:
        started = time.monotonic()
        inputs = [pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy() for request in requests]
        items = sum(int(x.shape[0]) for x in inputs)
        service_s = (self.base_ms + self.per_item_ms * items) / 1000.0 * self.slow_factor()
        if self.jitter > 0:
            service_s *= math.exp(self.rng.gauss(0.0, self.jitter) - self.jitter * self.jitter / 2.0)
        remaining = service_s - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        responses = []
        for x in inputs:
            rows = int(x.shape[0])
            batch = np.full((rows, 1), items, dtype=np.int32)
            replica = np.repeat(self.replica, rows).reshape(rows, 1)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", x.astype(np.float32, copy=False)),
                        pb_utils.Tensor("BATCH_SIZE", batch),
                        pb_utils.Tensor("REPLICA", replica),
                    ]
                )
            )
        return responses
