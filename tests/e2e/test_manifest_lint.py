"""kube-score, the Kubernetes manifest linter, over the Helm chart and every rendered example.

Each finding we accept is listed with its reason in tests/lint/kube-score-exceptions.yaml; any
other WARNING or CRITICAL fails, and so does an exception that no longer fires. kube-score is
built from the Go module proxy by scripts/build-kube-score.sh into a versioned cache folder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.builders import load_example
from tests.e2e.conftest import CHART, REPO
from tritonscale.api.resource import parse_inference_service
from tritonscale.policy.placement import split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.render.network import NetworkPolicyOptions
from tritonscale.render.stack import RenderOptions, render_stack
from tritonscale.yamlfmt import dump_all
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

EXCEPTIONS = yaml.safe_load((REPO / "tests" / "lint" / "kube-score-exceptions.yaml").read_text())


@pytest.fixture(scope="module")
def kube_score() -> Path:
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-kube-score.sh")],
        capture_output=True,
        text=True,
        timeout=20 * 60,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def manifests(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart as `helm template` renders it (monitoring and network policies on) and every
    example's stack as that operator renders it (guarded by NetworkPolicies)."""
    folder = tmp_path_factory.mktemp("lint")
    chart = cluster.helm(
        "template",
        "tritonscale",
        str(CHART),
        "-n",
        "tritonscale-system",
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
    ).stdout
    documents = [d for d in yaml.safe_load_all(chart) if d and d.get("kind") != "ServiceMonitor"]
    for example in sorted((REPO / "examples").glob("*.yaml")):
        service = parse_inference_service(load_example(example))
        documents += render_stack(
            service,
            split_replicas(reconciled_replicas(service), service.spec.capacity),
            RenderOptions(network=NetworkPolicyOptions(enabled=True)),
        )
    path = folder / "all.yaml"
    path.write_text(dump_all(documents))
    return path


def _findings(kube_score: Path, manifests: Path, flags: list[str], ignored: list[str]) -> list[str]:
    argv = [str(kube_score), "score", str(manifests), "--output-format", "ci", *flags]
    for check in ignored:
        argv += ["--ignore-test", check]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert "Failed to score" not in result.stderr, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith(("[WARNING]", "[CRITICAL]"))]


def test_the_chart_and_every_rendered_example_pass_kube_score(kube_score: Path, manifests: Path) -> None:
    findings = _findings(kube_score, manifests, list(EXCEPTIONS["flags"]), list(EXCEPTIONS["checks"]))
    assert not findings, "\n".join(findings)


def test_every_accepted_exception_is_still_needed(kube_score: Path, manifests: Path) -> None:
    flags, checks = list(EXCEPTIONS["flags"]), list(EXCEPTIONS["checks"])
    assert all(EXCEPTIONS["flags"].values()) and all(EXCEPTIONS["checks"].values()), (
        "an exception without a reason"
    )
    unneeded = [
        flag
        for flag in flags
        if not _findings(kube_score, manifests, [f for f in flags if f != flag], checks)
    ] + [
        check
        for check in checks
        if not _findings(kube_score, manifests, flags, [c for c in checks if c != check])
    ]
    assert not unneeded, f"these exceptions no longer fire; remove them: {unneeded}"


def test_the_chart_wraps_the_checked_rules_file_with_its_values(cluster: Cluster) -> None:
    """The PrometheusRule carries files/rules.yaml (what promtool tests), with the objective
    ratio and runbook base URL from the values."""
    rendered = cluster.helm(
        "template",
        "tritonscale",
        str(CHART),
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set-json",
        "monitoring.prometheusRule.objectiveRatio=0.995",
        "--set",
        "monitoring.prometheusRule.runbookBaseURL=https://wiki.example/runbooks/",
        "-s",
        "templates/prometheusrule.yaml",
    ).stdout
    (rule,) = [d for d in yaml.safe_load_all(rendered) if d]
    assert rule["kind"] == "PrometheusRule"
    expected = (
        (CHART / "files" / "rules.yaml")
        .read_text()
        .replace(
            "https://github.com/tritonscale/tritonscale/blob/main/docs/runbooks",
            "https://wiki.example/runbooks",
        )
        .replace("(1 - 0.99)", "(1 - 0.995)")
    )
    assert rule["spec"]["groups"] == yaml.safe_load(expected)["groups"]
    assert "0.99)" not in rendered.replace("0.995)", "")


def test_the_chart_pod_monitors_select_the_rendered_triton_and_router_pods(cluster: Cluster) -> None:
    rendered = cluster.helm(
        "template",
        "tritonscale",
        str(CHART),
        "--set",
        "monitoring.podMonitors.enabled=true",
        "-s",
        "templates/podmonitors.yaml",
    ).stdout
    monitors = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in yaml.safe_load_all(rendered) if d}
    assert set(monitors) == {"triton", "router"}
    service = parse_inference_service(load_example(REPO / "examples" / "gpu-spot.yaml"))
    stack = render_stack(service, split_replicas(reconciled_replicas(service), service.spec.capacity))
    deployments = [o for o in stack if o["kind"] == "Deployment"]
    for component, monitor in monitors.items():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            d for d in deployments if wanted.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"the {component} PodMonitor selects no rendered pod"
        assert {
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in selected
        } == {component}
        for deployment in selected:
            ports = {
                p["name"]
                for c in deployment["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
