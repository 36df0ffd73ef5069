"""Asynchronous inference against Triton (or a router in front of it) over HTTP/REST or gRPC.

Built on tritonclient's asyncio clients (`tritonclient.http.aio`, `tritonclient.grpc.aio`);
nothing above this module imports tritonclient. Callers open a client with
`inference_client("grpc", "127.0.0.1:8001")`, may ask it what a model takes
(`describe(model)`: the model's metadata and configuration as Triton reports them; see
`tritonscale.bench.inputs` for building valid inputs from them), describe a request once
(`InferenceRequest`) and await `infer(request)` as often as they like: the client prepares each
request's tensors once and re-uses them.

Every failure comes out as `InferenceFailed` with a short, stable `kind` for counting:
`connection` (refused, reset, closed early), `timeout`, `http-<status>` (e.g. `http-503`
when a router has no server), `grpc-<code>` (e.g. `grpc-unavailable`), or `client`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

Protocol = Literal["http", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "grpc")

REPLICA_OUTPUT = "REPLICA"

DATATYPES = (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "BF16", "FP32", "FP64", "BYTES",
)  # fmt: skip
"""The tensor datatypes of the KServe v2 protocol, as Triton names them in model metadata."""

_Result = TypeVar("_Result")


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype tritonclient sends a `datatype` tensor from (BYTES: object, holding
    bytes; BF16: whatever this tritonclient version wants, ml_dtypes.bfloat16 in recent ones)."""
    if datatype not in DATATYPES:
        raise ValueError(f"unknown datatype {datatype!r}; Triton's are {', '.join(DATATYPES)}")
    dtype: np.dtype[Any] = np.dtype(triton_to_np_dtype(datatype))
    return dtype


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


@dataclass(frozen=True)
class ModelDescription:
    """What a server says about a model, as JSON documents: `metadata` (KServe v2 model
    metadata: name, versions, inputs and outputs with datatype and shape) and `config` (Triton's
    model configuration: max_batch_size, input with optional, ...). Over gRPC, 64-bit integers
    such as dims come as strings and fields at their default value are left out."""

    metadata: dict[str, Any]
    config: dict[str, Any]


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
    async def describe(self, model: str, version: str = "") -> ModelDescription:
        """The model's metadata and configuration; raises InferenceFailed."""

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

    async def _call(self, call: Awaitable[_Result]) -> _Result:
        try:
            return await call
        except InferenceServerException as error:
            raise InferenceFailed(_http_kind(error.status()), str(error.message())) from error
        except TimeoutError as error:
            raise InferenceFailed(
                "timeout", f"no answer from {self.endpoint} in {self.timeout_s}s"
            ) from error
        except (aiohttp.ClientError, OSError) as error:
            raise InferenceFailed("connection", f"{type(error).__name__}: {error}") from error

    async def infer(self, request: InferenceRequest) -> InferenceReply:
        prepared = self._prepare(request)
        result = await self._call(
            self._client.infer(
                request.model, prepared.inputs, model_version=request.model_version, outputs=prepared.outputs
            )
        )
        return InferenceReply(result)

    async def describe(self, model: str, version: str = "") -> ModelDescription:
        metadata = await self._call(self._client.get_model_metadata(model, version))
        config = await self._call(self._client.get_model_config(model, version))
        return ModelDescription(metadata, config)

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

    def _next_client(self) -> Any:
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        return client

    async def _call(self, call: Awaitable[_Result]) -> _Result:
        try:
            return await call
        except InferenceServerException as error:
            raise InferenceFailed(_grpc_kind(error.status()), str(error.message())) from error
        except TimeoutError as error:
            raise InferenceFailed("timeout", f"no answer from {self.endpoint}") from error

    async def infer(self, request: InferenceRequest) -> InferenceReply:
        prepared = self._prepare(request)
        result = await self._call(
            self._next_client().infer(
                request.model,
                prepared.inputs,
                model_version=request.model_version,
                outputs=prepared.outputs,
                client_timeout=self.timeout_s,
            )
        )
        return InferenceReply(result)

    async def describe(self, model: str, version: str = "") -> ModelDescription:
        client = self._next_client()
        metadata = await self._call(
            client.get_model_metadata(model, version, as_json=True, client_timeout=self.timeout_s)
        )
        config = await self._call(
            client.get_model_config(model, version, as_json=True, client_timeout=self.timeout_s)
        )
        return ModelDescription(metadata, config.get("config", {}))

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
