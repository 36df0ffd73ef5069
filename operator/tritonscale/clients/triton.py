"""Asynchronous inference against Triton (or a router in front of it) over HTTP/REST or gRPC.

Built on tritonclient's asyncio clients (`tritonclient.http.aio`, `tritonclient.grpc.aio`);
nothing above this module imports tritonclient. Callers describe a request once
(`InferenceRequest`, e.g. `request_for_model("simulated")`), open a client with
`inference_client("grpc", "127.0.0.1:8001")` and await `infer(request)` as often as they
like: the client prepares each request's tensors once and re-uses them.

Every failure comes out as `InferenceFailed` with a short, stable `kind` for counting:
`connection` (refused, reset, closed early), `timeout`, `http-<status>` (e.g. `http-503`
when a router has no server), `grpc-<code>` (e.g. `grpc-unavailable`), or `client`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

import aiohttp
import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

Protocol = Literal["http", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "grpc")

IRIS_INPUT = "FEATURES"
SIMULATED_INPUT = "INPUT0"
REPLICA_OUTPUT = "REPLICA"

# A typical versicolor flower: sepal length/width, petal length/width in cm.
_IRIS_SAMPLE = (5.9, 3.0, 4.2, 1.5)


@dataclass(frozen=True, eq=False)
class TensorData:
    """One named input tensor."""

    name: str
    datatype: str
    """Triton datatype: FP32, INT32, BYTES, ..."""
    data: npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class InferenceRequest:
    """What to send: a model, its input tensors, and the outputs wanted (empty: all)."""

    model: str
    inputs: tuple[TensorData, ...]
    outputs: tuple[str, ...] = ()
    model_version: str = ""


def request_for_model(model: str, batch: int = 1) -> InferenceRequest:
    """A valid request for the sandbox's test models: `iris*` takes FEATURES FP32 [batch, 4];
    every other model (`simulated`, `instant`, ...) INPUT0 FP32 [batch, 1]."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if model.startswith("iris"):
        features = np.tile(np.array(_IRIS_SAMPLE, dtype=np.float32), (batch, 1))
        return InferenceRequest(model, (TensorData(IRIS_INPUT, "FP32", features),))
    values = np.arange(batch, dtype=np.float32).reshape(batch, 1)
    return InferenceRequest(model, (TensorData(SIMULATED_INPUT, "FP32", values),))


class InferenceFailed(Exception):
    """An inference that did not succeed; `kind` classifies it (see the module docstring)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class InferenceReply:
    """A successful inference's outputs (decoded on demand)."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def as_numpy(self, name: str) -> npt.NDArray[Any] | None:
        """Output `name` as an array, or None when the reply does not carry it."""
        array: npt.NDArray[Any] | None = self._result.as_numpy(name)
        return array

    @property
    def replica(self) -> str | None:
        """The REPLICA output of the sandbox's simulated models: which server answered."""
        array = self.as_numpy(REPLICA_OUTPUT)
        if array is None or array.size == 0:
            return None
        value = array.reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)


def _grpc_kind(status: str | None) -> str:
    code = (status or "").removeprefix("StatusCode.").lower()
    if code == "deadline_exceeded":
        return "timeout"
    return f"grpc-{code}" if code else "client"


def _http_kind(status: str | None) -> str:
    return f"http-{status}" if status and status.isdigit() else "client"


@dataclass
class _Prepared:
    request: InferenceRequest  # keeps the key's object alive, so its id() is not re-used
    inputs: list[Any]
    outputs: list[Any] | None


class InferenceClient(ABC):
    """An open connection (pool) to one Triton endpoint, `host:port`."""

    protocol: ClassVar[Protocol]

    def __init__(self, endpoint: str, *, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._prepared: dict[int, _Prepared] = {}

    def _prepare(self, request: InferenceRequest) -> _Prepared:
        prepared = self._prepared.get(id(request))
        if prepared is None:
            prepared = self._build(request)
            self._prepared[id(request)] = prepared
        return prepared

    @abstractmethod
    def _build(self, request: InferenceRequest) -> _Prepared: ...

    @abstractmethod
    async def infer(self, request: InferenceRequest) -> InferenceReply:
        """Run one inference; raises InferenceFailed."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class HttpInferenceClient(InferenceClient):
    """KServe v2 HTTP/REST with binary tensors, over a pool of up to `connections` keep-alive
    connections (tritonclient.http.aio, aiohttp)."""

    protocol = "http"

    def __init__(self, endpoint: str, *, timeout_s: float = 60.0, connections: int = 64) -> None:
        super().__init__(endpoint, timeout_s=timeout_s)
        self._client = httpaio.InferenceServerClient(endpoint, conn_limit=connections, conn_timeout=timeout_s)

    def _build(self, request: InferenceRequest) -> _Prepared:
        inputs = []
        for tensor in request.inputs:
            item = httpclient.InferInput(tensor.name, list(tensor.data.shape), tensor.datatype)
            item.set_data_from_numpy(tensor.data, binary_data=True)
            inputs.append(item)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in request.outputs]
        return _Prepared(request, inputs, outputs or None)

    async def infer(self, request: InferenceRequest) -> InferenceReply:
        prepared = self._prepare(request)
        try:
            result = await self._client.infer(
                request.model, prepared.inputs, model_version=request.model_version, outputs=prepared.outputs
            )
        except InferenceServerException as error:
            raise InferenceFailed(_http_kind(error.status()), str(error.message())) from error
        except TimeoutError as error:
            raise InferenceFailed(
                "timeout", f"no answer from {self.endpoint} in {self.timeout_s}s"
            ) from error
        except (aiohttp.ClientError, OSError) as error:
            raise InferenceFailed("connection", f"{type(error).__name__}: {error}") from error
        return InferenceReply(result)

    async def close(self) -> None:
        await self._client.close()


class GrpcInferenceClient(InferenceClient):
    """KServe v2 gRPC (tritonclient.grpc.aio); requests are multiplexed over one HTTP/2
    connection per channel, and `channels` channels are used in turn."""

    protocol = "grpc"

    def __init__(self, endpoint: str, *, timeout_s: float = 60.0, channels: int = 1) -> None:
        super().__init__(endpoint, timeout_s=timeout_s)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        # A distinct channel argument keeps grpc from sharing one subchannel between them.
        self._clients = [
            grpcaio.InferenceServerClient(endpoint, channel_args=[("tritonscale.channel", index)])
            for index in range(channels)
        ]
        self._next = 0

    def _build(self, request: InferenceRequest) -> _Prepared:
        inputs = []
        for tensor in request.inputs:
            item = grpcclient.InferInput(tensor.name, list(tensor.data.shape), tensor.datatype)
            item.set_data_from_numpy(tensor.data)
            inputs.append(item)
        outputs = [grpcclient.InferRequestedOutput(name) for name in request.outputs]
        return _Prepared(request, inputs, outputs or None)

    async def infer(self, request: InferenceRequest) -> InferenceReply:
        prepared = self._prepare(request)
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        try:
            result = await client.infer(
                request.model,
                prepared.inputs,
                model_version=request.model_version,
                outputs=prepared.outputs,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as error:
            raise InferenceFailed(_grpc_kind(error.status()), str(error.message())) from error
        except TimeoutError as error:
            raise InferenceFailed("timeout", f"no answer from {self.endpoint}") from error
        return InferenceReply(result)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


def inference_client(
    protocol: Protocol, endpoint: str, *, timeout_s: float = 60.0, connections: int = 64
) -> InferenceClient:
    """A client for `endpoint` (`host:port`; the HTTP or the gRPC port to match `protocol`).
    `connections`: the HTTP connection pool's size; for gRPC, one channel per 64 of them."""
    if protocol == "http":
        return HttpInferenceClient(endpoint, timeout_s=timeout_s, connections=connections)
    if protocol == "grpc":
        return GrpcInferenceClient(endpoint, timeout_s=timeout_s, channels=max(1, connections // 64))
    raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
