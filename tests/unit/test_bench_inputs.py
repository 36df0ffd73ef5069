"""Building `tritonscale bench` requests for any model from Triton's JSON model metadata and
configuration (plain dicts shaped like the server's answers; no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner

from tritonscale.bench.inputs import (
    RANDOM_BYTES_LENGTH,
    RANDOM_INT_RANGE,
    InputData,
    InputError,
    InputSpec,
    ModelSpec,
    build_requests,
    describe_requests,
    input_data,
    input_data_requests,
    model_spec,
    parse_shapes,
    random_request,
    read_input_data,
)
from tritonscale.cli import main
from tritonscale.clients.triton import DATATYPES, InferenceRequest, numpy_dtype


def http_metadata(name: str, max_batch_size: int, *inputs: tuple[str, str, list[int]]) -> dict[str, Any]:
    """Model metadata as Triton's HTTP endpoint gives it (batching models: -1 in front)."""
    batch = [-1] if max_batch_size > 0 else []
    return {
        "name": name,
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": n, "datatype": t, "shape": batch + dims} for n, t, dims in inputs],
        "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [*batch, 1]}],
    }


def http_config(
    name: str, max_batch_size: int, *inputs: tuple[str, str, list[int]], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": n,
                "data_type": "TYPE_STRING" if t == "BYTES" else f"TYPE_{t}",
                "dims": dims,
                "is_shape_tensor": False,
                "optional": n in optional,
            }
            for n, t, dims in inputs
        ],
        "dynamic_batching": {},
    }


def spec_of(
    max_batch_size: int, *inputs: tuple[str, str, list[int]], optional: tuple[str, ...] = ()
) -> ModelSpec:
    return model_spec(
        http_metadata("m", max_batch_size, *inputs),
        http_config("m", max_batch_size, *inputs, optional=optional),
    )


def tensors(request: InferenceRequest) -> dict[str, np.ndarray]:
    return {tensor.name: tensor.data for tensor in request.inputs}


# --------------------------------------------------------------------------------------------
# Metadata and configuration


def test_http_and_grpc_answers_give_the_same_spec() -> None:
    inputs = (("TOKENS", "INT64", [-1]), ("TEXT", "BYTES", [1]), ("SCALE", "FP16", [2]))
    from_http = model_spec(http_metadata("m", 8, *inputs), http_config("m", 8, *inputs, optional=("SCALE",)))
    # gRPC's JSON: 64-bit integers as strings, fields at their default value left out.
    grpc_metadata = {
        "name": "m",
        "versions": ["1"],
        "platform": "python",
        "inputs": [
            {"name": "TOKENS", "datatype": "INT64", "shape": ["-1", "-1"]},
            {"name": "TEXT", "datatype": "BYTES", "shape": ["-1", "1"]},
            {"name": "SCALE", "datatype": "FP16", "shape": ["-1", "2"]},
        ],
    }
    grpc_config = {
        "name": "m",
        "max_batch_size": 8,
        "input": [
            {"name": "TOKENS", "data_type": "TYPE_INT64", "dims": ["-1"]},
            {"name": "TEXT", "data_type": "TYPE_STRING", "dims": ["1"]},
            {"name": "SCALE", "data_type": "TYPE_FP16", "dims": ["2"], "optional": True},
        ],
    }
    assert from_http == model_spec(grpc_metadata, grpc_config)
    assert from_http == ModelSpec(
        "m",
        8,
        (
            InputSpec("TOKENS", "INT64", (-1,)),
            InputSpec("TEXT", "BYTES", (1,)),
            InputSpec("SCALE", "FP16", (2,), optional=True),
        ),
    )


def test_a_model_that_does_not_batch_keeps_its_whole_shape() -> None:
    spec = model_spec(http_metadata("m", 0, ("X", "FP32", [3, 4])), {"name": "m"})  # gRPC leaves 0 out
    assert spec.max_batch_size == 0 and spec.inputs == (InputSpec("X", "FP32", (3, 4)),)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sequence_batching": {}}, "uses sequence batching"),
        ({"model_transaction_policy": {"decoupled": True}}, "is decoupled"),
        ({"input": [{"name": "X", "is_shape_tensor": True}]}, "input X is a shape tensor"),
    ],
)
def test_models_that_need_more_than_tensors_are_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        model_spec(http_metadata("m", 4, ("X", "INT32", [2])), {"name": "m", "max_batch_size": 4, **config})


def test_an_unknown_datatype_or_shape_is_refused() -> None:
    with pytest.raises(InputError, match="input X has an unknown datatype 'COMPLEX64'"):
        model_spec(http_metadata("m", 0, ("X", "COMPLEX64", [2])), {})
    with pytest.raises(InputError, match="input X: the server reported a shape"):
        model_spec({"name": "m", "inputs": [{"name": "X", "datatype": "FP32", "shape": ["a"]}]}, {})


# --------------------------------------------------------------------------------------------
# Random data


@pytest.mark.parametrize("datatype", DATATYPES)
def test_random_data_of_every_datatype_is_what_tritonclient_sends(datatype: str) -> None:
    spec = spec_of(8, ("X", datatype, [3, 5]))
    request = random_request(spec, batch=4, seed=1)
    assert request.model == "m" and len(request.inputs) == 1
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype) == ("X", datatype)
    data = tensor.data
    assert data.shape == (4, 3, 5) and data.dtype == numpy_dtype(datatype)
    if datatype == "BYTES":
        low, high = RANDOM_BYTES_LENGTH
        assert all(isinstance(v, bytes) and low <= len(v) <= high for v in data.reshape(-1))
        assert len(set(data.reshape(-1))) > 1
    elif datatype == "BOOL":
        assert data.any() and not data.all()
    elif data.dtype.kind in "iu":
        assert RANDOM_INT_RANGE[0] <= data.min() and data.max() < RANDOM_INT_RANGE[1]
    else:
        values = data.astype(np.float64)
        assert values.min() >= 0 and values.max() <= 1 and np.unique(values).size > 1
    # Both clients accept the array as this datatype.
    httpclient.InferInput("X", list(data.shape), datatype).set_data_from_numpy(data, binary_data=True)
    grpcclient.InferInput("X", list(data.shape), datatype).set_data_from_numpy(data)


def test_random_data_is_seeded() -> None:
    spec = spec_of(4, ("A", "FP32", [16]), ("B", "BYTES", [4]))
    first, again, other = (tensors(random_request(spec, 2, seed=s)) for s in (7, 7, 8))
    for name in ("A", "B"):
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["A"], other["A"])
    assert len(build_requests(spec, batch=2, seed=7)) == 1  # generated once, sent every time


def test_batch_dimension_follows_max_batch_size() -> None:
    batching = spec_of(8, ("X", "FP32", [4]))
    assert tensors(random_request(batching, batch=8))["X"].shape == (8, 4)
    with pytest.raises(InputError, match="--batch 9 is more than the max_batch_size 8 of model m"):
        random_request(batching, batch=9)
    flat = spec_of(0, ("X", "FP32", [2, 4]))
    assert tensors(random_request(flat))["X"].shape == (2, 4)
    with pytest.raises(InputError, match=r"does not batch \(max_batch_size 0\): --batch must be 1, not 2"):
        random_request(flat, batch=2)


def test_dynamic_dimensions_come_from_shape_options() -> None:
    spec = spec_of(4, ("IDS", "INT64", [-1, 8]), ("MASK", "INT8", [-1]))
    request = random_request(spec, 2, parse_shapes(["IDS:5,8", "MASK:5"]))
    assert {name: data.shape for name, data in tensors(request).items()} == {"IDS": (2, 5, 8), "MASK": (2, 5)}
    flat = spec_of(0, ("IDS", "INT32", [1, -1]))
    assert tensors(random_request(flat, 1, {"IDS": (1, 7)}))["IDS"].shape == (1, 7)


def test_a_dynamic_dimension_without_shape_names_the_input_and_its_shape() -> None:
    spec = spec_of(4, ("IDS", "INT64", [-1, 8]), ("MASK", "INT8", [-1]))
    with pytest.raises(InputError) as error:
        random_request(spec, 1, {"IDS": (3, 8)})
    message = str(error.value)
    assert "input MASK (INT8) of model m has shape [-1]" in message
    assert "--shape MASK:1" in message
    with pytest.raises(InputError, match=r"--shape IDS:1,8 \(without the batch dimension\)"):
        random_request(spec, 1, {"MASK": (3,)})


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"NOPE": (3,)}, r"--shape NOPE: model m has no input 'NOPE'; its inputs are IDS INT64 \[-1, 8\]"),
        ({"IDS": (3,)}, r"--shape IDS: shape \[3\] does not fit input IDS, whose shape is \[-1, 8\]"),
        ({"IDS": (3, 9)}, r"shape \[3, 9\] does not fit input IDS"),
        ({"IDS": (2, 3, 8)}, r"shape \[2, 3, 8\] does not fit"),  # the batch dimension is not given
    ],
)
def test_shapes_must_fit_the_model(shapes: dict[str, tuple[int, ...]], message: str) -> None:
    with pytest.raises(InputError, match=message):
        random_request(spec_of(4, ("IDS", "INT64", [-1, 8])), 1, shapes)


def test_optional_inputs_are_sent_when_their_shape_is_known() -> None:
    spec = spec_of(
        4, ("X", "FP32", [2]), ("BIAS", "FP32", [2]), ("EXTRA", "INT32", [-1]), optional=("BIAS", "EXTRA")
    )
    assert set(tensors(random_request(spec))) == {"X", "BIAS"}
    assert set(tensors(random_request(spec, 1, {"EXTRA": (3,)}))) == {"X", "BIAS", "EXTRA"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("INPUT0", "expected NAME:D1,D2"),
        (":3", "expected NAME:D1,D2"),
        ("INPUT0:", "the dimensions must be integers"),
        ("INPUT0:3,x", "the dimensions must be integers"),
        ("INPUT0:3;4", "the dimensions must be integers"),
        ("INPUT0:0", "every dimension must be >= 1"),
        ("INPUT0:-1", "every dimension must be >= 1"),
    ],
)
def test_bad_shape_options_say_why(option: str, message: str) -> None:
    with pytest.raises(InputError, match=f"--shape '{option}': {message}"):
        parse_shapes([option])


def test_shape_options_split_at_the_last_colon_and_once_per_input() -> None:
    assert parse_shapes(["input:0:3,4", "B:1"]) == {"input:0": (3, 4), "B": (1,)}
    with pytest.raises(InputError, match="input B is given twice"):
        parse_shapes(["B:1", "B:2"])


# --------------------------------------------------------------------------------------------
# --input-data


def data(*entries: dict[str, Any]) -> InputData:
    return input_data({"data": list(entries)}, "in.json")


def test_entries_become_requests_in_turn() -> None:
    spec = spec_of(
        4,
        ("TOKENS", "INT64", [-1]),
        ("TEXT", "BYTES", [1]),
        ("GRID", "FP16", [-1, -1]),
        ("FLAG", "BOOL", [2]),
        ("SCALE", "FP32", [1]),
        optional=("SCALE",),
    )
    requests = input_data_requests(
        spec,
        data(
            {
                "TOKENS": [1, 2, 3],  # the one dynamic dimension follows from the count
                "TEXT": ["héllo"],
                "GRID": {"content": [1, 2, 3, 4, 5, 6], "shape": [2, 3]},
                "FLAG": [True, False],
            },
            {
                "TOKENS": {"content": [4, 5]},
                "TEXT": {"content": ["bye"], "shape": [1]},
                "GRID": [[0.5], [1.5]],  # nested lists are flattened; --shape gives the dims
                "FLAG": [[False, True]],
                "SCALE": [2.0],
            },
        ),
        batch=3,
        shapes={"GRID": (2, 1)},
    )
    first, second = (tensors(r) for r in requests)
    np.testing.assert_array_equal(first["TOKENS"], [[1, 2, 3]] * 3)
    assert first["TOKENS"].dtype == np.int64
    assert first["TEXT"].tolist() == [["héllo".encode()]] * 3 and first["TEXT"].dtype == np.object_
    assert first["GRID"].shape == (3, 2, 3) and first["GRID"].dtype == np.float16
    np.testing.assert_array_equal(first["FLAG"][0], [True, False])
    assert "SCALE" not in first  # optional: may be left out
    assert second["TOKENS"].shape == (3, 2) and second["GRID"].shape == (3, 2, 1)
    assert second["SCALE"].tolist() == [[2.0]] * 3
    assert describe_requests(requests)[0] == {
        "name": "TOKENS",
        "datatype": "INT64",
        "shapes": [[3, 3], [3, 2]],
    }


def test_a_model_that_does_not_batch_takes_entries_as_they_are() -> None:
    spec = spec_of(0, ("X", "UINT8", [2, 2]))
    (request,) = input_data_requests(spec, data({"X": [1, 2, 3, 255]}))
    np.testing.assert_array_equal(tensors(request)["X"], [[1, 2], [3, 255]])
    with pytest.raises(InputError, match="--batch must be 1"):
        input_data_requests(spec, data({"X": [1, 2, 3, 4]}), batch=2)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"TOKENS": [1], "TEXT": ["a"], "OTHER": [1]},
            "model m has no input 'OTHER'; its inputs are",
        ),
        ({"TOKENS": [1]}, r"input TEXT is missing \(it is not optional\)"),
        ({"TOKENS": [], "TEXT": ["a"]}, r"input TOKENS \(INT64 \[-1\]\): 0 values do not give the size"),
        ({"TOKENS": 5, "TEXT": ["a"]}, r"input TOKENS \(INT64 \[-1\]\): expected a list of values or"),
        ({"TOKENS": {"b64": "AAAA"}, "TEXT": ["a"]}, "expected a list of values or"),
        ({"TOKENS": {"content": [1, 2], "shape": [3]}, "TEXT": ["a"]}, r"2 values, but shape \[3\] holds 3"),
        (
            {"TOKENS": {"content": [1, 2], "shape": [1, 2]}, "TEXT": ["a"]},
            r"shape \[1, 2\] does not fit input TOKENS",
        ),
        ({"TOKENS": {"content": [1], "shape": ["1"]}, "TEXT": ["a"]}, "shape must be a list of integers"),
        ({"TOKENS": [1.5], "TEXT": ["a"]}, "INT64 values must be integers"),
        ({"TOKENS": [True], "TEXT": ["a"]}, "INT64 values must be integers"),
        ({"TOKENS": [2**63], "TEXT": ["a"]}, r"9223372036854775808 is outside INT64's range"),
        ({"TOKENS": [1], "TEXT": [1]}, r"input TEXT \(BYTES \[1\]\): BYTES values must be strings"),
        (
            {"TOKENS": [1], "TEXT": ["a", "b"]},
            r"input TEXT \(BYTES \[1\]\): 2 values, but shape \[1\] holds 1",
        ),
        ({"TOKENS": [1], "TEXT": ["a"], "HALF": [1e6]}, "1e\\+06 is outside FP16's range"),
        ({"TOKENS": [1], "TEXT": ["a"], "HALF": ["1"]}, "FP16 values must be numbers"),
        ({"TOKENS": [1], "TEXT": ["a"], "FLAG": [1]}, "BOOL values must be true or false"),
        ({"TOKENS": [1], "TEXT": ["a"], "SMALL": [-1]}, r"-1 is outside UINT8's range \[0, 255\]"),
        (
            {"TOKENS": [1], "TEXT": ["a"], "MATRIX": [1, 2]},
            r"input MATRIX \(FP32 \[-1, -1\]\): 2 values do not give",
        ),
    ],
)
def test_bad_entries_name_the_entry_and_the_input(entry: dict[str, Any], message: str) -> None:
    spec = spec_of(
        4,
        ("TOKENS", "INT64", [-1]),
        ("TEXT", "BYTES", [1]),
        ("HALF", "FP16", [1]),
        ("FLAG", "BOOL", [1]),
        ("SMALL", "UINT8", [1]),
        ("MATRIX", "FP32", [-1, -1]),
        optional=("HALF", "FLAG", "SMALL", "MATRIX"),
    )
    with pytest.raises(InputError, match=f"in.json: data\\[0\\]: .*{message}"):
        input_data_requests(spec, data(entry))


def test_shape_options_also_check_against_the_model_with_input_data() -> None:
    with pytest.raises(InputError, match="--shape NOPE: model m has no input 'NOPE'"):
        input_data_requests(spec_of(4, ("X", "FP32", [1])), data({"X": [1.0]}), shapes={"NOPE": (1,)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"in\.json: not valid JSON: Expecting property name .*line 1 column 2"),
        ("[1, 2]", r'in\.json: expected \{"data": \['),
        ('{"inputs": []}', r'expected \{"data"'),
        ('{"data": []}', "with at least one entry"),
        (
            '{"data": [{"X": [1]}, [{"X": [1]}]]}',
            r"data\[1\] must be an object mapping input names to values, not list",
        ),
    ],
)
def test_bad_input_data_files_say_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_input_data(path)


def test_input_data_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"data": [{"X": [1]}, {"X": [2]}]}))
    assert read_input_data(path) == InputData(str(path), ({"X": [1]}, {"X": [2]}))
    with pytest.raises(InputError, match="cannot read"):
        read_input_data(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# The command line refuses bad options before it contacts a server


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "INPUT0"], "--shape 'INPUT0': expected NAME:D1,D2"),
        (["--shape", "A:1", "--shape", "A:2"], "input A is given twice"),
        (["--input-data", "{bad}"], "not valid JSON"),
    ],
)
def test_bench_command_refuses_bad_inputs_up_front(tmp_path: Path, args: list[str], message: str) -> None:
    if "--input-data" in args:
        path = tmp_path / "in.json"
        path.write_text(args[1])
        args = ["--input-data", str(path)]
    # Port 9 (discard) refuses connections: the error must come before any attempt.
    result = CliRunner().invoke(main, ["bench", "--url", "127.0.0.1:9", "--model", "m", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "cannot serve" not in result.output


def test_bench_command_needs_a_model() -> None:
    result = CliRunner().invoke(main, ["bench", "--url", "127.0.0.1:9"])
    assert result.exit_code == 2 and "Missing option '--model'" in result.output
