"""The one trace-CSV reader that `bench --trace` and `simulate --trace` share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonscale.traces import TraceError, TracePoint, read_rate_trace


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_with_and_without_cv(tmp_path: Path) -> None:
    trace = read_rate_trace(write(tmp_path, "time_s,rate_rps\n0,468.08\n10,0.000\n20,1404.241\n"))
    assert trace.name == "trace"
    assert trace.points == (
        TracePoint(0.0, 468.08, 1.0, 2),
        TracePoint(10.0, 0.0, 1.0, 3),
        TracePoint(20.0, 1404.241, 1.0, 4),
    )
    with_cv = read_rate_trace(write(tmp_path, "time_s,rate_rps,cv\n0,10,1\n60,50,1.5\n120,20,\n"))
    assert [p.cv for p in with_cv.points] == [1.0, 1.5, 1.0]  # an empty cv cell means 1


def test_columns_in_any_order_with_spaces_a_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_bytes("\ufeffcv, rate_rps ,time_s\r\n\r\n2,5,0\r\n\r\n1,7,30\r\n".encode())
    trace = read_rate_trace(path)
    assert [(p.time_s, p.rate_rps, p.cv, p.line) for p in trace.points] == [(0, 5, 2, 3), (30, 7, 1, 5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"trace\.csv: empty"),
        ("time_s,rate_rps\n", "no rows after the header"),
        ("\n\ntime_s,rate_rps\n\n", "no rows after the header"),
        ("t,r\n0,5\n", r"trace\.csv:1: unknown column 't'.*time_s,rate_rps"),
        ("0,5\n10,6\n", r":1: unknown column '0'"),  # no header
        ("time,rate\n0,1\n", r":1: unknown column 'time'"),
        ("time_ms,rate_rps\n0,1\n", r":1: unknown column 'time_ms'.*in seconds"),
        ("time_s,rate_rps,c_v\n0,1,2\n", r":1: unknown column 'c_v'"),
        ("time_s,rate_rps,rate_rps\n0,1,2\n", r":1: column 'rate_rps' appears twice"),
        ("time_s,cv\n0,1\n", r":1: the header has no rate_rps column"),
        ("time_s,rate_rps\n0,5\n10,ten\n", r"trace\.csv:3: rate_rps 'ten' is not a number"),
        ("time_s,rate_rps\n0,5\n10,\n", r":3: rate_rps is empty"),
        ("time_s,rate_rps\n0,nan\n", r":2: rate_rps 'nan' is not finite"),
        ("time_s,rate_rps\n0,5\ninf,5\n", r":3: time_s 'inf' is not finite"),
        ("time_s,rate_rps\n0,-1\n", r":2: rate_rps -1 is not in \[0, 1000000\]"),
        ("time_s,rate_rps\n0,2000000\n", r":2: rate_rps 2e\+06 is not in"),
        ("time_s,rate_rps,cv\n0,1,0\n", r":2: cv 0 must be > 0"),
        ("time_s,rate_rps\n5,1\n", r":2: the first row must be at time_s 0, not 5"),
        ("time_s,rate_rps\n0,1\n10,1\n5,2\n", r":4: time_s 5 does not come after the previous row's 10"),
        ("time_s,rate_rps\n0,1\n0,2\n", r":3: time_s 0 does not come after"),
        ("time_s,rate_rps\n0,1\n10\n", r":3: 1 fields, but the header has 2"),
        ("time_s,rate_rps\n0,1,3\n", r":2: 3 fields, but the header has 2"),
    ],
)
def test_bad_traces_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        read_rate_trace(write(tmp_path, text))


def test_unreadable_files_are_trace_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        read_rate_trace(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"time_s,rate_rps\n0,\xff\xfe\n")
    with pytest.raises(TraceError, match="cannot read trace"):
        read_rate_trace(binary)
    assert issubclass(TraceError, ValueError)  # `simulate` reports ValueErrors as bad parameters
