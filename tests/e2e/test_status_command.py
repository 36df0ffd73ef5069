"""`tritonscale status` against the real control plane, with the operator running: the example
services as the operator reports them, read by the command itself and through kubectl's plugin
mechanism (`kubectl tritonscale status`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import OperatorThread
from tests.e2e.test_operator import EXAMPLE_CASES, EXAMPLES, wait_settled
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

COMMAND_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def settled_examples(cluster: Cluster, operator: OperatorThread) -> dict[str, dict[str, Any]]:
    """Every example applied and settled, with bert's autoscaler having ticked. Applied again
    rather than asserted new: test_operator.py may have applied them earlier in the session."""
    for example in EXAMPLE_CASES:
        cluster.kubectl("apply", "-f", str(EXAMPLES / example.file))
    settled = {
        example.name: wait_settled(cluster, operator, example.namespace, example.name, example.expected)
        for example in EXAMPLE_CASES
    }
    cluster.wait_until(
        lambda: (
            cluster.get_json("tis", "bert", namespace="nlp")
            .get("status", {})
            .get("targetLatencyMilliseconds")
        ),
        "bert's first autoscaling tick",
    )
    return settled


def tritonscale(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, as a user runs it (output piped, so no colour)."""
    return subprocess.run(
        [sys.executable, "-m", "tritonscale.cli", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _columns(text: str) -> list[dict[str, str]]:
    """Rows of a kubectl-style table, cut at the header's column starts (cells may hold spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].replace("LAST SCALE", "LAST_SCALE")
    tokens = list(re.finditer(r"\S+", header))
    names, starts = [t.group(0) for t in tokens], [t.start() for t in tokens]
    bounds = [*starts[1:], None]
    return [
        {n: line[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)} for line in lines[1:]
    ]


def test_json_of_all_namespaces_matches_kubectl_get(
    cluster: Cluster, settled_examples: dict[str, dict[str, Any]]
) -> None:
    result = tritonscale(cluster, "status", "-A", "-o", "json")
    assert result.returncode == 0, result.stderr
    records = {(r["namespace"], r["name"]): r for r in json.loads(result.stdout)}
    printed = {
        (row["NAMESPACE"], row["NAME"]): row for row in _columns(cluster.kubectl("get", "tis", "-A").stdout)
    }
    for example in EXAMPLE_CASES:
        key = (example.namespace, example.name)
        record, row = records[key], printed[key]
        stored = settled_examples[example.name]["status"]
        assert record["ready"]["status"] == "True" and row["STATUS"] == "Serving", key
        assert row["READY"] == f"{record['replicas']['ready']}/{record['replicas']['desired']}", key
        assert str(record["replicas"]["onDemand"]) == row["ON-DEMAND"], key
        assert str(record["replicas"]["spot"]) == (row["SPOT"] or "0"), key
        assert record["replicas"] == {
            "ready": example.expected.replicas,
            "desired": stored["desiredReplicas"],
            "onDemand": example.expected.on_demand,
            "spot": example.expected.spot,
            "router": example.expected.routers,
        }, key
        assert record["endpoint"] == f"http://{example.name}.{example.namespace}.svc:8000"
        assert {"Reconciled", "Ready"} <= {e["reason"] for e in record["events"]}, key
    bert, resnet = records[("nlp", "bert")], records[("vision", "resnet")]
    assert bert["sizing"] == {"mode": "autoscaler", "specReplicas": 2, "minReplicas": 1, "maxReplicas": 20}
    assert bert["latency"]["targetMilliseconds"] == 100 and bert["latency"]["percentile"] == 95
    assert resnet["placement"]["plannedOnDemand"] == 1 and resnet["placement"]["plannedSpot"] == 3
    assert resnet["latency"] == {
        "observedMilliseconds": None,
        "targetMilliseconds": None,
        "percentile": None,
        "withinTarget": None,
    }


def test_details_of_bert_show_its_conditions_and_events(
    cluster: Cluster, settled_examples: dict[str, dict[str, Any]]
) -> None:
    # bert's Prometheus does not exist here: its autoscaler holds and says so (a Warning Event).
    def metrics_unavailable_posted() -> bool:
        events = cluster.get_json("events", "--field-selector", "involvedObject.name=bert", namespace="nlp")
        return "MetricsUnavailable" in {e["reason"] for e in events["items"]}

    cluster.wait_until(metrics_unavailable_posted, "bert's MetricsUnavailable Event")
    stored = cluster.get_json("tis", "bert", namespace="nlp")

    result = tritonscale(cluster, "status", "bert", "-n", "nlp")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "nlp/bert" in text and "True Serving: 2/2 Triton replicas ready" in text
    assert "autoscaler: between 1..20 replicas, holding p95 <= 100 ms" in text
    assert "Metrics unavailable:" in text  # the alert above the summary
    assert "http://bert.nlp.svc:8000 (gRPC on port 8001)" in text
    for condition in stored["status"]["conditions"]:
        assert re.search(rf"{condition['type']}\s+{condition['status']}\s+{condition['reason']}", text), (
            condition
        )
    assert re.search(r"Warning\s+MetricsUnavailable", text)

    def bert_events() -> list[dict[str, Any]]:
        listed = cluster.get_json("events", "--field-selector", "involvedObject.name=bert", namespace="nlp")
        return list(listed["items"])

    # Read on both sides of the CLI's own read: an Event posted in between is not a failure.
    earlier = bert_events()
    record = json.loads(tritonscale(cluster, "status", "bert", "-n", "nlp", "-o", "json").stdout)
    listed = bert_events()
    assert min(5, len(earlier)) <= len(record["events"]) <= min(5, len(listed))
    assert {e["reason"] for e in record["events"]} <= {e["reason"] for e in listed}
    ages = [e["ageSeconds"] for e in record["events"]]
    assert ages == sorted(ages)  # newest first
    assert {c["type"] for c in record["conditions"]} == {c["type"] for c in stored["status"]["conditions"]}
    assert record["capacityModel"] is not None and record["capacityModel"]["maxBatch"] == 1


def test_a_missing_service_exits_1(cluster: Cluster, settled_examples: dict[str, dict[str, Any]]) -> None:
    result = tritonscale(cluster, "status", "nope", "-n", "nlp")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: inferenceservice nlp/nope not found"


def _plugin_dir(tmp_path: Path) -> Path:
    """Where `kubectl-tritonscale` is: the virtualenv's when pip installed the entry point,
    else a wrapper that runs the same command."""
    installed = Path(sys.executable).parent / "kubectl-tritonscale"
    if installed.exists():
        return installed.parent
    wrapper = tmp_path / "kubectl-tritonscale"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tritonscale.cli "$@"\n')
    wrapper.chmod(0o755)
    return tmp_path


def test_kubectl_runs_it_as_a_plugin(
    cluster: Cluster, settled_examples: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    env = dict(os.environ)
    # kubectl passes its environment to plugins but not its flags: the kubeconfig goes by $KUBECONFIG.
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    env["PATH"] = os.pathsep.join([str(_plugin_dir(tmp_path)), str(cluster.bin_dir), env.get("PATH", "")])
    result = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "tritonscale", "status", "-A"],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == [
        "NAMESPACE",
        "NAME",
        "READY",
        "REPLICAS",
        "ON-DEMAND",
        "SPOT",
        "LATENCY/TARGET",
        "RATE",
        "LAST",
        "SCALE",
    ]
    rows = {(row["NAMESPACE"], row["NAME"]): row for row in _columns(result.stdout)}
    for example in EXAMPLE_CASES:
        row = rows[(example.namespace, example.name)]
        assert row["READY"] == "True"
        assert row["REPLICAS"] == f"{example.expected.replicas}/{example.expected.replicas}"
        assert row["ON-DEMAND"] == str(example.expected.on_demand)
        assert row["SPOT"] == (str(example.expected.spot) if example.spot else "-")
    assert rows[("nlp", "bert")]["LATENCY/TARGET"] == "?/100ms p95"  # no metrics, a target
    assert rows[("vision", "resnet")]["LATENCY/TARGET"] == "-"
    assert "\x1b[" not in result.stdout
