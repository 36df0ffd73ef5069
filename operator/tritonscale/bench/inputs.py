"""What `tritonscale bench` sends: valid requests for any model, built from the model's metadata
and configuration as the server reports them (`InferenceClient.describe`), the way perf_analyzer
does.

- Names, datatypes and shapes come from the metadata; `max_batch_size` and which inputs are
  `optional` from the configuration. With max_batch_size > 0 every tensor gets a leading batch
  dimension of `--batch` rows; with 0 the model does not batch and `--batch` must be 1.
- Dynamic dimensions (-1) take their size from `--shape NAME:D1,D2,...` (the shape without the
  batch dimension). A required input with a dynamic dimension and no `--shape` is an error; an
  optional one is left out.
- Data is random by default: generated once from the seed and sent with every request, so
  sending costs nothing per request. Integers are drawn from [0, 100) (valid as ids or indices
  for most models), floats from [0, 1), BYTES are short random strings, BOOL fair coin flips.
- Or data comes from a JSON file (`--input-data`), in the spirit of perf_analyzer's:

      {"data": [{"TOKENS": [1, 2, 3], "TEXT": ["hello"]},
                {"TOKENS": {"content": [4, 5, 6, 7], "shape": [4]}, "TEXT": ["bye"]}]}

  Each entry is one request's data for one batch row (with `--batch` B the row is repeated B
  times); requests cycle through the entries. Values are listed in row-major order (nested
  lists are flattened); BYTES values are strings, BOOL values true/false. A shape comes from the
  entry's "shape", else `--shape`, else the model's fixed dimensions; a single dynamic
  dimension is also inferred from the number of values. Optional inputs may be left out.

Errors are `InputError`s that name the input and the option to fix.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonscale.clients.triton import DATATYPES, InferenceRequest, TensorData, numpy_dtype

RANDOM_INT_RANGE = (0, 100)
RANDOM_BYTES_LENGTH = (1, 16)
_BYTES_ALPHABET = np.frombuffer((string.ascii_letters + string.digits).encode(), dtype=np.uint8)

Dims = tuple[int, ...]


class InputError(ValueError):
    """Inputs that cannot be built for a model; the message names the input and the option
    (`--shape`, `--batch`, `--input-data`) or the file entry to fix."""


def format_dims(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


@dataclass(frozen=True)
class InputSpec:
    """One model input: `dims` without the batch dimension, -1 where dynamic."""

    name: str
    datatype: str
    dims: Dims
    optional: bool = False

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.dims)

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {format_dims(self.dims)}" + (
            " (optional)" if self.optional else ""
        )

    def fit(self, dims: Sequence[int], where: str) -> Dims:
        """`dims` checked against this input's: same rank, fixed sizes equal, sizes >= 1."""
        fitted = tuple(dims)
        if len(fitted) != len(self.dims) or any(
            given < 1 or (wanted >= 0 and given != wanted)
            for given, wanted in zip(fitted, self.dims, strict=True)
        ):
            raise InputError(
                f"{where}shape {format_dims(fitted)} does not fit input {self.name}, whose shape "
                f"is {format_dims(self.dims)} (-1: any size >= 1; without the batch dimension)"
            )
        return fitted


@dataclass(frozen=True)
class ModelSpec:
    """What a model takes, from its metadata and configuration (see `model_spec`)."""

    name: str
    max_batch_size: int
    inputs: tuple[InputSpec, ...]

    def input(self, name: str, where: str = "") -> InputSpec:
        """The input called `name`; an InputError (prefixed by `where`) listing them all if none is."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise InputError(
            f"{where}model {self.name} has no input {name!r}; its inputs are {self.describe_inputs()}"
        )

    def check_shapes(self, shapes: Mapping[str, Dims]) -> None:
        """--shape options name inputs and fit their shapes."""
        for name, dims in shapes.items():
            self.input(name, f"--shape {name}: ").fit(dims, f"--shape {name}: ")

    def describe_inputs(self) -> str:
        return ", ".join(spec.describe() for spec in self.inputs) or "(none)"

    def check_batch(self, batch: int) -> None:
        if self.max_batch_size > 0 and batch > self.max_batch_size:
            raise InputError(
                f"--batch {batch} is more than the max_batch_size {self.max_batch_size} of model {self.name}"
            )
        if self.max_batch_size <= 0 and batch != 1:
            raise InputError(
                f"model {self.name} does not batch (max_batch_size 0): --batch must be 1, not {batch}"
            )

    def sent_shape(self, dims: Dims, batch: int) -> Dims:
        """A tensor's shape as sent: with the batch dimension in front when the model batches."""
        return (batch, *dims) if self.max_batch_size > 0 else dims

    def batched(self, sample: npt.NDArray[Any], batch: int) -> npt.NDArray[Any]:
        """One row's tensor as sent: `batch` copies of it when the model batches."""
        if self.max_batch_size <= 0:
            return sample
        return np.repeat(sample[np.newaxis, ...], batch, axis=0)


def _dims(value: Any, what: str) -> Dims:
    # Over gRPC, 64-bit integers (dims, shapes) arrive as JSON strings.
    try:
        return tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise InputError(
            f"{what}: the server reported a shape {value!r} that is not a list of integers"
        ) from None


def model_spec(metadata: Mapping[str, Any], config: Mapping[str, Any]) -> ModelSpec:
    """A model's inputs from Triton's JSON model metadata and configuration (HTTP or gRPC form).

    Refuses models whose requests need more than tensors: sequence batching (sequence ids and
    control inputs), decoupled transactions (streamed responses) and shape tensors."""
    name = str(metadata.get("name") or config.get("name") or "?")
    if "sequence_batching" in config:
        raise InputError(
            f"model {name} uses sequence batching: its requests need sequence ids, which "
            "tritonscale bench does not send"
        )
    if (config.get("model_transaction_policy") or {}).get("decoupled"):
        raise InputError(
            f"model {name} is decoupled (streams its responses), which tritonscale bench does not read"
        )
    max_batch_size = int(config.get("max_batch_size") or 0)
    configured = {str(item.get("name")): item for item in config.get("input") or ()}
    inputs = []
    for item in metadata.get("inputs") or ():
        input_name = str(item.get("name"))
        datatype = str(item.get("datatype"))
        if datatype not in DATATYPES:
            raise InputError(f"model {name}: input {input_name} has an unknown datatype {datatype!r}")
        dims = _dims(item.get("shape") or (), f"model {name}: input {input_name}")
        if max_batch_size > 0:
            dims = dims[1:]  # the metadata includes the batch dimension (-1)
        extra = configured.get(input_name) or {}
        if extra.get("is_shape_tensor"):
            raise InputError(
                f"model {name}: input {input_name} is a shape tensor, which tritonscale bench cannot fill"
            )
        inputs.append(InputSpec(input_name, datatype, dims, optional=bool(extra.get("optional"))))
    return ModelSpec(name, max_batch_size, tuple(inputs))


# --------------------------------------------------------------------------------------------
# --shape


def parse_shapes(options: Iterable[str]) -> dict[str, Dims]:
    """`--shape NAME:D1,D2,...` options (input names may contain ':'; the last one separates)."""
    shapes: dict[str, Dims] = {}
    for option in options:
        name, colon, text = option.rpartition(":")
        if not colon or not name:
            raise InputError(f"--shape {option!r}: expected NAME:D1,D2,... e.g. INPUT0:1,128")
        try:
            dims = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise InputError(
                f"--shape {option!r}: the dimensions must be integers separated by commas"
            ) from None
        if any(d < 1 for d in dims):
            raise InputError(f"--shape {option!r}: every dimension must be >= 1")
        if name in shapes:
            raise InputError(f"--shape: input {name} is given twice")
        shapes[name] = dims
    return shapes


def resolve_shapes(spec: ModelSpec, shapes: Mapping[str, Dims]) -> dict[str, Dims | None]:
    """Every input's shape without the batch dimension: `shapes` (from --shape), checked, or the
    model's fixed one. None for an optional input whose shape stays unknown (left out)."""
    spec.check_shapes(shapes)
    resolved: dict[str, Dims | None] = {}
    for item in spec.inputs:
        if item.name in shapes:
            resolved[item.name] = shapes[item.name]
        elif not item.is_dynamic:
            resolved[item.name] = item.dims
        elif item.optional:
            resolved[item.name] = None
        else:
            example = ",".join("1" if d < 0 else str(d) for d in item.dims)
            raise InputError(
                f"input {item.name} ({item.datatype}) of model {spec.name} has shape "
                f"{format_dims(item.dims)} with a dynamic dimension (-1): give its size with "
                f"--shape {item.name}:{example} (without the batch dimension)"
            )
    return resolved


# --------------------------------------------------------------------------------------------
# Random data


def random_array(datatype: str, shape: Dims, rng: np.random.Generator) -> npt.NDArray[Any]:
    """Random values of `datatype` (see the module docstring for the ranges)."""
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        low, high = RANDOM_BYTES_LENGTH
        ends = np.cumsum(rng.integers(low, high + 1, size=math.prod(shape)))
        text = rng.choice(_BYTES_ALPHABET, size=int(ends[-1]) if ends.size else 0).tobytes()
        array = np.empty(ends.size, dtype=np.object_)
        array[:] = [
            text[end - length : end] for end, length in zip(ends, np.diff(ends, prepend=0), strict=True)
        ]
        return array.reshape(shape)
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(*RANDOM_INT_RANGE, size=shape, dtype=dtype)
    return rng.random(shape).astype(dtype)


def random_request(
    spec: ModelSpec, batch: int = 1, shapes: Mapping[str, Dims] | None = None, seed: int = 0
) -> InferenceRequest:
    """One request with random data for every input whose shape is known (see `resolve_shapes`)."""
    spec.check_batch(batch)
    resolved = resolve_shapes(spec, shapes or {})
    rng = np.random.default_rng(seed)
    tensors = []
    for item in spec.inputs:
        dims = resolved[item.name]
        if dims is not None:
            data = random_array(item.datatype, spec.sent_shape(dims, batch), rng)
            tensors.append(TensorData(item.name, item.datatype, data))
    return InferenceRequest(spec.name, tuple(tensors))


# --------------------------------------------------------------------------------------------
# --input-data


@dataclass(frozen=True)
class InputData:
    """The entries of an --input-data file, checked for form (not yet against a model)."""

    source: str
    entries: tuple[dict[str, Any], ...]


def read_input_data(path: Path) -> InputData:
    """Parse an --input-data JSON file: {"data": [{NAME: values, ...}, ...]}."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error}") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text: {error}") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON: {error}") from error
    return input_data(document, str(path))


def input_data(document: Any, source: str) -> InputData:
    """Check the form of an already parsed --input-data document."""
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(
            f'{source}: expected {{"data": [{{"INPUT_NAME": [values...], ...}}, ...]}} '
            "with at least one entry"
        )
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(
                f"{source}: data[{index}] must be an object mapping input names to values, "
                f"not {type(entry).__name__} (sequences of requests are not supported)"
            )
    return InputData(source, tuple(entries))


def _flatten(values: Any) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def _content_and_shape(value: Any, where: str) -> tuple[list[Any], Any]:
    if isinstance(value, list):
        return list(_flatten(value)), None
    if isinstance(value, dict) and "content" in value and set(value) <= {"content", "shape"}:
        content = value["content"]
        if isinstance(content, list):
            return list(_flatten(content)), value.get("shape")
    raise InputError(f'{where}: expected a list of values or {{"content": [values...], "shape": [dims...]}}')


def _sample_dims(item: InputSpec, given: Any, option_dims: Dims | None, count: int, where: str) -> Dims:
    if given is not None:
        if not isinstance(given, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in given
        ):
            raise InputError(f"{where}: shape must be a list of integers, not {given!r}")
        return item.fit(given, f"{where}: ")
    if option_dims is not None:
        return option_dims
    if not item.is_dynamic:
        return item.dims
    dynamic = [index for index, d in enumerate(item.dims) if d < 0]
    fixed = math.prod(d for d in item.dims if d >= 0)
    if len(dynamic) == 1 and fixed > 0 and count % fixed == 0 and count > 0:
        return tuple(count // fixed if d < 0 else d for d in item.dims)
    raise InputError(
        f"{where}: {count} values do not give the size of the dynamic dimensions of shape "
        f'{format_dims(item.dims)}: add "shape" to the entry or --shape {item.name}:...'
    )


def _array_from_values(item: InputSpec, values: list[Any], dims: Dims, where: str) -> npt.NDArray[Any]:
    wanted = math.prod(dims)
    if len(values) != wanted:
        raise InputError(f"{where}: {len(values)} values, but shape {format_dims(dims)} holds {wanted}")
    datatype = item.datatype
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise InputError(f"{where}: BYTES values must be strings")
        array = np.empty(len(values), dtype=np.object_)
        array[:] = [v.encode() for v in values]
        return array.reshape(dims)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise InputError(f"{where}: BOOL values must be true or false")
        return np.array(values, dtype=np.bool_).reshape(dims)
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise InputError(f"{where}: {datatype} values must be integers")
        info = np.iinfo(dtype)
        outside = next((v for v in values if not info.min <= v <= info.max), None)
        if outside is not None:
            raise InputError(f"{where}: {outside} is outside {datatype}'s range [{info.min}, {info.max}]")
        return np.array(values, dtype=dtype).reshape(dims)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InputError(f"{where}: {datatype} values must be numbers")
    wide = np.array(values, dtype=np.float64)
    with np.errstate(over="ignore"):  # overflow is checked just below, with a better message
        array = wide.astype(dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(array.astype(np.float64))
    if overflow.any():
        raise InputError(f"{where}: {wide[overflow][0]:g} is outside {datatype}'s range")
    return array.reshape(dims)


def input_data_requests(
    spec: ModelSpec, data: InputData, batch: int = 1, shapes: Mapping[str, Dims] | None = None
) -> list[InferenceRequest]:
    """One request per entry of `data`, checked against the model."""
    spec.check_batch(batch)
    shapes = shapes or {}
    spec.check_shapes(shapes)
    requests = []
    for index, entry in enumerate(data.entries):
        at = f"{data.source}: data[{index}]"
        for name in entry:
            spec.input(name, f"{at}: ")
        tensors = []
        for item in spec.inputs:
            where = f"{at}: input {item.name} ({item.datatype} {format_dims(item.dims)})"
            if item.name not in entry:
                if item.optional:
                    continue
                raise InputError(f"{at}: input {item.name} is missing (it is not optional)")
            values, given = _content_and_shape(entry[item.name], where)
            dims = _sample_dims(item, given, shapes.get(item.name), len(values), where)
            sample = _array_from_values(item, values, dims, where)
            tensors.append(TensorData(item.name, item.datatype, spec.batched(sample, batch)))
        requests.append(InferenceRequest(spec.name, tuple(tensors)))
    return requests


# --------------------------------------------------------------------------------------------


def build_requests(
    spec: ModelSpec,
    *,
    batch: int = 1,
    shapes: Mapping[str, Dims] | None = None,
    data: InputData | None = None,
    seed: int = 0,
) -> list[InferenceRequest]:
    """What a run cycles through: one request of random data, or one per `data` entry."""
    if data is None:
        return [random_request(spec, batch, shapes, seed)]
    return input_data_requests(spec, data, batch, shapes)


def describe_requests(requests: Sequence[InferenceRequest]) -> list[dict[str, Any]]:
    """Per input sent: its datatype and the distinct shapes sent (batch dimension included)."""
    inputs: dict[str, dict[str, Any]] = {}
    for request in requests:
        for tensor in request.inputs:
            item = inputs.setdefault(
                tensor.name, {"name": tensor.name, "datatype": tensor.datatype, "shapes": []}
            )
            shape = list(tensor.data.shape)
            if shape not in item["shapes"]:
                item["shapes"].append(shape)
    return list(inputs.values())
