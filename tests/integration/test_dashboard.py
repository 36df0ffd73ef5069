"""Every query of the shipped Grafana dashboard and every rule expression, run on a real
Prometheus scraping real tritonservers, the real HAProxy router and the operator's own /metrics
while `tritonscale bench` drives load and the autoscaling loop decides. A query error, or a
panel query that finds no series, fails."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server

from tests.integration.process_stack import bench_simulated, process_stack, prometheus_autoscaler, scheduled
from tritonscale.api.resource import parse_inference_service
from tritonscale.clients.observations import prometheus_queries
from tritonscale.metrics import SERVICES
from tritonscale.reconcilers.autoscale import scaling_target
from tritonscale_sandbox.dashboard import render_dashboard_png
from tritonscale_sandbox.local_stack import ProcessBackedCluster
from tritonscale_sandbox.net import free_port
from tritonscale_sandbox.prometheus import LocalPrometheus, ScrapeTarget
from tritonscale_sandbox.router import LocalRouter
from tritonscale_sandbox.triton import SimulatedModel, TritonInstall

pytestmark = pytest.mark.integration

CHART_FILES = Path(__file__).parents[2] / "charts" / "tritonscale" / "files"
NAMESPACE, NAME = "shop", "reviews"
LOAD_S = 30


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load((CHART_FILES / "rules.yaml").read_text())["groups"]
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for group in groups for rule in group["rules"]
    ]


def query(prometheus: LocalPrometheus, expr: str) -> dict[str, Any]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:  # a PromQL error is a 400 with a JSON body
        answer = json.loads(error.read())
    return answer


@pytest.fixture
def observed_stack(
    triton_install: TritonInstall, tmp_path: Path
) -> Iterator[tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus]]:
    operator_port = free_port()
    server, thread = start_http_server(operator_port, addr="127.0.0.1")
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=SimulatedModel(
            "simulated", base_ms=20, per_item_ms=2, max_batch_size=4, max_queue_delay_us=2000
        ),
        # Spot on, so the spot fallback's series exist too (local processes are never unschedulable).
        capacity={"onDemandBase": 1, "spot": {"enabled": True, "maxFraction": 0.5}},
        # A faster variant, so the variants' series exist too.
        variants=[
            (
                SimulatedModel(
                    "simulated", base_ms=5, per_item_ms=1, max_batch_size=4, max_queue_delay_us=2000
                ),
                0.99,
                4.0,
            )
        ],
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "periodSeconds": 2,
            "latency": {"targetMilliseconds": 100, "percentile": 95},
            "metrics": {"source": "prometheus"},
            "accuracy": {"floor": 0.995},
        },
        # As the chart's ServiceMonitor scrapes the operator: honoring its namespace labels.
        extra_targets=lambda: [
            ScrapeTarget(f"127.0.0.1:{operator_port}", {"namespace": "tritonscale-system"})
        ],
        prometheus_options={"rule_files": [CHART_FILES / "rules.yaml"], "honor_labels": True},
    ) as parts:
        SERVICES.source = lambda: [parts[0].body]
        try:
            yield parts
        finally:
            SERVICES.source = list
            server.shutdown()
            thread.join(timeout=5)


@pytest.mark.timeout(300)
def test_every_dashboard_query_and_rule_runs_on_real_data(
    observed_stack: tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus], tmp_path: Path
) -> None:
    cluster, router, prometheus = observed_stack
    started = time.time()
    autoscaler = prometheus_autoscaler(
        cluster, router, prometheus, NAMESPACE, NAME, read_routers=True, variants=True
    )
    stop = threading.Event()

    def tick() -> float | None:
        period = autoscaler.tick(NAMESPACE, NAME)
        # What the operator does on each child Deployment event: status shows ready replicas.
        autoscaler.stack.refresh_status(NAMESPACE, NAME)
        return period

    threads = [
        scheduled(stop, tick, 2.0),
        scheduled(stop, lambda: autoscaler.router_tick(NAMESPACE, NAME), 2.0),
    ]
    try:
        bench = subprocess.run(
            bench_simulated(router.http_endpoint, "--rate", "40", "--duration", str(LOAD_S)),
            capture_output=True,
            text=True,
            timeout=LOAD_S + 60,
            check=False,
        )
        assert bench.returncode == 0, bench.stdout + bench.stderr
        time.sleep(5)  # a few more scrapes and rule evaluations after the load
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    substitutions = {"$namespace": NAMESPACE, "$service": NAME, "$__rate_interval": "30s"}
    empty, failed = [], []
    for title, template in panel_queries():
        expr = template
        for placeholder, value in substitutions.items():
            expr = expr.replace(placeholder, value)
        answer = query(prometheus, expr)
        if answer.get("status") != "success":
            failed.append(f"{title}: {expr}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            empty.append(f"{title}: {expr}")
    for name, expr in rule_expressions():
        answer = query(prometheus, expr)
        if answer.get("status") != "success":
            failed.append(f"rule {name}: {answer.get('error')}")
    assert failed == []
    assert empty == []
    # The variant's tritonserver is scraped, its series labelled with its name; the operator's
    # queries take the model's alone (its service times and percentile).
    variant_series = query(prometheus, f'nv_inference_request_success{{namespace="{NAMESPACE}",variant!=""}}')
    assert {s["metric"]["variant"] for s in variant_series["data"]["result"]} == {"simulated-v0"}
    summaries = prometheus_queries(scaling_target(parse_inference_service(cluster.body)))["summary"]
    operator_series = query(prometheus, summaries)["data"]["result"]  # raw series, every label
    assert operator_series and all("variant" not in s["metric"] for s in operator_series)
    # The rules were loaded and evaluated on this data, not just parsed.
    met = query(prometheus, f'tritonscale:objective_met:bool{{namespace="{NAMESPACE}",name="{NAME}"}}')
    assert met["data"]["result"], "the recording rules did not evaluate"
    # The same queries drawn (the README's picture: TRITONSCALE_DASHBOARD_PNG=docs/dashboard.png).
    picture = Path(os.environ.get("TRITONSCALE_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    drawn = render_dashboard_png(
        prometheus.url, CHART_FILES / "dashboard.json", substitutions, started, time.time(), picture
    )
    assert drawn >= len(panel_queries()) - 1 and picture.stat().st_size > 10_000
