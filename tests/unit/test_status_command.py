"""`tritonscale status`: the views from sample objects and Events, and the command on a fake reader."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console, RenderableType

from tests.builders import make_inference_service
from tritonscale.cli import main
from tritonscale.cli import status as status_command
from tritonscale.cli.status import (
    Connected,
    ServiceReport,
    age,
    api_error_message,
    latency_cell,
    recent_events,
    report_from,
    report_json,
    service_details,
    service_table,
)
from tritonscale.errors import RejectedError, TransientError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _condition(
    kind: str, status: str, reason: str, message: str = "", seconds_ago: float = 600
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _ago(seconds_ago),
    }


def _event(
    reason: str,
    message: str,
    seconds_ago: float,
    kind: str = "Normal",
    uid: str = "uid-bert",
    version: int = 1,
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"ev-{reason}-{version}", "resourceVersion": str(version)},
        "involvedObject": {"kind": "InferenceService", "uid": uid, "namespace": "nlp", "name": "bert"},
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": _ago(seconds_ago),
        "count": 1,
    }


def resnet() -> dict[str, Any]:
    """Ready, replicas set by hand, 1 on-demand + 3 spot, no latency objective."""
    obj = make_inference_service(
        "resnet",
        "vision",
        metadata__uid="uid-resnet",
        spec__replicas=4,
        spec__capacity={
            "nodePoolPreset": "karpenter",
            "onDemandBase": 1,
            "spot": {"enabled": True, "maxFraction": 0.75},
        },
    )
    obj["status"] = {
        "replicas": 4,
        "desiredReplicas": 4,
        "onDemandReplicas": 1,
        "spotReplicas": 3,
        "routerReplicas": 2,
        "endpoint": "http://resnet.vision.svc:8000",
        "conditions": [
            _condition("Ready", "True", "Serving", "4/4 Triton replicas ready, 2/2 routers ready"),
            _condition("Progressing", "False", "RolledOut", "every Deployment is up to date and ready"),
            _condition("Degraded", "False", "AsExpected"),
        ],
    }
    return obj


def bert() -> dict[str, Any]:
    """Autoscaled, over its target and scaling up: not Ready yet."""
    obj = make_inference_service(
        "bert",
        "nlp",
        metadata__uid="uid-bert",
        spec__autoscaling={"minReplicas": 1, "maxReplicas": 20, "latency": {"targetMilliseconds": 100}},
    )
    obj["status"] = {
        "replicas": 2,
        "desiredReplicas": 4,
        "onDemandReplicas": 2,
        "spotReplicas": 0,
        "routerReplicas": 2,
        "observedLatencyMilliseconds": 140.4,
        "targetLatencyMilliseconds": 100,
        "latencyPercentile": 95,
        "observedRateRps": 80.25,
        "lastScale": {
            "time": _ago(180),
            "from": 2,
            "to": 4,
            "reason": "p95 140 ms > 100 ms at 80 req/s; model says 4; scaling up 2 -> 4",
        },
        "capacityModel": {
            "coldStartSeconds": 42.0,
            "coldStartSource": "median of 3 pods' creation to Ready",
            "maxBatch": 8,
            "maxBatchSource": "dynamic batching, max_batch_size 8 (model bert-base)",
        },
        "endpoint": "http://bert.nlp.svc:8000",
        "conditions": [
            _condition(
                "Ready", "False", "ScalingUp", "2/4 Triton replicas ready; the others are starting", 170
            ),
            _condition("MetricsAvailable", "True", "Observed", "from Prometheus"),
            _condition("ScalingActive", "True", "Active", "the autoscaler sets the replicas"),
        ],
    }
    return obj


def echo() -> dict[str, Any]:
    """The minimal example: one replica, no spot, no autoscaling, no lastScale."""
    obj = make_inference_service("echo", "default", metadata__uid="uid-echo", spec__replicas=1)
    obj["status"] = {
        "replicas": 1,
        "desiredReplicas": 1,
        "onDemandReplicas": 1,
        "spotReplicas": 0,
        "routerReplicas": 2,
        "conditions": [
            _condition("Ready", "True", "Serving", "1/1 Triton replicas ready, 2/2 routers ready")
        ],
    }
    return obj


NAME_CONFLICT = (
    "ConfigMap clash-router exists and is not owned by this InferenceService (owner: none); "
    "nothing was applied"
)


def clash() -> dict[str, Any]:
    """A child's name is taken: Degraded with NameConflict, nothing applied."""
    obj = make_inference_service("clash", "default", metadata__uid="uid-clash")
    obj["status"] = {
        "replicas": 0,
        "conditions": [
            _condition("Ready", "False", "NoReadyReplicas", "0/2 Triton replicas ready, 0/0 routers ready"),
            _condition("Progressing", "False", "NameConflict", "the current spec was not applied"),
            _condition("Degraded", "True", "NameConflict", NAME_CONFLICT, 30),
        ],
    }
    return obj


def _text(renderable: RenderableType, width: int = 220) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _rows(text: str) -> dict[str, dict[str, str]]:
    """The table's rows by NAME, cut at the header's column starts (cells may hold spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    tokens = list(re.finditer(r"\S+", header))  # LAST SCALE is passed in as LAST_SCALE
    names, starts = [t.group(0) for t in tokens], [t.start() for t in tokens]
    rows = {}
    for line in lines[1:]:
        bounds = [*starts[1:], None]
        cells = {n: line[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)}
        rows[cells["NAME"]] = cells
    return rows


# --------------------------------------------------------------------------------------------
# the table


def test_the_table_has_a_row_per_service_with_replicas_latency_and_the_last_decision() -> None:
    reports = [report_from(obj) for obj in (resnet(), bert(), echo(), clash())]
    text = _text(service_table(reports, NOW, all_namespaces=True)).replace("LAST SCALE", "LAST_SCALE")
    assert text.splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "READY",
        "REPLICAS",
        "ON-DEMAND",
        "SPOT",
        "LATENCY/TARGET",
        "RATE",
        "LAST_SCALE",
    ]
    rows = _rows(text)
    assert rows["resnet"] == {
        "NAMESPACE": "vision",
        "NAME": "resnet",
        "READY": "True",
        "REPLICAS": "4/4",
        "ON-DEMAND": "1",
        "SPOT": "3",
        "LATENCY/TARGET": "-",
        "RATE": "-",
        "LAST_SCALE": "-",
    }
    assert rows["bert"]["READY"] == "False (ScalingUp)"
    assert rows["bert"]["REPLICAS"] == "2/4"
    assert rows["bert"]["SPOT"] == "-"  # spot is off for bert: not a count of 0
    assert rows["bert"]["LATENCY/TARGET"] == "140.4/100ms p95"
    assert rows["bert"]["RATE"] == "80.2/s"
    assert rows["bert"]["LAST_SCALE"] == "2->4 3m ago: p95 140 ms > 100 ms at 80 req/s"
    assert rows["clash"]["READY"] == "False (NoReadyReplicas) Degraded: NameConflict"
    assert rows["clash"]["REPLICAS"] == "0/2"  # desired from spec.replicas until the status says


def test_namespace_column_only_with_all_namespaces() -> None:
    text = _text(service_table([report_from(echo())], NOW, all_namespaces=False))
    assert text.splitlines()[0].split()[0] == "NAME"


def test_latency_is_green_within_the_target_and_red_over_it() -> None:
    over = report_from(bert()).status
    within = over.model_copy(update={"observed_latency_milliseconds": 87.0})
    assert "red" in str(latency_cell(over).style)
    assert str(latency_cell(within).style) == "green"
    assert latency_cell(within).plain == "87/100ms p95"
    no_objective = report_from(resnet()).status
    assert latency_cell(no_objective).plain == "-"


# --------------------------------------------------------------------------------------------
# the details of one service


def test_details_of_a_ready_service_explain_its_split_over_on_demand_and_spot() -> None:
    text = _text(service_details(report_from(resnet()), NOW))
    assert "vision/resnet" in text
    assert "True Serving: 4/4 Triton replicas ready, 2/2 routers ready (for 10m)" in text
    assert "4/4 Triton replicas ready  on-demand 1, spot 3, routers 2" in text
    assert "manual: spec.replicas 4 (autoscaling off)" in text
    assert "onDemandBase 1, then at most 75% on spot: 4 = 1 on-demand + 3 spot" in text
    assert "no latency objective running" in text
    assert "http://resnet.vision.svc:8000 (gRPC on port 8001)" in text
    assert "no scale decision or Event yet" in text
    assert "Degraded" in text and "AsExpected" in text  # in the conditions, not as an alert
    assert "Degraded: " not in text


def test_details_of_a_service_scaling_up_show_the_decisions_newest_first() -> None:
    events = [
        _event("Reconciled", "applied generation 1: 8 objects, 2 Triton replicas desired", 900, version=3),
        _event("Ready", "2/2 Triton replicas ready", 800, version=4),
        _event(
            "ScaledUp", "p95 140 ms > 100 ms at 80 req/s; model says 4; scaling up 2 -> 4", 180, version=9
        ),
        _event("MetricsUnavailable", "metrics missing (no samples)", 400, kind="Warning", version=6),
        _event("MetricsAvailable", "metrics from prometheus are back", 300, version=7),
        _event("NotReady", "ScalingUp: 2/4 Triton replicas ready", 180, kind="Warning", version=10),
    ]
    report = report_from(bert(), events)
    assert [event.reason for event in report.events] == [
        "NotReady",  # same second as ScaledUp, written after it
        "ScaledUp",
        "MetricsAvailable",
        "MetricsUnavailable",
        "Ready",
    ]
    text = _text(service_details(report, NOW))
    assert "False ScalingUp: 2/4 Triton replicas ready; the others are starting" in text
    assert "autoscaler: between 1..20 replicas, holding p95 <= 100 ms" in text
    assert "all 4 on on-demand (spot off)" in text
    assert "p95 140.4 ms vs target 100 ms OVER TARGET" in text
    assert "80.2 req/s" in text
    assert "42 s (median of 3 pods' creation to Ready)" in text
    assert "8 (dynamic batching, max_batch_size 8 (model bert-base))" in text
    assert "lastScale" in text and "2 -> 4: p95 140 ms > 100 ms at 80 req/s; model says 4" in text
    assert "3m" in text and "MetricsUnavailable" in text and "Reconciled" not in text  # only 5


def test_details_of_a_degraded_service_put_the_name_conflict_first() -> None:
    text = _text(service_details(report_from(clash()), NOW))
    first_lines = "\n".join(text.splitlines()[:4])
    assert "Degraded: NameConflict" in first_lines
    assert "ConfigMap clash-router exists and is not owned" in first_lines
    assert text.index("Degraded: NameConflict") < text.index("default/clash")
    assert "Progressing" in text and "NameConflict" in text


def test_details_of_a_service_whose_rates_disagree_say_the_feedback_is_paused_first() -> None:
    paused = (
        "40 ms at 6000 req/s from prometheus; model feedback paused for 130s: the routers count "
        "100 req/s, the metrics 6000, more than 2x apart; does spec.autoscaling.metrics.rateQuery "
        "return requests per second of this service's pods?"
    )
    obj = bert()
    conditions = obj["status"]["conditions"]
    conditions[1] = _condition("MetricsAvailable", "True", "RatesDisagree", paused)
    text = _text(service_details(report_from(obj), NOW))
    first_lines = "\n".join(text.splitlines()[:4])
    assert "Model feedback paused: RatesDisagree" in first_lines
    assert "the routers count 100 req/s, the metrics 6000" in first_lines
    # Fresh metrics are no alert.
    fresh = _text(service_details(report_from(bert()), NOW))
    assert "Model feedback paused" not in fresh and "Metrics unavailable" not in fresh


def test_an_object_that_no_longer_validates_is_still_shown_with_the_problem() -> None:
    broken = echo()
    broken["spec"]["replicas"] = -1
    report = report_from(broken, [_event("InvalidSpec", "spec.replicas: must be >= 0", 5, kind="Warning")])
    assert [event.reason for event in report.events] == ["InvalidSpec"]
    assert report.service is None and report.problem is not None and "spec.replicas" in report.problem
    assert report.status.replicas == 1
    assert "Invalid" in _text(service_table([report], NOW, all_namespaces=False))
    assert "not a valid InferenceService" in _text(service_details(report, NOW))
    assert report_json(report, NOW)["sizing"]["mode"] is None


# --------------------------------------------------------------------------------------------
# JSON


def _shape(record: dict[str, Any]) -> dict[str, Any]:
    """The keys of a record and of its fixed-shape parts (null or not)."""
    return {key: sorted(value) if isinstance(value, dict) else None for key, value in record.items()}


FIXED_SHAPE = ("ready", "replicas", "sizing", "placement", "latency")


def test_json_has_the_same_keys_for_every_service_and_says_why() -> None:
    records = [
        report_json(
            report_from(obj, [_event("ScaledUp", "up", 60)] if obj["metadata"]["name"] == "bert" else []), NOW
        )
        for obj in (resnet(), bert(), echo(), clash())
    ]
    json.loads(json.dumps(records))  # plain JSON types only
    for record in records:
        assert list(record) == list(records[0])
        assert {key: _shape(records[0])[key] for key in FIXED_SHAPE} == {
            key: _shape(record)[key] for key in FIXED_SHAPE
        }
    assert list(records[0]) == [
        "namespace",
        "name",
        "uid",
        "problem",
        "ready",
        "degraded",
        "replicas",
        "sizing",
        "placement",
        "latency",
        "rateRps",
        "lastScale",
        "events",
        "conditions",
        "capacityModel",
        "endpoint",
    ]
    resnet_record, bert_record, _, clash_record = records
    assert resnet_record["replicas"] == {"ready": 4, "desired": 4, "onDemand": 1, "spot": 3, "router": 2}
    assert resnet_record["placement"] == {
        "spotEnabled": True,
        "onDemandBase": 1,
        "spotMaxFraction": 0.75,
        "plannedOnDemand": 1,
        "plannedSpot": 3,
    }
    assert resnet_record["sizing"] == {
        "mode": "manual",
        "specReplicas": 4,
        "minReplicas": None,
        "maxReplicas": None,
    }
    assert resnet_record["latency"]["withinTarget"] is None
    assert bert_record["latency"] == {
        "observedMilliseconds": 140.4,
        "targetMilliseconds": 100.0,
        "percentile": 95.0,
        "withinTarget": False,
    }
    assert bert_record["lastScale"] == {
        "time": _ago(180),
        "ageSeconds": 180,
        "from": 2,
        "to": 4,
        "reason": "p95 140 ms > 100 ms at 80 req/s; model says 4; scaling up 2 -> 4",
    }
    assert bert_record["events"] == [
        {
            "time": _ago(60),
            "ageSeconds": 60,
            "type": "Normal",
            "reason": "ScaledUp",
            "message": "up",
            "count": 1,
        }
    ]
    assert bert_record["ready"] == {
        "status": "False",
        "reason": "ScalingUp",
        "message": "2/4 Triton replicas ready; the others are starting",
    }
    assert bert_record["capacityModel"]["maxBatch"] == 8
    assert clash_record["degraded"] == {"reason": "NameConflict", "message": NAME_CONFLICT}
    assert resnet_record["degraded"] is None


def test_events_are_newest_first_and_at_most_five() -> None:
    events = [_event("ScaledUp", f"step {i}", seconds_ago=100 - i, version=i) for i in range(8)]
    events.append({"reason": "Undated", "message": "no time at all"})
    assert [e.message for e in recent_events(events)] == [f"step {i}" for i in (7, 6, 5, 4, 3)]
    series = {
        "reason": "Flapping",
        "series": {"count": 4, "lastObservedTime": _ago(1)},
        "eventTime": _ago(90),
    }
    assert recent_events([series, *events])[0].count == 4


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s"),
        (119, "119s"),
        (192, "3m12s"),
        (600, "10m"),
        (2 * 3600 + 59 * 60, "179m"),
        (5 * 3600 + 180, "5h3m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (12 * 86400, "12d"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_a_connection_failure_is_one_line_naming_the_server() -> None:
    error = TransientError(
        "list InferenceServices in default: HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries "
        "exceeded with url: /apis/tritonscale.io/v1alpha1/namespaces/default/inferenceservices (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))"
    )
    assert api_error_message(error, "https://127.0.0.1:1") == (
        "cannot reach the Kubernetes API server at https://127.0.0.1:1: [Errno 111] Connection refused"
    )
    forbidden = RejectedError("list InferenceServices in all namespaces: inferenceservices is forbidden")
    assert api_error_message(forbidden, "https://x") == str(forbidden)


# --------------------------------------------------------------------------------------------
# the command, on a fake reader


class FakeReader:
    def __init__(self, objects: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> None:
        self.objects = objects
        self.events = events or []
        self.event_queries: list[tuple[str | None, dict[str, str]]] = []
        self.connections: list[tuple[str | None, str | None]] = []  # (kubeconfig, context)
        self.failure: Exception | None = None

    def list_inference_services(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        if self.failure is not None:
            raise self.failure
        return [
            o
            for o in self.objects
            if namespace in (None, o["metadata"]["namespace"]) and name in (None, o["metadata"]["name"])
        ]

    def list_events(self, namespace: str | None, involved_object: Mapping[str, str]) -> list[dict[str, Any]]:
        self.event_queries.append((namespace, dict(involved_object)))
        return [
            e
            for e in self.events
            if all(e["involvedObject"].get(key) == value for key, value in involved_object.items())
        ]


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> FakeReader:
    fake = FakeReader(
        [resnet(), bert(), echo(), clash()],
        [
            _event("ScaledUp", "p95 140 ms > 100 ms; scaling up 2 -> 4", 180),
            _event("Old", "x", 50, uid="uid-gone"),
        ],
    )

    def connect(kubeconfig: str | None, context: str | None) -> Connected:
        fake.connections.append((kubeconfig, context))
        return Connected(fake, "default", "https://127.0.0.1:6443")

    monkeypatch.setattr(status_command, "connect", connect)
    return fake


def test_a_missing_service_exits_1_saying_so(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "nope", "-n", "nlp"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: inferenceservice nlp/nope not found"
    assert reader.event_queries == []


def test_an_unreachable_server_is_one_line_without_a_traceback(reader: FakeReader) -> None:
    reader.failure = TransientError(
        "list InferenceServices in default: HTTPSConnectionPool(host='10.0.0.1', port=443): Max retries exceeded "
        "(Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object at 0x7f>, "
        "'Connection to 10.0.0.1 timed out. (connect timeout=20.0)'))"
    )
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: cannot reach the Kubernetes API server at https://127.0.0.1:6443: timed out"
    ]
    assert "Traceback" not in result.output


def test_json_of_one_service_carries_its_events_matched_by_uid(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "bert", "-n", "nlp", "-o", "json", "--context", "prod"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["name"] == "bert" and record["replicas"]["desired"] == 4
    assert [e["reason"] for e in record["events"]] == ["ScaledUp"]
    assert reader.event_queries == [
        ("nlp", {"kind": "InferenceService", "namespace": "nlp", "name": "bert", "uid": "uid-bert"})
    ]
    assert reader.connections == [(None, "prod")]
    assert "\x1b[" not in result.stdout  # no colour codes


def test_json_of_all_namespaces_is_a_sorted_list_with_events_read_once(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "-A", "-o", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [(r["namespace"], r["name"]) for r in records] == [
        ("default", "clash"),
        ("default", "echo"),
        ("nlp", "bert"),
        ("vision", "resnet"),
    ]
    assert [len(r["events"]) for r in records] == [0, 0, 1, 0]
    assert reader.event_queries == [(None, {"kind": "InferenceService"})]


def test_the_table_lists_the_contexts_namespace_by_default(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout.replace("LAST SCALE", "LAST_SCALE"))
    assert sorted(rows) == ["clash", "echo"]
    assert reader.event_queries == []  # the table needs no Events


def test_an_empty_namespace_says_so(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "-n", "empty"])
    assert result.exit_code == 0
    assert "No InferenceServices found in namespace empty." in result.stderr
    assert CliRunner().invoke(main, ["status", "-n", "empty", "-o", "json"]).stdout.strip() == "[]"


def test_the_details_view_of_one_service(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "bert", "-n", "nlp"])
    assert result.exit_code == 0, result.output
    assert "nlp/bert" in result.stdout and "ScaledUp" in result.stdout and "ScalingUp" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "-w", "-o", "json"], "cannot be combined with -o json"),
        (["status", "bert", "-A"], "across all namespaces"),
    ],
)
def test_contradictory_options_are_refused(reader: FakeReader, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.stderr


def test_watch_redraws_until_ctrl_c_and_exits_0(reader: FakeReader, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            reader.failure = TransientError("list InferenceServices in nlp: Service Unavailable")
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("tritonscale.cli.status.time.sleep", sleep)
    result = CliRunner().invoke(main, ["status", "bert", "-n", "nlp", "--watch", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5, 0.5]
    assert "could not refresh: list InferenceServices in nlp: Service Unavailable" in result.stdout
    assert "nlp/bert" in result.stdout


def test_watch_fails_at_once_when_the_first_read_does(reader: FakeReader) -> None:
    result = CliRunner().invoke(main, ["status", "nope", "-n", "nlp", "--watch"])
    assert result.exit_code == 1 and "inferenceservice nlp/nope not found" in result.stderr


def test_status_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "status" in result.stdout and "latency vs target" in result.stdout


def test_report_keeps_namespace_and_name_of_what_it_read() -> None:
    report = report_from(bert())
    assert isinstance(report, ServiceReport)
    assert (report.namespace, report.name, report.uid) == ("nlp", "bert", "uid-bert")


# --------------------------------------------------------------------------------------------
# the real client's connection, without a cluster

UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- {name: nowhere, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}
users:
- {name: someone, user: {token: not-a-secret}}
contexts:
- {name: team, context: {cluster: nowhere, user: someone, namespace: team-ns}}
- {name: other, context: {cluster: nowhere, user: someone}}
current-context: team
"""


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(UNREACHABLE_KUBECONFIG)
    return path


def test_the_namespace_defaults_to_the_contexts_like_kubectl(unreachable_kubeconfig: Path) -> None:
    assert status_command.connect(str(unreachable_kubeconfig), None).namespace == "team-ns"
    assert status_command.connect(str(unreachable_kubeconfig), "other").namespace == "default"
    assert status_command.connect(str(unreachable_kubeconfig), None).server == "https://127.0.0.1:1"


def test_a_refused_connection_is_one_line(unreachable_kubeconfig: Path) -> None:
    result = CliRunner().invoke(main, ["status", "-A", "--kubeconfig", str(unreachable_kubeconfig)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: cannot reach the Kubernetes API server at https://127.0.0.1:1: [Errno 111] Connection refused"
    ]


def test_kubeconfig_problems_are_one_line(
    unreachable_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = CliRunner().invoke(main, ["status", "--kubeconfig", str(tmp_path / "none")])
    assert (missing.exit_code, missing.stderr.strip()) == (
        1,
        f"Error: kubeconfig {tmp_path / 'none'} not found",
    )
    context = CliRunner().invoke(
        main, ["status", "--kubeconfig", str(unreachable_kubeconfig), "--context", "prod"]
    )
    assert context.exit_code == 1
    assert context.stderr.strip() == f"Error: context 'prod' not found in {unreachable_kubeconfig}"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    nowhere = CliRunner().invoke(main, ["status"])
    assert nowhere.exit_code == 1
    assert nowhere.stderr.strip() == (
        f"Error: no kubeconfig at {tmp_path / 'none'} and not running in a pod: pass --kubeconfig"
    )
