"""`tritonscale status`: what each InferenceService serves, measures and last decided, for a
person at a terminal (also `kubectl tritonscale status` when installed as a kubectl plugin).

Reading is kept apart from showing: `collect` reads the cluster through a `StatusReader`, and
everything after it (`service_table`, `service_details`, `report_json`) is a pure function of
the parsed objects and the current time, so it is tested without a cluster.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tritonscale.api.resource import (
    KIND,
    PAUSE_ANNOTATION,
    InferenceService,
    InvalidInferenceService,
    parse_inference_service,
)
from tritonscale.api.status import Condition, ConditionStatus, ConditionType, InferenceServiceStatus
from tritonscale.errors import RejectedError, TransientError
from tritonscale.policy.placement import split_explanation, split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.status import RATES_DISAGREE

RECENT_EVENTS = 5
DEFAULT_INTERVAL_S = 2.0
LAST_SCALE_WIDTH = 48
# Piped output is read by scripts and people alike: wide enough that table rows never wrap.
PIPE_WIDTH = 200


class StatusReader(Protocol):
    """The reads `status` needs (KubeClient has them)."""

    def list_inference_services(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]: ...

    def list_events(
        self, namespace: str | None, involved_object: Mapping[str, str]
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Connected:
    """A reader with what kubectl would assume: its default namespace and the server's URL."""

    reader: StatusReader
    namespace: str
    server: str


class NotFound(click.ClickException):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"inferenceservice {namespace}/{name} not found")


# --------------------------------------------------------------------------------------------
# the parsed view of one InferenceService


@dataclass(frozen=True)
class EventRecord:
    """One core/v1 Event about the InferenceService."""

    time: datetime | None
    type: str
    reason: str
    message: str
    count: int


@dataclass(frozen=True)
class ServiceReport:
    """One InferenceService as stored, with its recent Events (newest first)."""

    namespace: str
    name: str
    uid: str | None
    service: InferenceService | None  # None when the stored object is not a valid one
    status: InferenceServiceStatus
    problem: str | None = None  # why `service` is None
    events: tuple[EventRecord, ...] = ()


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def event_record(raw: Mapping[str, Any]) -> EventRecord:
    """An Event's fields, its time being the last time it was seen, whichever API wrote it."""
    series = raw.get("series") or {}
    metadata = raw.get("metadata") or {}
    seen = next(
        (
            stamp
            for stamp in (
                _timestamp(series.get("lastObservedTime")),
                _timestamp(raw.get("lastTimestamp")),
                _timestamp(raw.get("eventTime")),
                _timestamp(raw.get("firstTimestamp")),
                _timestamp(metadata.get("creationTimestamp")),
            )
            if stamp is not None
        ),
        None,
    )
    return EventRecord(
        time=seen,
        type=str(raw.get("type") or ""),
        reason=str(raw.get("reason") or ""),
        message=str(raw.get("message") or "").strip(),
        count=int(series.get("count") or raw.get("count") or 1),
    )


def recent_events(
    raw_events: Iterable[Mapping[str, Any]], limit: int = RECENT_EVENTS
) -> tuple[EventRecord, ...]:
    """The newest `limit` Events, newest first. Events of the same second keep the API server's
    order of writing (resourceVersion), so two posted together still read in order."""

    def newest_first(raw: Mapping[str, Any]) -> tuple[datetime, int]:
        record = event_record(raw)
        version = str((raw.get("metadata") or {}).get("resourceVersion") or "")
        return (
            record.time or datetime.min.replace(tzinfo=UTC),
            int(version) if version.isdigit() else 0,
        )

    ordered = sorted(raw_events, key=newest_first, reverse=True)
    return tuple(event_record(raw) for raw in ordered[:limit])


def report_from(obj: Mapping[str, Any], raw_events: Iterable[Mapping[str, Any]] = ()) -> ServiceReport:
    """Parse a stored InferenceService. One that no longer validates (stored under an older CRD)
    is still shown, from its metadata and whatever of its status parses, with the problem."""
    metadata = obj.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "?")
    events = recent_events(raw_events)
    try:
        service = parse_inference_service(dict(obj))
    except InvalidInferenceService as invalid:
        try:
            status = InferenceServiceStatus.model_validate(obj.get("status") or {})
        except ValueError:
            status = InferenceServiceStatus()
        problem = str(invalid).replace("\n", "; ")
        return ServiceReport(namespace, name, metadata.get("uid"), None, status, problem, events)
    return ServiceReport(namespace, name, service.metadata.uid, service, service.status, events=events)


# --------------------------------------------------------------------------------------------
# words and numbers shared by the table, the details and the JSON


def age(since: datetime | None, now: datetime) -> str:
    """Elapsed time the way kubectl prints it: 45s, 3m12s, 47m, 5h3m, 30h, 3d4h, 12d."""
    if since is None:
        return "?"
    seconds = max(0, int((now - since).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _seconds_since(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}".removesuffix(".0") + unit


def sizing_mode(service: InferenceService) -> str:
    """Who sets the replica count: "autoscaler", "paused" (annotation) or "manual" (spec.replicas)."""
    if not service.spec.autoscaling_enabled:
        return "manual"
    return "paused" if service.autoscaling_paused else "autoscaler"


def sizing_text(service: InferenceService) -> str:
    spec, autoscaling = service.spec, service.spec.autoscaling
    mode = sizing_mode(service)
    if mode == "manual" or autoscaling is None:
        return f"manual: spec.replicas {spec.replicas} (autoscaling off)"
    bounds = f"{autoscaling.min_replicas}..{autoscaling.max_replicas}"
    if mode == "paused":
        return (
            f"paused by the {PAUSE_ANNOTATION} annotation: spec.replicas {spec.replicas} "
            f"(autoscaler bounds {bounds})"
        )
    latency = autoscaling.latency
    return (
        f"autoscaler: between {bounds} replicas, holding p{latency.percentile:g} "
        f"<= {latency.target_milliseconds:g} ms"
    )


def _desired(report: ServiceReport) -> int | None:
    if report.status.desired_replicas is not None:
        return report.status.desired_replicas
    return None if report.service is None else reconciled_replicas(report.service)


def latency_within(status: InferenceServiceStatus) -> bool | None:
    observed, target = status.observed_latency_milliseconds, status.target_latency_milliseconds
    if observed is None or target is None:
        return None
    return observed <= target


def _latency_style(status: InferenceServiceStatus) -> str:
    within = latency_within(status)
    return "" if within is None else ("green" if within else "bold red")


def latency_cell(status: InferenceServiceStatus) -> Text:
    """`87/100ms p95`: observed over target at the percentile; `-` without an objective."""
    observed, target = status.observed_latency_milliseconds, status.target_latency_milliseconds
    if observed is None and target is None:
        return Text("-", style="dim")
    text = f"{_number(observed) if observed is not None else '?'}/{_number(target) if target else '-'}ms"
    if status.latency_percentile is not None:
        text += f" p{status.latency_percentile:g}"
    return Text(text, style=_latency_style(status))


def _degraded(status: InferenceServiceStatus) -> Condition | None:
    degraded = status.condition(ConditionType.DEGRADED)
    return degraded if degraded is not None and degraded.status == ConditionStatus.TRUE else None


def ready_cell(report: ServiceReport) -> Text:
    if report.problem is not None:
        return Text("Invalid", style="bold red")
    ready = report.status.condition(ConditionType.READY)
    if ready is None:
        text = Text("-", style="dim")
    elif ready.status == ConditionStatus.TRUE:
        text = Text("True", style="green")
    else:
        text = Text(
            f"{ready.status.value} ({ready.reason})",
            style="red" if ready.status == ConditionStatus.FALSE else "yellow",
        )
    degraded = _degraded(report.status)
    if degraded is not None:
        text.append(f" Degraded: {degraded.reason}", style="bold red")
    return text


def short_reason(reason: str) -> str:
    """The first clause of a decision's reason (`p95 140 ms > 100 ms at 80 req/s`)."""
    return reason.split(";", 1)[0].strip()


def last_scale_cell(status: InferenceServiceStatus, now: datetime) -> str:
    last = status.last_scale
    if last is None:
        return "-"
    return f"{last.from_}->{last.to} {age(last.time, now)} ago: {short_reason(last.reason)}"


# --------------------------------------------------------------------------------------------
# the table of many services


def service_table(reports: Iterable[ServiceReport], now: datetime, all_namespaces: bool) -> Table:
    """One row per service, kubectl style (no borders); NAMESPACE only with -A. On a narrow
    terminal LAST SCALE and READY give way first: names and counts are never cut."""
    columns = ["NAME", "READY", "REPLICAS", "ON-DEMAND", "SPOT", "LATENCY/TARGET", "RATE", "LAST SCALE"]
    if all_namespaces:
        columns.insert(0, "NAMESPACE")
    rows: list[list[Text]] = []
    for report in reports:
        status = report.status
        desired = _desired(report)
        spot_enabled = report.service is not None and report.service.spec.capacity.spot.enabled
        row = [
            Text(report.name),
            ready_cell(report),
            Text(f"{status.replicas}/{'?' if desired is None else desired}"),
            Text(_number(status.on_demand_replicas)),
            Text(_number(status.spot_replicas) if spot_enabled else "-"),
            latency_cell(status),
            Text(_number(status.observed_rate_rps, "/s")),
            Text(last_scale_cell(status, now)),
        ]
        if all_namespaces:
            row.insert(0, Text(report.namespace))
        rows.append(row)
    # Rich narrows only wrappable columns to fit: READY and LAST SCALE are, and their cells are
    # cut with an ellipsis rather than wrapped, so every row stays one line.
    shrinkable = {"READY", "LAST SCALE"}
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(
            column,
            no_wrap=column not in shrinkable,
            max_width=LAST_SCALE_WIDTH if column == "LAST SCALE" else None,
        )
    for row in rows:
        for column, cell in zip(columns, row, strict=True):
            if column in shrinkable:
                cell.no_wrap, cell.overflow = True, "ellipsis"
        table.add_row(*row)
    return table


# --------------------------------------------------------------------------------------------
# the details of one service


def _condition_style(condition: Condition) -> str:
    problem_when_true = condition.type in (ConditionType.DEGRADED, ConditionType.SCALING_LIMITED)
    if condition.status == ConditionStatus.UNKNOWN:
        return "yellow"
    if condition.reason == RATES_DISAGREE:
        return "yellow"
    if condition.type in (ConditionType.READY, ConditionType.METRICS_AVAILABLE, ConditionType.SCALING_ACTIVE):
        return "green" if condition.status == ConditionStatus.TRUE else "red"
    if problem_when_true and condition.status == ConditionStatus.TRUE:
        return "bold red" if condition.type == ConditionType.DEGRADED else "yellow"
    return ""


def _alerts(report: ServiceReport) -> list[RenderableType]:
    """What is wrong, above everything else: an unreadable object, Degraded, metrics missing
    or their rate apart from the routers' count."""
    alerts: list[RenderableType] = []
    if report.problem is not None:
        alerts.append(
            Panel(
                Text(report.problem),
                title="not a valid InferenceService",
                title_align="left",
                expand=False,
                border_style="bold red",
            )
        )
    degraded = _degraded(report.status)
    if degraded is not None:
        alerts.append(
            Panel(
                Text(degraded.message or degraded.reason),
                title=f"Degraded: {degraded.reason}",
                title_align="left",
                expand=False,
                border_style="bold red",
            )
        )
    metrics = report.status.condition(ConditionType.METRICS_AVAILABLE)
    if metrics is not None and (metrics.status == ConditionStatus.FALSE or metrics.reason == RATES_DISAGREE):
        title = "Metrics unavailable" if metrics.status == ConditionStatus.FALSE else "Model feedback paused"
        alerts.append(
            Panel(
                Text(metrics.message or metrics.reason),
                title=f"{title}: {metrics.reason}",
                title_align="left",
                expand=False,
                border_style="yellow",
            )
        )
    return alerts


def _summary_grid(report: ServiceReport, now: datetime) -> Table:
    status, service = report.status, report.service
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    ready = status.condition(ConditionType.READY)
    if ready is None:
        grid.add_row("Ready", Text("not reported yet", style="dim"))
    else:
        line = Text(ready.status.value, style=_condition_style(ready))
        line.append(f" {ready.reason}", style="bold" if ready.status != ConditionStatus.TRUE else "")
        if ready.message:
            line.append(f": {ready.message}")
        line.append(f" (for {age(ready.last_transition_time, now)})", style="dim")
        grid.add_row("Ready", line)
    desired = _desired(report)
    replicas = Text(f"{status.replicas}/{'?' if desired is None else desired} Triton replicas ready")
    replicas.append(
        f"  on-demand {_number(status.on_demand_replicas)}, spot {_number(status.spot_replicas)}, "
        f"routers {_number(status.router_replicas)}"
    )
    grid.add_row("Replicas", replicas)
    if service is not None:
        grid.add_row("Sizing", sizing_text(service))
        if desired is not None:
            grid.add_row("Split", split_explanation(desired, service.spec.capacity))
    latency = Text()
    if status.observed_latency_milliseconds is None and status.target_latency_milliseconds is None:
        latency.append("no latency objective running", style="dim")
    else:
        percentile = f"p{status.latency_percentile:g} " if status.latency_percentile is not None else ""
        observed = status.observed_latency_milliseconds
        latency.append(
            f"{percentile}{'not measured' if observed is None else _number(observed, ' ms')}",
            style=_latency_style(status),
        )
        latency.append(f" vs target {_number(status.target_latency_milliseconds, ' ms')}")
        within = latency_within(status)
        if within is not None:
            latency.append(" within" if within else " OVER TARGET", style=_latency_style(status))
    grid.add_row("Latency", latency)
    grid.add_row("Rate", _number(status.observed_rate_rps, " req/s"))
    model = status.capacity_model
    if model is not None:
        grid.add_row("Cold start", f"{_number(model.cold_start_seconds, ' s')} ({model.cold_start_source})")
        grid.add_row("Batch limit", f"{model.max_batch} ({model.max_batch_source})")
    grid.add_row("Endpoint", f"{status.endpoint} (gRPC on port 8001)" if status.endpoint else "-")
    return grid


def _decisions(report: ServiceReport, now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", expand=False)
    table.add_column("AGE", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("REASON", no_wrap=True)
    table.add_column("MESSAGE")
    last = report.status.last_scale
    if last is not None:
        table.add_row(
            age(last.time, now),
            "status",
            Text("lastScale", style="bold"),
            f"{last.from_} -> {last.to}: {last.reason}",
        )
    for event in report.events:
        style = "yellow" if event.type == "Warning" else ""
        count = f" (x{event.count})" if event.count > 1 else ""
        table.add_row(
            age(event.time, now),
            Text(event.type, style=style),
            Text(event.reason, style=style or "bold"),
            event.message + count,
        )
    if last is None and not report.events:
        table.add_row("", "", Text("none", style="dim"), Text("no scale decision or Event yet", style="dim"))
    return table


def _conditions(report: ServiceReport, now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for column in ("TYPE", "STATUS", "REASON", "AGE"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for condition in report.status.conditions:
        style = _condition_style(condition)
        table.add_row(
            Text(condition.type, style="bold red" if style == "bold red" else ""),
            Text(condition.status.value, style=style),
            Text(condition.reason, style=style),
            age(condition.last_transition_time, now),
            condition.message,
        )
    return table


def service_details(report: ServiceReport, now: datetime) -> Group:
    """Alerts, the summary panel, the last decisions (lastScale and Events) and the conditions."""
    parts: list[RenderableType] = list(_alerts(report))
    parts.append(
        Panel(
            _summary_grid(report, now),
            title=f"{report.namespace}/{report.name}",
            title_align="left",
            expand=False,
        )
    )
    parts.append(Text("Last scale decision (status.lastScale) and recent Events, newest first", style="bold"))
    parts.append(_decisions(report, now))
    if report.status.conditions:
        parts.append(Text("Conditions", style="bold"))
        parts.append(_conditions(report, now))
    return Group(*parts)


# --------------------------------------------------------------------------------------------
# JSON: the same facts, every key always present


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_json(report: ServiceReport, now: datetime) -> dict[str, Any]:
    """A JSON-ready dict with stable keys (null when unknown), for jq and scripts."""
    status, service = report.status, report.service
    ready = status.condition(ConditionType.READY)
    desired = _desired(report)
    autoscaling = service.spec.autoscaling if service is not None else None
    capacity = service.spec.capacity if service is not None else None
    planned = split_replicas(desired, capacity) if capacity is not None and desired is not None else None
    last = status.last_scale
    model = status.capacity_model
    return {
        "namespace": report.namespace,
        "name": report.name,
        "uid": report.uid,
        "problem": report.problem,
        "ready": {
            "status": ready.status.value if ready else None,
            "reason": ready.reason if ready else None,
            "message": ready.message if ready else None,
        },
        "degraded": (
            {"reason": degraded.reason, "message": degraded.message}
            if (degraded := _degraded(status)) is not None
            else None
        ),
        "replicas": {
            "ready": status.replicas,
            "desired": desired,
            "onDemand": status.on_demand_replicas,
            "spot": status.spot_replicas,
            "router": status.router_replicas,
        },
        "sizing": {
            "mode": sizing_mode(service) if service is not None else None,
            "specReplicas": service.spec.replicas if service is not None else None,
            "minReplicas": autoscaling.min_replicas if autoscaling is not None else None,
            "maxReplicas": autoscaling.max_replicas if autoscaling is not None else None,
        },
        "placement": {
            "spotEnabled": capacity.spot.enabled if capacity is not None else None,
            "onDemandBase": capacity.on_demand_base if capacity is not None else None,
            "spotMaxFraction": capacity.spot.max_fraction if capacity is not None else None,
            "plannedOnDemand": planned.on_demand if planned is not None else None,
            "plannedSpot": planned.spot if planned is not None else None,
        },
        "latency": {
            "observedMilliseconds": status.observed_latency_milliseconds,
            "targetMilliseconds": status.target_latency_milliseconds,
            "percentile": status.latency_percentile,
            "withinTarget": latency_within(status),
        },
        "rateRps": status.observed_rate_rps,
        "lastScale": (
            {
                "time": _time(last.time),
                "ageSeconds": _seconds_since(last.time, now),
                "from": last.from_,
                "to": last.to,
                "reason": last.reason,
            }
            if last is not None
            else None
        ),
        "events": [
            {
                "time": _time(event.time),
                "ageSeconds": _seconds_since(event.time, now),
                "type": event.type,
                "reason": event.reason,
                "message": event.message,
                "count": event.count,
            }
            for event in report.events
        ],
        "conditions": [
            {
                "type": condition.type,
                "status": condition.status.value,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": _time(condition.last_transition_time),
            }
            for condition in status.conditions
        ],
        "capacityModel": (
            {
                "coldStartSeconds": model.cold_start_seconds,
                "coldStartSource": model.cold_start_source,
                "maxBatch": model.max_batch,
                "maxBatchSource": model.max_batch_source,
            }
            if model is not None
            else None
        ),
        "endpoint": status.endpoint,
    }


# --------------------------------------------------------------------------------------------
# reading the cluster


def collect(
    reader: StatusReader, namespace: str | None, name: str | None, with_events: bool
) -> list[ServiceReport]:
    """The services asked for, sorted by namespace and name; with `name`, exactly that one
    (NotFound otherwise) with its Events. `with_events` also reads the Events of a whole list,
    in one call for all of them."""
    objects = reader.list_inference_services(namespace, name)
    if name is not None:
        assert namespace is not None
        if not objects:
            raise NotFound(namespace, name)
        obj = objects[0]
        involved = {"kind": KIND, "namespace": namespace, "name": name}
        if uid := (obj.get("metadata") or {}).get("uid"):
            involved["uid"] = uid  # not the Events of an earlier object of the same name
        return [report_from(obj, reader.list_events(namespace, involved))]
    events_by_object: dict[str, list[dict[str, Any]]] = {}
    if with_events and objects:
        for event in reader.list_events(namespace, {"kind": KIND}):
            involved_object = event.get("involvedObject") or {}
            key = (
                involved_object.get("uid")
                or f"{involved_object.get('namespace')}/{involved_object.get('name')}"
            )
            events_by_object.setdefault(key, []).append(event)
    reports = []
    for obj in objects:
        metadata = obj.get("metadata") or {}
        events = events_by_object.get(metadata.get("uid") or "", []) + events_by_object.get(
            f"{metadata.get('namespace')}/{metadata.get('name')}", []
        )
        reports.append(report_from(obj, events))
    return sorted(reports, key=lambda report: (report.namespace, report.name))


def connect(kubeconfig: str | None, context: str | None) -> Connected:
    """Credentials as kubectl finds them. The Kubernetes client is imported only here, so
    `tritonscale status --help` stays quick."""
    from tritonscale.clients.kube import KubeClient, KubeconfigError

    try:
        client, namespace = KubeClient.connect_like_kubectl(kubeconfig, context)
    except KubeconfigError as error:
        raise click.ClickException(str(error)) from None
    return Connected(client, namespace, client.connection().server)


# The innermost cause in urllib3's nested reprs: an errno, a TLS failure, or a timeout.
_CAUSE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+|\[SSL[^\]]*\][^'\")]*|timed out")


def api_error_message(error: TransientError | RejectedError, server: str) -> str:
    """One line: a network failure names the server and its cause, not urllib3's repr."""
    message = str(error).replace("\n", " ")
    if "Max retries exceeded" in message or ("Connection" in message and "Error(" in message):
        cause = _CAUSE.search(message)
        return f"cannot reach the Kubernetes API server at {server}: {cause.group(0) if cause else message}"
    return message


# --------------------------------------------------------------------------------------------
# the command


def _view(
    reports: list[ServiceReport], now: datetime, name: str | None, all_namespaces: bool, namespace: str
) -> RenderableType:
    if name is not None:
        return service_details(reports[0], now)
    if not reports:
        where = "any namespace" if all_namespaces else f"namespace {namespace}"
        return Text(f"No InferenceServices found in {where}.", style="dim")
    return service_table(reports, now, all_namespaces)


def _heading(interval_s: float, now: datetime) -> Text:
    return Text(f"every {interval_s:g}s, {now.astimezone():%H:%M:%S} (Ctrl-C to stop)", style="dim")


def _watch(
    console: Console,
    fetch: Callable[[], list[ServiceReport]],
    render: Callable[[list[ServiceReport], datetime], RenderableType],
    interval_s: float,
    server: str,
) -> None:
    """Redraw every `interval_s` until Ctrl-C. The first read fails the command (a wrong name or
    cluster should not loop); a later failed read keeps the last view under a notice."""
    now = datetime.now(UTC)
    last = render(fetch(), now)
    with Live(Group(_heading(interval_s, now), last), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval_s)
            now = datetime.now(UTC)
            try:
                last = render(fetch(), now)
            except (TransientError, RejectedError, click.ClickException) as error:
                message = (
                    error.format_message()
                    if isinstance(error, click.ClickException)
                    else api_error_message(error, server)
                )
                notice = Text(f"could not refresh: {message}", style="bold red")
                live.update(Group(_heading(interval_s, now), notice, last), refresh=True)
                continue
            live.update(Group(_heading(interval_s, now), last), refresh=True)


@click.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", help="Namespace (default: the kubeconfig context's, like kubectl).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=DEFAULT_INTERVAL_S,
    show_default=True,
    metavar="S",
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config).",
)
@click.option("--context", help="Kubeconfig context (default: the current one).")
def status(
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    watch: bool,
    interval: float,
    output: str,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Show InferenceServices: readiness, replicas on on-demand and spot, latency against the
    target, arrival rate, the last scale decisions with their reasons, and conditions.

    Without NAME, a table of the namespace's services (every namespace with -A); with NAME, the
    details of that one, with its recent Events. Exits 1 when NAME does not exist.
    """
    if name is not None and all_namespaces:
        raise click.UsageError("NAME cannot be looked up across all namespaces: use -n NAMESPACE")
    if watch and output == "json":
        raise click.UsageError("--watch draws a live view and cannot be combined with -o json")
    connected = connect(kubeconfig, context)
    scope = None if all_namespaces else (namespace or connected.namespace)
    shown_namespace = scope or ""

    def fetch() -> list[ServiceReport]:
        return collect(connected.reader, scope, name, with_events=output == "json")

    def render(reports: list[ServiceReport], now: datetime) -> RenderableType:
        return _view(reports, now, name, all_namespaces, shown_namespace)

    try:
        if output == "json":
            reports = fetch()
            now = datetime.now(UTC)
            payload: Any = (
                report_json(reports[0], now) if name is not None else [report_json(r, now) for r in reports]
            )
            click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
            return
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=max(console.width, PIPE_WIDTH))
        if watch:
            try:
                _watch(console, fetch, render, interval, connected.server)
            except KeyboardInterrupt:
                return
            return
        reports = fetch()
        view = render(reports, datetime.now(UTC))
        if not reports:
            Console(stderr=True, highlight=False).print(view)
        else:
            console.print(view)
    except (TransientError, RejectedError) as error:
        raise click.ClickException(api_error_message(error, connected.server)) from None
    except KeyboardInterrupt:
        sys.exit(130)
