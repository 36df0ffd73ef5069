"""Request-rate traces: the one reader of trace CSV files, for `tritonscale bench --trace` and
`tritonscale simulate --trace`.

The format (the same for both commands):

    time_s,rate_rps[,cv]
    0,468.0
    10,0
    20,1404.2

- A header line comes first. Its columns are `time_s` (seconds since the trace began),
  `rate_rps` (requests per second) and optionally `cv` (the coefficient of variation of the
  gaps between arrivals, default 1: Poisson), in any order. A column not named here, or named
  twice, is an error: a misspelt `cv` would otherwise be ignored silently.
- One row per interval: each rate holds until the next row's time. The first row is at time 0,
  and times strictly increase.
- Rates are finite, in [0, MAX_RATE_RPS]; cv is finite and > 0 (an empty cv cell means 1).
  Blank lines are skipped.

Errors are `TraceError`s that name the file and the line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

TIME_COLUMN = "time_s"
RATE_COLUMN = "rate_rps"
CV_COLUMN = "cv"
REQUIRED_COLUMNS = (TIME_COLUMN, RATE_COLUMN)
COLUMNS = (*REQUIRED_COLUMNS, CV_COLUMN)
MAX_RATE_RPS = 1_000_000.0


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file and, when it can, the line."""


@dataclass(frozen=True)
class TracePoint:
    """One row: from `time_s` on, `rate_rps` requests per second with gaps of variation `cv`."""

    time_s: float
    rate_rps: float
    cv: float
    line: int
    """The row's line in the file, for errors about it found later."""


@dataclass(frozen=True)
class RateTrace:
    """A trace file's rows, in order; the first is at time 0."""

    path: Path
    points: tuple[TracePoint, ...]

    @property
    def name(self) -> str:
        return self.path.stem


def _number(text: str | None, column: str, where: str) -> float:
    if text is None or not text.strip():
        raise TraceError(f"{where}: {column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {column} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: {column} {text.strip()!r} is not finite")
    return value


def _check_header(fields: list[str], where: str) -> list[str]:
    names = [field.strip() for field in fields]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise TraceError(
            f"{where}: unknown column {unknown[0]!r}; the header must be "
            f"{','.join(REQUIRED_COLUMNS)} with an optional {CV_COLUMN} (times in seconds)"
        )
    repeated = [name for name in COLUMNS if names.count(name) > 1]
    if repeated:
        raise TraceError(f"{where}: column {repeated[0]!r} appears twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise TraceError(f"{where}: the header has no {missing[0]} column; it must be time_s,rate_rps[,cv]")
    return names


def read_rate_trace(path: Path) -> RateTrace:
    """Read and check a trace file (see the module docstring for the rules)."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return RateTrace(path, _read_points(handle, path))
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"cannot read trace {path}: {error}") from error
    except csv.Error as error:
        raise TraceError(f"{path}: not a CSV file: {error}") from error


def _read_points(handle: TextIO, path: Path) -> tuple[TracePoint, ...]:
    reader = csv.reader(handle)
    header: list[str] | None = None
    points: list[TracePoint] = []
    for row in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        if not any(field.strip() for field in row):
            continue
        if header is None:
            header = _check_header(row, where)
            continue
        if len(row) != len(header):
            raise TraceError(f"{where}: {len(row)} fields, but the header has {len(header)}")
        values = dict(zip(header, row, strict=True))
        point = TracePoint(
            time_s=_number(values[TIME_COLUMN], TIME_COLUMN, where),
            rate_rps=_number(values[RATE_COLUMN], RATE_COLUMN, where),
            cv=_number(values[CV_COLUMN], CV_COLUMN, where) if values.get(CV_COLUMN, "").strip() else 1.0,
            line=line,
        )
        if not 0 <= point.rate_rps <= MAX_RATE_RPS:
            raise TraceError(f"{where}: rate_rps {point.rate_rps:g} is not in [0, {MAX_RATE_RPS:.0f}]")
        if point.cv <= 0:
            raise TraceError(f"{where}: cv {point.cv:g} must be > 0")
        if not points and point.time_s != 0:
            raise TraceError(f"{where}: the first row must be at time_s 0, not {point.time_s:g}")
        if points and point.time_s <= points[-1].time_s:
            raise TraceError(
                f"{where}: time_s {point.time_s:g} does not come after the previous row's "
                f"{points[-1].time_s:g}; times must increase"
            )
        points.append(point)
    if header is None:
        raise TraceError(f"{path}: empty; expected a header time_s,rate_rps[,cv] and rows")
    if not points:
        raise TraceError(f"{path}: no rows after the header")
    return tuple(points)
