"""Where the autoscaler's observations come from: Prometheus, or each Triton replica directly.

Both sources return one `Observation`. Anything they cannot trust (no series, NaN, stale
samples, an unreachable server, the first sample of a rate) yields an observation marked
missing with the reason, never zeros, so the autoscaler holds its replicas.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_client.parser import text_string_to_metric_families
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tritonscale.api.observation import Observation, ScalingTarget, finite_or_none
from tritonscale.policy.fleet_percentile import ReplicaLatency, fleet_percentile_ms
from tritonscale.policy.service_facts import ready_pod_addresses
from tritonscale.ports import HTTP_PORT, METRICS_PORT

if TYPE_CHECKING:  # the watch's module imports the kubernetes client: not for `--help`
    from tritonscale.clients.pod_watch import ManagedPods

log = logging.getLogger(__name__)

# RE2 metacharacters, escaped when a name becomes part of a =~ regex.
_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding exactly `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    # Prometheus's lexer refuses a raw U+FFFD inside quotes ("invalid UTF-8 rune"); escaped is fine.
    escaped = escaped.replace("\ufffd", "\\ufffd")
    return f'"{escaped}"'


def promql_regex_alternatives(values: Sequence[str], suffix: str = "") -> str:
    """A =~ matcher value matching exactly one of `values` (each followed by `suffix` regex)."""
    return promql_string("|".join(_REGEX_SPECIAL.sub(r"\\\1", value) + suffix for value in values))


_DURATION_UNITS_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def prometheus_duration_s(text: str) -> float:
    """Seconds in a Prometheus duration such as `1m`, `90s` or `1m30s`; ValueError otherwise."""
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration such as 30s, 1m or 1m30s")
    seconds = sum(int(number) * _DURATION_UNITS_S[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def prometheus_queries(target: ScalingTarget, window: str = "1m") -> dict[str, str]:
    """The PromQL the Prometheus source runs, label values escaped so no name changes a query.
    Each is one value, except those in SERIES_QUERIES (a series per pod and model).

    Series are selected by the `namespace` and `pod` labels (set by the usual kubernetes-pods
    scrape job and by PodMonitors) and the `model` label Triton sets; the model's own, not its
    variants' (their processes serve under the model's name, and the chart's PodMonitor labels
    their series `variant`): the service times and the percentile are the model's.
    """
    selector = (
        f"namespace={promql_string(target.namespace)},"
        f"pod=~{promql_regex_alternatives(target.pod_prefixes, '-.*')},"
        f"model=~{promql_regex_alternatives(target.models)},"
        'variant=""'
    )

    def per_server(expression: str) -> str:
        # One series per Triton server and model: a pod scraped by two jobs (a PodMonitor and
        # an annotation-based kubernetes-pods job) has each series twice, and a plain sum
        # would count its requests twice.
        return f"max by (pod, model, version) ({expression})"

    def rate(metric: str) -> str:
        return f"sum({per_server(f'rate({metric}{{{selector}}}[{window}])')})"

    success = rate("nv_inference_request_success")
    queries = {
        "rate": success,
        # Per series, not one value: every replica's latency summary, and what each served.
        "summary": f"nv_inference_request_summary_us{{{selector}}}",
        "served": f"sum by (pod, model) ({per_server(f'rate(nv_inference_request_success{{{selector}}}[{window}])')})",
        "mean_latency": f"{rate('nv_inference_request_duration_us')} / {success} / 1000",
        "compute": f"{rate('nv_inference_compute_infer_duration_us')} / {success} / 1000",
        "batch": f"{rate('nv_inference_count')} / {rate('nv_inference_exec_count')}",
        "pending": f"sum({per_server(f'nv_inference_pending_request_count{{{selector}}}')})",
        "age": f"time() - max(timestamp(nv_inference_request_success{{{selector}}}))",
    }
    placeholders = {
        "namespace": promql_string(target.namespace)[1:-1],
        "name": promql_string(target.name)[1:-1],
        "pods": promql_regex_alternatives(target.pod_prefixes, "-.*")[1:-1],
        "models": promql_regex_alternatives(target.models)[1:-1],
    }
    if target.latency_query:
        queries["latency"] = string.Template(target.latency_query).safe_substitute(placeholders)
    if target.rate_query:
        queries["rate"] = string.Template(target.rate_query).safe_substitute(placeholders)
    return queries


def url_host(address: str) -> str:
    """An address as a URL's host: an IPv6 one in brackets."""
    return f"[{address}]" if ":" in address else address


def connection_failure(error: BaseException) -> str:
    """A few words for why a request failed (the full text, with the URL-encoded query, is logged)."""
    text = repr(error)
    for needle, words in (
        ("NameResolution", "host name does not resolve"),
        ("Name or service not known", "host name does not resolve"),
        ("Connection refused", "connection refused"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted (--prometheus-ca-file)"),
        ("timed out", "timed out"),
        ("Timeout", "timed out"),
    ):
        if needle in text:
            return words
    return type(error).__name__


def prometheus_error(error: PrometheusApiClientException) -> str:
    """Prometheus's own error text (for example a PromQL parse error), without the query."""
    found = re.search(r'"error":"((?:[^"\\]|\\.)*)"', str(error))
    return (found.group(1) if found else str(error))[:200]


VALUE_LABEL = "tritonscale_value"  # names each part of the combined query in its answer
SERIES_QUERIES = frozenset({"summary", "served"})


class PrometheusSource:
    """Observations from PromQL over Triton's metrics, all of one observation in one request.

    After a failed connection the server is not asked again for `retry_after_s`: every service
    on an unreachable Prometheus then costs no thread time, and their ticks stay on schedule."""

    def __init__(
        self,
        url: str,
        window: str = "1m",
        stale_after_s: float = 120.0,
        timeout_s: float = 5.0,
        retry_after_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        ca_file: str | None = None,
        connections: int = 10,
    ) -> None:
        self.url = url
        self.retry_after_s = retry_after_s
        self.monotonic = monotonic
        self._down: tuple[float, str] | None = None  # (since, why) while unreachable
        self.window = window
        self.window_s = prometheus_duration_s(window)
        self.stale_after_s = stale_after_s
        self.timeout_s = timeout_s
        # One quick retry at most: an unreachable Prometheus must not stall the control loop.
        retry = Retry(total=1, backoff_factor=0.1)
        self.client = PrometheusConnect(
            url=url,
            disable_ssl=False,  # an https Prometheus's certificate is verified: it steers scaling
            retry=retry,
            timeout=max(1, round(timeout_s)),
        )
        # A kept connection for each thread that may query at once: with the library's pool of
        # 10, sixteen autoscaling workers dropped a connection after most queries and opened another.
        self.client._session.mount(url, HTTPAdapter(max_retries=retry, pool_maxsize=connections))
        if ca_file is not None:
            self.client._session.verify = ca_file  # the library takes no CA bundle of its own

    def _values(
        self, queries: dict[str, str]
    ) -> tuple[dict[str, float | None], dict[str, list[tuple[dict[str, str], float]]]]:
        """Every query's answer in one request, each labelled with its key and joined with
        `or`: one value per query (`max(...)`; None when it has no series or is NaN), and the
        finite series of SERIES_QUERIES with their labels."""
        combined = " or ".join(
            f'label_replace({query if key in SERIES_QUERIES else f"max({query})"}, "{VALUE_LABEL}", "{key}", "", "")'
            for key, query in queries.items()
        )
        result: list[dict[str, Any]] = self.client.custom_query(
            combined, params={"timeout": f"{max(1, round(self.timeout_s))}s"}
        )
        values: dict[str, float | None] = {key: None for key in queries if key not in SERIES_QUERIES}
        series: dict[str, list[tuple[dict[str, str], float]]] = {key: [] for key in SERIES_QUERIES}
        for item in result:
            labels = item.get("metric", {})
            key = labels.get(VALUE_LABEL)
            value = finite_or_none(float(item["value"][1]))
            if key in values:
                values[key] = value
            elif key in series and value is not None:
                series[key].append((labels, value))
        return values, series

    def forget(self, namespace: str, name: str) -> None:
        """Nothing is remembered per service: Prometheus keeps the history."""

    def observe(self, target: ScalingTarget) -> Observation:
        down = self._down
        if down is not None and self.monotonic() - down[0] < self.retry_after_s:
            return Observation.unavailable(
                f"Prometheus at {self.url} unreachable: {down[1]}", target.ready_replicas
            )
        queries = prometheus_queries(target, self.window)
        try:
            values, series = self._values(queries)
        except PrometheusApiClientException as error:
            log.info(
                "Prometheus at %s refused a query for %s/%s: %s",
                self.url,
                target.namespace,
                target.name,
                error,
            )
            return Observation.unavailable(
                f"Prometheus refused a query: {prometheus_error(error)}", target.ready_replicas
            )
        except (requests.exceptions.RequestException, OSError) as error:
            log.info("Prometheus at %s unreachable: %s", self.url, error)
            self._down = (self.monotonic(), connection_failure(error))
            return Observation.unavailable(
                f"Prometheus at {self.url} unreachable: {self._down[1]}", target.ready_replicas
            )
        self._down = None
        age = values["age"]
        if values["rate"] is None:
            return Observation.unavailable("no Triton request metrics in Prometheus", target.ready_replicas)
        if age is not None and age > self.stale_after_s:
            return Observation.unavailable(f"newest sample {age:.0f}s old", target.ready_replicas, age)
        latency = values["latency"] if target.latency_query else fleet_latency_ms(series, target.percentile)
        missing = None
        if latency is None and not target.latency_query:
            latency = values["mean_latency"]  # no summary for this percentile: the mean at least
        if latency is None and values["rate"] > 0:
            missing = "no latency samples in the window"
        return Observation(
            arrival_rate_rps=values["rate"],
            latency_ms=latency,
            ready_replicas=target.ready_replicas,
            mean_compute_ms=values["compute"],
            average_batch=values["batch"],
            pending_requests=values["pending"],
            concurrency=None,
            sample_age_s=age if age is not None else 0.0,
            rate_age_s=(age if age is not None else 0.0) + self.window_s / 2,
            missing=missing,
        )


def fleet_latency_ms(
    series: dict[str, list[tuple[dict[str, str], float]]], percentile: float
) -> float | None:
    """The fleet's percentile from each pod's summary quantiles (µs) weighted by what it served."""
    served = {(labels.get("pod"), labels.get("model")): rate for labels, rate in series["served"]}
    summaries: dict[tuple[str | None, str | None], dict[float, float]] = {}
    for labels, value in series["summary"]:
        with contextlib.suppress(KeyError, ValueError):
            quantile = float(labels["quantile"])
            summaries.setdefault((labels.get("pod"), labels.get("model")), {})[quantile] = value / 1000.0
    return fleet_percentile_ms(
        [ReplicaLatency(served.get(key, 0.0), quantiles) for key, quantiles in summaries.items()], percentile
    )


@dataclass
class _Counters:
    """Cumulative statistics of one replica at one moment."""

    at: float
    success: float = 0.0
    queue_ns: float = 0.0
    compute_ns: float = 0.0
    batch_requests: float = 0.0  # sum over executions of batch size
    batch_squares: float = 0.0  # sum over executions of batch size squared
    pending: float = 0.0
    batches: dict[float, tuple[float, float]] = field(default_factory=dict)  # size -> (executions, ns)
    success_by_model: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict[float, float]] = field(default_factory=dict)  # model -> quantile -> ms

    def minus(self, earlier: _Counters) -> _Counters | None:
        delta = _Counters(
            at=self.at - earlier.at,
            success=self.success - earlier.success,
            queue_ns=self.queue_ns - earlier.queue_ns,
            compute_ns=self.compute_ns - earlier.compute_ns,
            batch_requests=self.batch_requests - earlier.batch_requests,
            batch_squares=self.batch_squares - earlier.batch_squares,
            pending=self.pending,
            success_by_model={
                model: count - earlier.success_by_model.get(model, 0.0)
                for model, count in self.success_by_model.items()
            },
            summaries=self.summaries,
            batches={
                size: (
                    count - earlier.batches.get(size, (0.0, 0.0))[0],
                    ns - earlier.batches.get(size, (0.0, 0.0))[1],
                )
                for size, (count, ns) in self.batches.items()
            },
        )
        if delta.at <= 0 or min(delta.success, delta.queue_ns, delta.compute_ns, delta.batch_requests) < 0:
            return None  # the server restarted: its counters began again
        return delta


@dataclass
class _History:
    previous: dict[str, _Counters] = field(default_factory=dict)


def _summaries(metrics_text: str, models: Sequence[str]) -> tuple[dict[str, dict[float, float]], float]:
    """(each model's latency summary, quantile -> ms; pending requests) from /metrics."""
    summaries: dict[str, dict[float, float]] = {}
    pending = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None or model not in models:
                continue
            if sample.name == "nv_inference_request_summary_us" and "quantile" in sample.labels:
                value = finite_or_none(sample.value)
                if value is not None:
                    summaries.setdefault(model, {})[float(sample.labels["quantile"])] = value / 1000.0
            elif sample.name == "nv_inference_pending_request_count":
                pending += sample.value
    return summaries, pending


class TritonSource:
    """Observations read from every ready Triton replica: the statistics API for counters (turned
    into rates between two reads) and the metrics endpoint for the latency summaries, from
    which the fleet's percentile is estimated (policy/fleet_percentile.py)."""

    def __init__(
        self,
        endpoints: Callable[[ScalingTarget], list[str]],
        http_port: int = HTTP_PORT,
        metrics_port: int = METRICS_PORT,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = endpoints
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.timeout_s = timeout_s
        self.clock = clock
        self._history: dict[tuple[str, str], _History] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._history.pop((namespace, name), None)

    def _read(self, host: str, target: ScalingTarget) -> _Counters:
        counters = _Counters(at=self.clock())
        for model in target.models:
            # Triton's statistics extension (GET v2/models/<name>/stats): plain JSON, so the
            # operator needs no Triton client library (and none of its numpy weight).
            reply = requests.get(
                f"http://{url_host(host)}:{self.http_port}/v2/models/{quote(model, safe='')}/stats",
                timeout=self.timeout_s,
            )
            reply.raise_for_status()
            for stats in reply.json().get("model_stats", []):
                inference = stats["inference_stats"]
                counters.success += float(inference["success"]["count"])
                counters.success_by_model[model] = counters.success_by_model.get(model, 0.0) + float(
                    inference["success"]["count"]
                )
                counters.queue_ns += float(inference["queue"]["ns"])
                counters.compute_ns += float(inference["compute_infer"]["ns"])
                for batch in stats.get("batch_stats", []):
                    size, executions = float(batch["batch_size"]), float(batch["compute_infer"]["count"])
                    counters.batch_requests += size * executions
                    counters.batch_squares += size * size * executions
                    known = counters.batches.get(size, (0.0, 0.0))
                    counters.batches[size] = (
                        known[0] + executions,
                        known[1] + float(batch["compute_infer"]["ns"]),
                    )
        metrics = requests.get(f"http://{url_host(host)}:{self.metrics_port}/metrics", timeout=self.timeout_s)
        metrics.raise_for_status()
        text = metrics.text
        counters.summaries, counters.pending = _summaries(text, target.models)
        return counters

    def observe(self, target: ScalingTarget) -> Observation:
        try:
            hosts = self.endpoints(target)
        except Exception as error:
            # Said like any missing metrics (the autoscaler holds), not raised out of the tick.
            status = getattr(error, "status", None)  # the Kubernetes client's ApiException
            why = f"HTTP {status}" if isinstance(status, int) else connection_failure(error)
            log.info("listing the Triton pods of %s/%s failed: %s", target.namespace, target.name, error)
            return Observation.unavailable(f"listing the Triton pods failed ({why})", target.ready_replicas)
        history = self._history.setdefault((target.namespace, target.name), _History())
        if not hosts:
            return Observation.unavailable("no ready Triton pods", 0)
        current: dict[str, _Counters] = {}
        failures: list[str] = []
        for host in hosts:
            try:
                current[host] = self._read(host, target)
            except Exception as error:
                log.info("reading Triton statistics from %s failed: %s", host, error)
                failures.append(f"{host} {connection_failure(error)}")
        deltas = [
            delta
            for host, counters in current.items()
            if host in history.previous and (delta := counters.minus(history.previous[host])) is not None
        ]
        history.previous = current
        if not current:
            return Observation.unavailable(
                f"Triton statistics unreachable on all {len(hosts)} ready pods ({failures[0]})", len(hosts)
            )
        if not deltas:
            return Observation.unavailable("first sample (rates need two reads)", len(hosts), 0.0)
        success = sum(d.success for d in deltas)
        # Pods that did not answer serve their share too (the router balances): the rate and
        # queue are scaled up to every ready pod, and the observation is marked partial.
        share = len(hosts) / len(deltas)
        rate = sum(d.success / d.at for d in deltas) * share
        pending = sum(d.pending for d in current.values()) * len(hosts) / len(current)
        partial = (
            f"statistics from {len(deltas)} of {len(hosts)} ready pods"
            + (f"; {', '.join(failures)}" if failures else "")
            if len(deltas) < len(hosts)
            else None
        )
        if success <= 0:
            return Observation(
                arrival_rate_rps=0.0,
                latency_ms=None,
                ready_replicas=len(hosts),
                pending_requests=pending,
                partial=partial,
            )
        latency = fleet_percentile_ms(
            [
                ReplicaLatency(d.success_by_model.get(model, 0.0), summary)
                for d in deltas
                for model, summary in d.summaries.items()
            ],
            target.percentile,
        )
        batch_requests = sum(d.batch_requests for d in deltas)
        per_size: dict[float, tuple[float, float]] = {}
        for delta in deltas:
            for size, (count, ns) in delta.batches.items():
                known = per_size.get(size, (0.0, 0.0))
                per_size[size] = (known[0] + count, known[1] + ns)
        profile = tuple(
            (size, ns / count / 1e6, count) for size, (count, ns) in sorted(per_size.items()) if count > 0
        )
        return Observation(
            arrival_rate_rps=rate,
            latency_ms=latency,
            ready_replicas=len(hosts),
            mean_compute_ms=sum(d.compute_ns for d in deltas) / success / 1e6,
            average_batch=(sum(d.batch_squares for d in deltas) / batch_requests)
            if batch_requests > 0
            else None,
            pending_requests=pending,
            batch_profile=profile,
            sample_age_s=0.0,
            rate_age_s=sum(d.at for d in deltas) / len(deltas) / 2,  # counted since the last read
            missing=None if latency is not None else "no latency summary from Triton",
            partial=partial,
        )


class TritonModelConfigs:
    """Triton's model configurations (GET v2/models/<name>/config), from the first of a
    service's ready pods that answers."""

    def __init__(self, http_port: int = HTTP_PORT, timeout_s: float = 2.0) -> None:
        self.http_port = http_port
        self.timeout_s = timeout_s

    def __call__(self, target: ScalingTarget, hosts: list[str]) -> list[dict[str, Any]] | str:
        failure = "no ready Triton pod"
        for host in hosts:
            try:
                configs = []
                for model in target.models:
                    reply = requests.get(
                        f"http://{url_host(host)}:{self.http_port}/v2/models/{quote(model, safe='')}/config",
                        timeout=self.timeout_s,
                    )
                    reply.raise_for_status()
                    configs.append(reply.json())
                return configs
            except (requests.exceptions.RequestException, ValueError) as error:
                log.info("reading model configuration from %s failed: %s", host, error)
                failure = f"{host} {connection_failure(error)}"
        return failure


class KubernetesEndpoints:
    """Addresses of an InferenceService's ready Triton pods: from the operator's pod watch,
    or listed from the Kubernetes API when it cannot answer."""

    def __init__(self, core_api: Any, pods: ManagedPods | None = None) -> None:
        self.core_api = core_api
        self.pods = pods

    def __call__(self, target: ScalingTarget) -> list[str]:
        watched = self.pods.ready_addresses(target.namespace, target.pod_selector) if self.pods else None
        if watched is not None:
            return watched
        selector = ",".join(f"{key}={value}" for key, value in sorted(target.pod_selector.items()))
        response = self.core_api.list_namespaced_pod(
            target.namespace, label_selector=selector, _request_timeout=5, _preload_content=False
        )
        return ready_pod_addresses(json.loads(response.data).get("items") or [])


class UnavailableSource:
    """Stands in when no source can be built, and says why on every observation."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def observe(self, target: ScalingTarget) -> Observation:
        return Observation.unavailable(self.reason, target.ready_replicas)

    def forget(self, namespace: str, name: str) -> None:
        """Nothing is remembered."""
