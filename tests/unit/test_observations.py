"""Observation sources without servers: PromQL built safely, bad data marked missing."""

from __future__ import annotations

import math
from typing import Any

import pytest
import requests
import urllib3
from kubernetes.client.exceptions import ApiException
from prometheus_api_client.exceptions import PrometheusApiClientException

from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import (
    SERIES_QUERIES,
    VALUE_LABEL,
    PrometheusSource,
    TritonModelConfigs,
    TritonSource,
    _Counters,
    prometheus_duration_s,
    prometheus_queries,
    promql_string,
    url_host,
)

TARGET = ScalingTarget(
    namespace="vision",
    name="resnet",
    models=("resnet50", "re.sn"),
    percentile=95.0,
    pod_prefixes=("resnet-ondemand", "resnet-spot"),
    ready_replicas=3,
    pod_selector={"app.kubernetes.io/instance": "resnet", "app.kubernetes.io/component": "triton"},
)


def test_label_values_cannot_change_the_query() -> None:
    hostile = ScalingTarget(**{**TARGET.__dict__, "namespace": 'a"} or vector(1) #\\'})
    queries = prometheus_queries(hostile)
    assert promql_string('a"} or vector(1) #\\') == '"a\\"} or vector(1) #\\\\"'
    for query in queries.values():
        assert 'namespace="a\\"} or vector(1) #\\\\"' in query
        assert query.count("namespace=") == query.count('namespace="a\\"')


def test_model_names_are_matched_literally() -> None:
    rate = prometheus_queries(TARGET)["rate"]
    assert 'model=~"resnet50|re\\\\.sn"' in rate
    assert 'pod=~"resnet-ondemand-.*|resnet-spot-.*"' in rate
    assert "[1m]" in rate and "[30s]" in prometheus_queries(TARGET, window="30s")["rate"]


def test_latency_comes_from_every_pods_summary_and_what_it_served() -> None:
    queries = prometheus_queries(TARGET)
    assert "latency" not in queries
    assert (
        queries["summary"].startswith("nv_inference_request_summary_us{")
        and "quantile" not in queries["summary"]
    )
    assert queries["served"].startswith(
        "sum by (pod, model) (max by (pod, model, version) (rate(nv_inference_request_success{"
    )


def test_the_fleet_percentile_weights_each_pods_summary_by_what_it_served() -> None:
    """A fast busy pod and a slow quiet one: not their mean, not the slower one's value."""
    fast = {"pod": "resnet-ondemand-0", "model": "resnet50"}
    slow = {"pod": "resnet-spot-0", "model": "resnet50"}
    summary = [
        ({**fast, "quantile": q}, us)
        for q, us in (("0.5", 20e3), ("0.9", 40e3), ("0.95", 50e3), ("0.99", 70e3))
    ] + [
        ({**slow, "quantile": q}, us)
        for q, us in (("0.5", 200e3), ("0.9", 400e3), ("0.95", 500e3), ("0.99", 700e3))
    ]
    served = [(fast, 90.0), (slow, 10.0)]
    observation = source_with({**GOOD, "summary": summary, "served": served}).observe(TARGET)
    assert observation.latency_ms is not None and 70.0 < observation.latency_ms < 500.0
    alone = source_with({**GOOD, "summary": summary[:4], "served": served[:1]}).observe(TARGET)
    assert alone.latency_ms == pytest.approx(50.0)


def test_overrides_replace_the_default_queries_with_placeholders_filled() -> None:
    target = ScalingTarget(**{**TARGET.__dict__, "latency_query": 'my_p95{ns="$namespace",svc="$name"}'})
    assert prometheus_queries(target)["latency"] == 'my_p95{ns="vision",svc="resnet"}'


class FakePrometheus:
    """Answers the source's combined query: one series per part that has a value, labelled with
    its key, as Prometheus answers `label_replace(max(q), ...) or ...`."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def custom_query(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        self.queries.append(query)
        result = []
        for key, part in prometheus_queries(TARGET).items():
            if key in SERIES_QUERIES:
                if f"label_replace({part}, " not in query:
                    continue
                for labels, value in self.answers.get(key, []):
                    result.append({"metric": {**labels, VALUE_LABEL: key}, "value": [0, str(value)]})
                continue
            if f"max({part})" not in query:
                continue
            value = self.answers.get(key)
            if isinstance(value, Exception):
                raise value
            if value is not None:
                result.append({"metric": {VALUE_LABEL: key}, "value": [0, str(value)]})
        return result


def source_with(answers: dict[str, Any]) -> PrometheusSource:
    source = PrometheusSource("http://prometheus.test:9090")
    source.client = FakePrometheus(answers)  # type: ignore[assignment]
    return source


POD = {"pod": "resnet-ondemand-0", "model": "resnet50"}
GOOD: dict[str, Any] = {
    "rate": 310.0,
    "summary": [({**POD, "quantile": "0.5"}, 60e3), ({**POD, "quantile": "0.95"}, 142e3)],
    "served": [(POD, 310.0)],
    "compute": 25.0,
    "batch": 2.0,
    "pending": 3.0,
    "age": 4.0,
}


def test_each_autoscaling_worker_keeps_a_connection_to_prometheus() -> None:
    """The library's pool keeps 10; the operator's 16 workers dropped and reopened the rest."""
    url = "http://prometheus.test:9090"
    adapter = PrometheusSource(url, connections=16).client._session.get_adapter(url + "/api/v1/query")
    assert adapter._pool_maxsize == 16  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 1  # the one quick retry is kept


def test_a_full_answer_is_an_observation_from_one_request() -> None:
    source = source_with(GOOD)
    observation = source.observe(TARGET)
    assert len(source.client.queries) == 1  # type: ignore[attr-defined]
    assert observation.usable
    assert (observation.arrival_rate_rps, observation.latency_ms, observation.average_batch) == pytest.approx(
        (310.0, 142.0, 2.0)
    )
    assert observation.sample_age_s == 4.0 and observation.ready_replicas == 3
    # A rate over the last minute of a sample 4 s old is the rate of 34 s ago.
    assert observation.rate_age_s == pytest.approx(34.0)
    assert PrometheusSource("http://prometheus.test:9090", window="90s").window_s == 90.0


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60.0), ("90s", 90.0), ("1m30s", 90.0), ("500ms", 0.5)])
def test_prometheus_durations_are_read_as_prometheus_writes_them(text: str, seconds: float) -> None:
    assert prometheus_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "60", "1x", "1m 30s", "-1m", "0s"])
def test_a_window_that_is_no_prometheus_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        PrometheusSource("http://prometheus.test:9090", window=text)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ({**GOOD, "rate": None}, "no Triton request metrics"),
        ({**GOOD, "rate": float("nan")}, "no Triton request metrics"),
        ({**GOOD, "age": 900.0}, "900s old"),
        (
            {**GOOD, "summary": [({**POD, "quantile": "0.95"}, float("nan"))], "mean_latency": None},
            "no latency samples",
        ),
        (
            {**GOOD, "rate": requests.exceptions.ConnectionError("refused")},
            "Prometheus at http://prometheus.test:9090 unreachable",
        ),
    ],
)
def test_bad_answers_are_missing_never_zero(answers: dict[str, Any], reason: str) -> None:
    observation = source_with(answers).observe(TARGET)
    assert not observation.usable
    assert observation.missing is not None and reason in observation.missing


def test_without_a_summary_the_mean_stands_in() -> None:
    observation = source_with({**GOOD, "summary": [], "mean_latency": 60.0}).observe(TARGET)
    assert observation.latency_ms == 60.0


def test_triton_source_turns_counters_into_rates_between_reads() -> None:
    clock = iter([0.0, 10.0, 20.0, 30.0])
    readings: dict[str, list[_Counters]] = {
        "10.0.0.1": [
            _Counters(
                0, 100, 1e9, 2e9, 100, 100, batches={1.0: (100, 2e9)}, success_by_model={"resnet50": 100}
            ),
            _Counters(
                10,
                600,
                6e9,
                1.2e10,
                600,
                1100,
                2,
                batches={1.0: (200, 4e9), 3.0: (100, 8e9)},
                success_by_model={"resnet50": 600},
                summaries={"resnet50": {0.95: 80.0}},
            ),
        ],
        "10.0.0.2": [  # restarted
            _Counters(0, 50, 0, 0, 50, 50),
            _Counters(
                10,
                10,
                0,
                0,
                10,
                10,
                1,
                success_by_model={"resnet50": 10},
                summaries={"resnet50": {0.95: 90.0}},
            ),
        ],
    }
    source = TritonSource(lambda target: sorted(readings), clock=lambda: next(clock))
    source._read = lambda host, target: readings[host].pop(0)  # type: ignore[method-assign]
    first = source.observe(TARGET)
    assert first.missing and "first sample" in first.missing
    second = source.observe(TARGET)
    assert second.usable
    # The restarted replica's delta is unknown: the other's rate stands for both, flagged.
    assert second.arrival_rate_rps == pytest.approx(100.0)
    assert second.partial == "statistics from 1 of 2 ready pods"
    assert second.latency_ms == pytest.approx(80.0)
    assert second.mean_compute_ms == pytest.approx(20.0)
    assert second.average_batch == pytest.approx(2.0)
    assert second.pending_requests == 3 and second.ready_replicas == 2
    assert second.batch_profile == ((1.0, 20.0, 100.0), (3.0, 80.0, 100.0))
    # Counted over the 10 s since the last read: the rate of 5 s ago.
    assert second.rate_age_s == pytest.approx(5.0)


def test_a_pod_that_does_not_answer_leaves_a_partial_observation_scaled_to_every_pod() -> None:
    clock = iter([0.0, 10.0, 20.0, 30.0])
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    reads = {
        h: [
            _Counters(0, 0, 0, 0, 0, 0),
            _Counters(
                10,
                400,
                4e9,
                8e9,
                400,
                400,
                2,
                success_by_model={"resnet50": 400},
                summaries={"resnet50": {0.95: 70.0}},
            ),
        ]
        for h in hosts
    }

    def read(host: str, target: ScalingTarget) -> _Counters:
        if host == "10.0.0.3" and not reads[host]:
            raise ConnectionRefusedError("connection refused")
        return reads[host].pop(0)

    source = TritonSource(lambda target: hosts, clock=lambda: next(clock))
    source._read = read  # type: ignore[method-assign]
    reads["10.0.0.3"].pop()  # it answers the first read only
    source.observe(TARGET)
    observation = source.observe(TARGET)
    assert observation.usable
    assert observation.arrival_rate_rps == pytest.approx(3 * 40.0)  # two measured, scaled to three
    assert observation.latency_ms == pytest.approx(70.0)
    assert observation.pending_requests == pytest.approx(3 * 2.0)  # two in queue on each
    assert observation.partial is not None
    assert observation.partial.startswith("statistics from 2 of 3 ready pods; 10.0.0.3")


def test_triton_source_without_ready_pods_is_missing() -> None:
    observation = TritonSource(lambda target: []).observe(TARGET)
    assert observation.missing == "no ready Triton pods" and math.isinf(observation.sample_age_s)


def test_an_unreachable_prometheus_is_not_asked_again_for_a_while_and_said_briefly() -> None:
    """The client's error quotes the whole URL-encoded query; the status gets a few words."""
    now = [0.0]
    encoded = "/api/v1/query?query=" + "sum%28rate%28nv_inference_request_success%7B" * 12
    failure = requests.exceptions.ConnectionError(
        f"HTTPConnectionPool(host='prometheus.monitoring', port=9090): Max retries exceeded with url: {encoded} "
        "(Caused by NameResolutionError(\"Failed to resolve 'prometheus.monitoring'\"))"
    )
    source = PrometheusSource(
        "http://prometheus.monitoring:9090", retry_after_s=30.0, monotonic=lambda: now[0]
    )
    fake = FakePrometheus({**GOOD, "rate": failure})
    calls: list[str] = []

    def counted(query: str, params: Any = None) -> list[dict[str, Any]]:
        calls.append(query)
        return fake.custom_query(query, params)

    source.client = type("Client", (), {"custom_query": staticmethod(counted)})()  # type: ignore[assignment]
    first = source.observe(TARGET)
    assert (
        first.missing
        == "Prometheus at http://prometheus.monitoring:9090 unreachable: host name does not resolve"
    )
    asked = len(calls)
    now[0] = 29.0
    assert source.observe(TARGET).missing == first.missing
    assert len(calls) == asked, "asked an unreachable server again inside the back-off"
    now[0] = 31.0
    fake.answers = GOOD
    assert source.observe(TARGET).usable
    assert len(calls) > asked


def test_a_refused_query_reports_prometheus_own_words_without_the_query() -> None:
    error = PrometheusApiClientException(
        'HTTP Status Code 400 (b\'{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}\')'
    )
    observation = source_with({**GOOD, "rate": error}).observe(TARGET)
    assert observation.missing == "Prometheus refused a query: 1:5: parse error: unexpected"


def test_listing_the_triton_pods_failing_is_missing_metrics_not_an_error() -> None:
    """The autoscaler holds and says why, as for any missing metrics; raised, the tick died and
    status kept saying the metrics were fresh."""
    for error, why in (
        (ApiException(status=403, reason="Forbidden"), "HTTP 403"),
        (urllib3.exceptions.MaxRetryError(None, "/api", "Connection refused"), "connection refused"),
    ):

        def endpoints(target: ScalingTarget, error: Exception = error) -> list[str]:
            raise error

        observation = TritonSource(endpoints).observe(TARGET)
        assert observation.missing == f"listing the Triton pods failed ({why})"


def test_ipv6_pods_are_read_at_bracketed_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def get(url: str, timeout: float) -> Any:
        asked.append(url)
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "get", get)
    TritonSource(lambda target: ["fd00::7"]).observe(TARGET)
    TritonModelConfigs()(TARGET, ["fd00::7"])
    assert asked and all(url.startswith("http://[fd00::7]:") for url in asked), asked
    assert {urllib3.util.parse_url(url).host for url in asked} == {"[fd00::7]"}
    assert url_host("10.0.0.1") == "10.0.0.1"
