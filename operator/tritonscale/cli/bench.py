"""`tritonscale bench`: load a Triton endpoint (or a router) and report throughput and latency."""

from __future__ import annotations

import asyncio
import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tritonscale import __version__
from tritonscale.bench.inputs import (
    Dims,
    InputData,
    InputError,
    build_requests,
    describe_requests,
    format_dims,
    parse_shapes,
    read_input_data,
)
from tritonscale.bench.report import print_report, write_json, write_plot, write_request_log
from tritonscale.bench.runner import LiveCounters, LoadPlan, Target, check_reachable, describe_model, run_once
from tritonscale.bench.schedule import RateSchedule, ScheduleError, constant_rate, load_trace, parse_schedule
from tritonscale.bench.stats import RunSamples, summarize_run, summarize_runs
from tritonscale.cli.options import writable_output
from tritonscale.clients.triton import PROTOCOLS, InferenceFailed, InferenceRequest, Protocol
from tritonscale.ports import GRPC_PORT, HTTP_PORT

MAX_DURATION_S = 3600.0
MAX_REPEAT = 100
DEFAULT_PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT}
PROGRESS_INTERVAL_S = 0.25


def _load_plan(
    rate: float | None,
    schedule: str | None,
    trace: Path | None,
    concurrency: int | None,
    duration: float,
    warmup: float,
    max_inflight: int,
    seed: int,
) -> tuple[LoadPlan, str]:
    chosen = [
        name
        for name, value in (
            ("--rate", rate),
            ("--schedule", schedule),
            ("--trace", trace),
            ("--concurrency", concurrency),
        )
        if value is not None
    ]
    if len(chosen) > 1:
        raise click.UsageError(
            f"choose one of --rate, --schedule, --trace and --concurrency, not {' and '.join(chosen)}"
        )
    if concurrency is not None or not chosen:
        users = concurrency if concurrency is not None else 8
        return LoadPlan(
            "closed", duration, warmup, concurrency=users, seed=seed
        ), f"closed loop, {users} concurrent"
    try:
        rates: RateSchedule
        if rate is not None:
            rates = constant_rate(rate)
        elif schedule is not None:
            rates = parse_schedule(schedule)
        else:
            assert trace is not None
            rates = load_trace(trace)
    except ScheduleError as error:
        raise click.BadParameter(str(error), param_hint=chosen[0]) from error
    if rates.peak(duration) <= 0:
        raise click.BadParameter("it offers no load within --duration", param_hint=chosen[0])
    plan = LoadPlan("open", duration, warmup, schedule=rates, max_inflight=max_inflight, seed=seed)
    return plan, f"open loop, Poisson, {rates.describe()}"


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What to send: `--batch`, `--shape` and `--input-data` (None: random data from `seed`)."""

    batch: int
    shapes: dict[str, Dims]
    data: InputData | None
    seed: int

    def describe(self) -> str:
        return f"random data, seed {self.seed}" if self.data is None else self.data.source


async def _run_with_progress(
    target: Target,
    plan: LoadPlan,
    requests: list[InferenceRequest],
    console: Console,
    label: str,
    show: bool,
) -> RunSamples:
    live = LiveCounters()
    if not show:
        return await run_once(target, plan, requests, live)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[phase]:>9} {task.completed:>5.1f}/{task.total:.0f}s"),
        TextColumn("{task.fields[counts]}"),
        TimeRemainingColumn(),
    )
    # Refreshed from the event loop, not a thread, so it never competes with the generator.
    with Progress(*columns, console=console, auto_refresh=False, transient=True) as progress:
        task = progress.add_task(label, total=plan.warmup_s + plan.duration_s, phase="starting", counts="")
        run = asyncio.ensure_future(run_once(target, plan, requests, live))
        previous_done, previous_time = 0, time.monotonic()
        while not run.done():
            await asyncio.wait({run}, timeout=PROGRESS_INTERVAL_S)
            now = time.monotonic()
            done = live.completed + live.errors
            recent = (done - previous_done) / max(now - previous_time, 1e-6)
            previous_done, previous_time = done, now
            progress.update(
                task,
                completed=min(live.elapsed_s, live.total_s),
                phase=live.phase,
                counts=f"{live.completed} ok, {live.errors} errors, {live.inflight} in flight, {recent:,.0f} req/s",
            )
            progress.refresh()
        return run.result()


async def _prepare(target: Target, inputs: Inputs) -> list[InferenceRequest]:
    """Requests valid for the target's model, from what its server says the model takes."""
    cannot_serve = f"{target.protocol}://{target.endpoint} cannot serve model {target.model}"
    try:
        spec = await describe_model(target)
    except InferenceFailed as failure:
        raise click.ClickException(f"{cannot_serve}: {failure}") from failure
    try:
        requests = build_requests(
            spec, batch=inputs.batch, shapes=inputs.shapes, data=inputs.data, seed=inputs.seed
        )
    except InputError as error:
        raise click.UsageError(str(error)) from error
    try:
        await check_reachable(target, requests[0])
    except InferenceFailed as failure:
        raise click.ClickException(f"{cannot_serve}: {failure}") from failure
    return requests


async def _bench(
    target: Target, inputs: Inputs, plan: LoadPlan, repeat: int, console: Console, progress: bool
) -> tuple[list[InferenceRequest], list[RunSamples]]:
    requests = await _prepare(target, inputs)
    sent = "; ".join(
        f"{item['name']} {item['datatype']} {' '.join(format_dims(shape) for shape in item['shapes'])}"
        for item in describe_requests(requests)
    )
    console.print(f"model {target.model}: {sent or 'no inputs'} ({inputs.describe()})")
    results = []
    for index in range(repeat):
        label = f"run {index + 1}/{repeat}"
        run_plan = dataclasses.replace(plan, seed=plan.seed + index)
        results.append(await _run_with_progress(target, run_plan, requests, console, label, progress))
    return requests, results


@click.command()
@click.option(
    "--url",
    "endpoint",
    metavar="HOST:PORT",
    help="Triton or router endpoint. [default: 127.0.0.1:8000 for http, :8001 for grpc]",
)
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="http", show_default=True)
@click.option(
    "--model",
    required=True,
    help="Model to infer; what it takes is read from the server's model metadata and configuration.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Rows per request: the batch dimension of every input (at most the model's max_batch_size; "
    "1 for models that do not batch).",
)
@click.option(
    "--shape",
    "shape_options",
    metavar="NAME:D1,D2,...",
    multiple=True,
    help="Shape of input NAME without the batch dimension, giving the sizes of its dynamic (-1) "
    "dimensions, as in perf_analyzer. Repeat for several inputs.",
)
@click.option(
    "--input-data",
    "input_data_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help='Send data from this JSON file instead of random values: {"data": [{"NAME": [values...] '
    'or {"content": [values...], "shape": [dims...]}, ...}, ...]}, one batch row per entry; '
    "requests cycle through the entries.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True, max=1_000_000),
    help="Open loop: Poisson arrivals at this many requests per second.",
)
@click.option(
    "--schedule",
    metavar="SPEC",
    help="Open loop with a changing rate: ramp:FROM:TO:SECONDS, step:RATE@T,RATE@T,... or constant:RATE.",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Open loop following a trace CSV: header time_s,rate_rps, the first row at time 0, each rate "
    "holding until the next row.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    help="Closed loop with this many concurrent clients. [default when no rate is given: 8]",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True, max=MAX_DURATION_S),
    default=10.0,
    show_default=True,
    help="Measured seconds per run.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(0, 600),
    default=2.0,
    show_default=True,
    help="Unrecorded seconds of load before each run.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, MAX_REPEAT),
    default=1,
    show_default=True,
    help="Runs; the report gives the median and spread.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True, max=600),
    default=30.0,
    show_default=True,
    help="Per-request timeout in seconds.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="HTTP connection pool size (gRPC: one channel per 64).",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Open loop: outstanding requests beyond which sends are dropped (and reported).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the arrival process and of the random input data.",
)
@click.option(
    "--json",
    "json_out",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    callback=writable_output,
    help="Write the results as JSON to FILE, or to stdout with '-'.",
)
@click.option(
    "--requests-log",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_output,
    help="Write every measured request (when due, latency, error) as CSV to this file.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_output,
    help="Write a PNG: latency over time and a latency histogram.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a live progress bar (when writing to a terminal).",
)
def bench(
    endpoint: str | None,
    protocol: Protocol,
    model: str,
    batch: int,
    shape_options: tuple[str, ...],
    input_data_path: Path | None,
    rate: float | None,
    schedule: str | None,
    trace: Path | None,
    concurrency: int | None,
    duration: float,
    warmup: float,
    repeat: int,
    timeout_s: float,
    connections: int,
    max_inflight: int,
    seed: int,
    json_out: str | None,
    requests_log: Path | None,
    plot: Path | None,
    progress: bool,
) -> None:
    """Benchmark Triton inference for any model over HTTP or gRPC, in open loop (--rate,
    --schedule, --trace) or closed loop (--concurrency); report throughput, errors and latency
    percentiles.

    Before the run, bench reads the model's metadata and configuration from the server and
    builds valid requests: every input by name, datatype and shape, with a batch dimension of
    --batch rows when the model batches. Dynamic dimensions (-1) need --shape. The data is
    random (seeded, generated once and re-sent), or comes from --input-data. Optional inputs
    with an unknown shape are left out.

    \b
    Examples:
      tritonscale bench --url 127.0.0.1:8000 --model resnet50 --batch 8 --rate 200
      tritonscale bench --model bert --shape INPUT_IDS:128 --shape MASK:128 --concurrency 16
      tritonscale bench --model bert --input-data requests.json --protocol grpc --rate 100
    """
    plan, load = _load_plan(rate, schedule, trace, concurrency, duration, warmup, max_inflight, seed)
    try:
        inputs = Inputs(
            batch=batch,
            shapes=parse_shapes(shape_options),
            data=read_input_data(input_data_path) if input_data_path else None,
            seed=seed,
        )
    except InputError as error:
        raise click.UsageError(str(error)) from error
    target = Target(
        protocol=protocol,
        endpoint=endpoint or f"127.0.0.1:{DEFAULT_PORTS[protocol]}",
        model=model,
        timeout_s=timeout_s,
        connections=connections,
    )
    # With the JSON on stdout, everything for people goes to stderr.
    console = Console(stderr=json_out == "-")
    requests, runs = asyncio.run(
        _bench(target, inputs, plan, repeat, console, progress and console.is_terminal)
    )
    summaries = [summarize_run(run) for run in runs]
    document: dict[str, Any] = {
        "tool": f"tritonscale {__version__}",
        "config": {
            "protocol": protocol,
            "endpoint": target.endpoint,
            "model": model,
            "batch": batch,
            "inputs": describe_requests(requests),
            "input_data": str(input_data_path) if input_data_path else None,
            "shapes": {name: list(dims) for name, dims in inputs.shapes.items()},
            "mode": plan.mode,
            "load": load,
            "concurrency": plan.concurrency if plan.mode == "closed" else None,
            "duration_s": duration,
            "warmup_s": warmup,
            "repeat": repeat,
            "timeout_s": timeout_s,
            "connections": connections,
            "seed": seed,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "argv": sys.argv[1:],
        },
        "runs": summaries,
        "summary": summarize_runs(summaries),
    }
    print_report(document, console)
    if json_out:
        write_json(document, json_out)
    if requests_log:
        write_request_log(runs, requests_log)
    if plot:
        write_plot(runs, f"{protocol} {target.endpoint} {model}: {load}", plot)
        console.print(f"plot written to {plot}")
