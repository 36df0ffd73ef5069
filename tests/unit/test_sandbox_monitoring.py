"""The sandbox's Prometheus Operator stand-in, without a cluster: PodMonitors, ServiceMonitors
and PrometheusRules (shaped as the chart renders them) become the jobs, relabelings and rule
files the operator would write; pods become the targets Prometheus's pod role would find. The
relabelings are run on those targets by a small evaluator of Prometheus's semantics, and the
whole config is checked by the real promtool."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import urllib.error
from collections.abc import Mapping, Sequence
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tritonscale_sandbox.monitoring import (
    MONITORING_CRDS,
    ClusterPrometheus,
    GeneratedConfig,
    pod_target_groups,
    prometheus_config,
    relabeling,
    sanitize_label_name,
    selector_matches,
    selector_relabelings,
)

ROOT = Path(__file__).parents[2]
CHART_RULES = ROOT / "charts" / "tritonscale" / "files" / "rules.yaml"
RULES_DIR = Path("/sandbox/rules")
TARGETS_DIR = Path("/sandbox/targets")
METRICS_PORT = 8002

# ---------------------------------------------------------------- objects shaped like the chart's


def pod_monitor(component: str, *, interval: str = "15s") -> dict[str, Any]:
    """templates/podmonitors.yaml for one component, release "ts" in tritonscale-system."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"ts-tritonscale-{component}", "namespace": "tritonscale-system"},
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/managed-by": "tritonscale",
                    "app.kubernetes.io/component": component,
                }
            },
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": interval,
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                            "targetLabel": "inferenceservice",
                        }
                    ],
                }
            ],
        },
    }


OPERATOR_LABELS = {
    "app.kubernetes.io/name": "tritonscale",
    "app.kubernetes.io/instance": "ts",
    "app.kubernetes.io/component": "operator",
}


def service_monitor(**endpoint: Any) -> dict[str, Any]:
    """templates/servicemonitor.yaml (release "ts"), with `endpoint` fields added."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "ts-tritonscale", "namespace": "tritonscale-system"},
        "spec": {
            "selector": {"matchLabels": dict(OPERATOR_LABELS)},
            "endpoints": [{"port": "metrics", "interval": "30s", "honorLabels": True, **endpoint}],
        },
    }


def service(
    name: str = "ts-tritonscale",
    namespace: str = "tritonscale-system",
    *,
    labels: Mapping[str, str] | None = None,
    selector: Mapping[str, str] | None = None,
    target_port: str | int = "metrics",
) -> dict[str, Any]:
    """templates/service.yaml: port "metrics" targets the pod's port named "metrics"."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**OPERATOR_LABELS, "app.kubernetes.io/managed-by": "Helm"}
            if labels is None
            else labels,
        },
        "spec": {
            "selector": dict(OPERATOR_LABELS) if selector is None else dict(selector),
            "ports": [
                {"name": "metrics", "port": 8080, "targetPort": target_port},
                {"name": "health", "port": 8081, "targetPort": "health"},
            ],
        },
    }


def prometheus_rule() -> dict[str, Any]:
    """templates/prometheusrule.yaml: the chart's files/rules.yaml groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ts-tritonscale", "namespace": "tritonscale-system"},
        "spec": {"groups": yaml.safe_load(CHART_RULES.read_text())["groups"]},
    }


def pod(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    *,
    ip: str | None = "127.0.9.9",
    phase: str = "Running",
    ports: Sequence[tuple[str, int]] = (("metrics", METRICS_PORT), ("http", 8000)),
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}
    if ip:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "uid": f"uid-{name}"},
        "spec": {
            "nodeName": "node-0",
            "containers": [
                {
                    "name": "main",
                    "image": "tritonserver",
                    "ports": [{"name": n, "containerPort": p} for n, p in ports],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
        },
        "status": status,
    }


def triton_pod(name: str, namespace: str = "models", **kwargs: Any) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/managed-by": "tritonscale",
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/instance": "bert",
    }
    return pod(name, namespace, labels, **kwargs)


def generate(
    pod_monitors: Sequence[dict[str, Any]] = (),
    service_monitors: Sequence[dict[str, Any]] = (),
    services: Sequence[dict[str, Any]] = (),
    rules: Sequence[dict[str, Any]] = (),
    **kwargs: Any,
) -> GeneratedConfig:
    return prometheus_config(
        pod_monitors,
        service_monitors,
        services,
        rules,
        rules_dir=RULES_DIR,
        targets_dir=TARGETS_DIR,
        **kwargs,
    )


def job(config: GeneratedConfig, name: str) -> dict[str, Any]:
    jobs = {j["job_name"]: j for j in config.config["scrape_configs"]}
    assert name in jobs, sorted(jobs)
    found: dict[str, Any] = jobs[name]
    return found


# ---------------------------------------------------------------- Prometheus's relabeling, in small


def _expand(replacement: str, match: re.Match[str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: match.group(int(m.group(1) or m.group(2)) or 0) or "", replacement
    )


def apply_relabelings(labels: Mapping[str, str], rules: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabel.Process for keep, drop and replace (what the translation writes);
    None when the target is dropped."""
    current = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(current.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and match is None:
            return None
        if action == "drop" and match is not None:
            return None
        if action == "replace" and match is not None:
            result = _expand(rule.get("replacement", "$1"), match)
            if result:
                current[rule["target_label"]] = result
            else:
                current.pop(rule["target_label"], None)
        assert action in {"keep", "drop", "replace"}, action
    return current


def scrape_targets(
    config: GeneratedConfig, job_name: str, pods: Sequence[dict[str, Any]]
) -> list[dict[str, str]]:
    """The targets (final labels) one job would scrape among `pods`, as Prometheus would find
    them through the job's file_sd files."""
    scrape = job(config, job_name)
    files = [Path(f) for sd in scrape["file_sd_configs"] for f in sd["files"]]
    discovered = pod_target_groups(pods)
    targets = []
    for file_name, groups in discovered.items():
        if not any((TARGETS_DIR / file_name).match(str(pattern)) for pattern in files):
            continue
        for group in groups:
            for address in group["targets"]:
                labels = {**group["labels"], "__address__": address, "job": job_name}
                labels["__meta_filepath"] = str(TARGETS_DIR / file_name)
                final = apply_relabelings(labels, scrape["relabel_configs"])
                if final is not None:
                    final.setdefault("instance", final["__address__"])
                    targets.append({k: v for k, v in final.items() if not k.startswith("__")})
    return sorted(targets, key=lambda t: (t.get("namespace", ""), t.get("pod", ""), t["instance"]))


# ---------------------------------------------------------------- PodMonitor


def test_the_chart_pod_monitor_scrapes_the_metrics_port_of_matching_running_pods_in_any_namespace() -> None:
    config = generate([pod_monitor("triton"), pod_monitor("router")])
    pods = [
        triton_pod("bert-0"),
        triton_pod("bert-1", namespace="other", ip="127.0.9.10"),
        triton_pod("done", phase="Succeeded"),
        triton_pod("no-ip", ip=None),
        pod("unmanaged", "models", {"app.kubernetes.io/component": "triton"}),
        pod(
            "router-0",
            "models",
            {"app.kubernetes.io/managed-by": "tritonscale", "app.kubernetes.io/component": "router"},
        ),
    ]
    targets = scrape_targets(config, "podMonitor/tritonscale-system/ts-tritonscale-triton/0", pods)
    assert targets == [
        {
            "namespace": namespace,
            "pod": name,
            "container": "main",
            "endpoint": "metrics",
            "job": "tritonscale-system/ts-tritonscale-triton",
            "instance": f"{ip}:{METRICS_PORT}",
            "inferenceservice": "bert",
        }
        for name, namespace, ip in (("bert-0", "models", "127.0.9.9"), ("bert-1", "other", "127.0.9.10"))
    ]
    routers = scrape_targets(config, "podMonitor/tritonscale-system/ts-tritonscale-router/0", pods)
    assert [t["pod"] for t in routers] == ["router-0"]


def test_a_pod_monitor_becomes_the_operators_job_shape() -> None:
    scrape = job(generate([pod_monitor("triton")]), "podMonitor/tritonscale-system/ts-tritonscale-triton/0")
    assert scrape["scrape_interval"] == "15s"
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["honor_labels"] is False
    # namespaceSelector any: every namespace's file.
    assert scrape["file_sd_configs"] == [
        {"files": [str(TARGETS_DIR / "pods-*.json")], "refresh_interval": "5s"}
    ]
    rules = scrape["relabel_configs"]
    assert rules[:2] == [
        {
            "action": "keep",
            "source_labels": [
                "__meta_kubernetes_pod_label_app_kubernetes_io_component",
                "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_component",
            ],
            "regex": "(triton);true",
        },
        {
            "action": "keep",
            "source_labels": [
                "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by",
                "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by",
            ],
            "regex": "(tritonscale);true",
        },
    ]
    assert {
        "action": "drop",
        "source_labels": ["__meta_kubernetes_pod_phase"],
        "regex": "(Failed|Succeeded)",
    } in rules
    assert {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "metrics",
    } in rules
    # The monitor's own relabelings come last, as the operator appends them.
    assert rules[-1] == {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "target_label": "inferenceservice",
    }
    assert (
        rules.index({"target_label": "job", "replacement": "tritonscale-system/ts-tritonscale-triton"})
        < len(rules) - 1
    )


def test_namespace_selector_match_names_and_the_default_own_namespace() -> None:
    named = pod_monitor("triton")
    named["spec"]["namespaceSelector"] = {"matchNames": ["b", "a"]}
    default = pod_monitor("router")
    del default["spec"]["namespaceSelector"]
    config = generate([named, default])
    assert job(config, "podMonitor/tritonscale-system/ts-tritonscale-triton/0")["file_sd_configs"][0][
        "files"
    ] == [
        str(TARGETS_DIR / "pods-a.json"),
        str(TARGETS_DIR / "pods-b.json"),
    ]
    assert job(config, "podMonitor/tritonscale-system/ts-tritonscale-router/0")["file_sd_configs"][0][
        "files"
    ] == [str(TARGETS_DIR / "pods-tritonscale-system.json")]
    pods = [triton_pod("in-a", namespace="a"), triton_pod("in-c", namespace="c")]
    assert [
        t["pod"]
        for t in scrape_targets(config, "podMonitor/tritonscale-system/ts-tritonscale-triton/0", pods)
    ] == ["in-a"]


def test_pod_monitor_options_job_label_pod_target_labels_port_number_and_metric_relabelings() -> None:
    monitor = pod_monitor("triton")
    monitor["spec"]["jobLabel"] = "app.kubernetes.io/instance"
    monitor["spec"]["podTargetLabels"] = ["app.kubernetes.io/component"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    del endpoint["port"]
    endpoint.update(
        portNumber=8000,
        scrapeTimeout="5s",
        scheme="http",
        params={"format": ["prometheus"]},
        metricRelabelings=[{"action": "Drop", "sourceLabels": ["__name__"], "regex": "go_.*"}],
        relabelings=[{"action": "Replace", "targetLabel": "team", "replacement": "ml"}],
        tlsConfig={"insecureSkipVerify": True},
    )
    config = generate([monitor])
    scrape = job(config, "podMonitor/tritonscale-system/ts-tritonscale-triton/0")
    assert scrape["scrape_timeout"] == "5s"
    assert scrape["params"] == {"format": ["prometheus"]}
    assert scrape["metric_relabel_configs"] == [
        {"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"}
    ]
    assert config.problems == (
        "PodMonitor tritonscale-system/ts-tritonscale-triton endpoint 0: ignored tlsConfig (not supported by the sandbox)",
    )
    [target] = scrape_targets(
        config, "podMonitor/tritonscale-system/ts-tritonscale-triton/0", [triton_pod("bert-0")]
    )
    assert target["job"] == "bert"
    assert target["app_kubernetes_io_component"] == "triton"
    assert target["endpoint"] == "8000"
    assert target["instance"] == "127.0.9.9:8000"
    assert target["team"] == "ml"


def test_a_monitor_that_cannot_be_translated_is_skipped_and_reported() -> None:
    bad_relabeling = pod_monitor("triton")
    bad_relabeling["spec"]["podMetricsEndpoints"][0]["relabelings"] = [
        {"source_labels": ["x"], "targetLabel": "y"}
    ]
    bad_selector = pod_monitor("router")
    bad_selector["spec"]["selector"]["matchExpressions"] = [{"key": "a", "operator": "Near", "values": ["b"]}]
    config = generate([bad_relabeling, bad_selector])
    assert config.config["scrape_configs"] == []
    assert config.problems == (
        "PodMonitor tritonscale-system/ts-tritonscale-router skipped: unknown matchExpressions operator 'Near'",
        "PodMonitor tritonscale-system/ts-tritonscale-triton skipped: unknown relabeling fields ['source_labels']",
    )


def test_relabelings_become_snake_case_with_lower_case_actions() -> None:
    assert relabeling(
        {
            "sourceLabels": ["a", "b"],
            "separator": "-",
            "targetLabel": "c",
            "regex": "(.*)",
            "modulus": 4,
            "replacement": "$1",
            "action": "HashMod",
        }
    ) == {
        "source_labels": ["a", "b"],
        "separator": "-",
        "target_label": "c",
        "regex": "(.*)",
        "modulus": 4,
        "replacement": "$1",
        "action": "hashmod",
    }


# ---------------------------------------------------------------- selectors

# Few keys and values, "a.b" beside "axb": collisions (and unescaped dots) are found quickly.
LABEL_KEYS = st.sampled_from(["app", "app.kubernetes.io/name"])
LABEL_VALUES = st.sampled_from(["a.b", "axb", "x-y"])
EXPRESSIONS = st.one_of(
    st.builds(
        lambda key, operator, values: {"key": key, "operator": operator, "values": values},
        LABEL_KEYS,
        st.sampled_from(["In", "NotIn"]),
        st.lists(LABEL_VALUES, min_size=1, max_size=3),
    ),
    st.builds(
        lambda key, operator: {"key": key, "operator": operator},
        LABEL_KEYS,
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
)


@given(
    match_labels=st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2),
    expressions=st.lists(EXPRESSIONS, max_size=3),
    labels=st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3),
)
def test_selector_relabelings_keep_exactly_the_pods_the_selector_selects(
    match_labels: dict[str, str], expressions: list[dict[str, Any]], labels: dict[str, str]
) -> None:
    selector = {"matchLabels": match_labels, "matchExpressions": expressions}
    meta: dict[str, str] = {}
    for key, value in labels.items():
        meta[f"__meta_kubernetes_pod_label_{sanitize_label_name(key)}"] = value
        meta[f"__meta_kubernetes_pod_labelpresent_{sanitize_label_name(key)}"] = "true"
    kept = apply_relabelings(meta, selector_relabelings(selector)) is not None
    assert kept == selector_matches(selector, labels)


def test_selector_rules_for_each_operator_and_escaped_values() -> None:
    rules = selector_relabelings(
        {
            "matchLabels": {"app": "a.b"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["x", "y"]},
                {"key": "tier", "operator": "NotIn", "values": ["z"]},
                {"key": "app.kubernetes.io/name", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    present = "__meta_kubernetes_pod_labelpresent_"
    assert [(r["action"], r["source_labels"][-1], r["regex"]) for r in rules] == [
        ("keep", f"{present}app", r"(a\.b);true"),
        ("keep", f"{present}tier", "(x|y);true"),
        ("drop", f"{present}tier", "(z);true"),
        ("keep", f"{present}app_kubernetes_io_name", "true"),
        ("drop", f"{present}canary", "true"),
    ]
    with pytest.raises(ValueError, match="needs values"):
        selector_relabelings({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})


# ---------------------------------------------------------------- ServiceMonitor


def test_the_chart_service_monitor_scrapes_the_pods_behind_the_service_port() -> None:
    operator_pod = pod(
        "ts-tritonscale-abc",
        "tritonscale-system",
        OPERATOR_LABELS,
        ports=(("metrics", 8080), ("health", 8081)),
    )
    elsewhere = pod("ts-tritonscale-x", "other", OPERATOR_LABELS, ports=(("metrics", 8080),))
    unrelated = pod("web", "tritonscale-system", {"app": "web"}, ports=(("metrics", 8080),))
    services = [service(), service("web", labels={"app": "web"}, selector={"app": "web"})]
    config = generate(service_monitors=[service_monitor()], services=services)
    name = "serviceMonitor/tritonscale-system/ts-tritonscale/0/tritonscale-system/ts-tritonscale"
    assert [j["job_name"] for j in config.config["scrape_configs"]] == [name]
    scrape = job(config, name)
    assert scrape["honor_labels"] is True
    assert scrape["scrape_interval"] == "30s"
    assert scrape["file_sd_configs"][0]["files"] == [str(TARGETS_DIR / "pods-tritonscale-system.json")]
    assert scrape_targets(config, name, [operator_pod, elsewhere, unrelated]) == [
        {
            "namespace": "tritonscale-system",
            "service": "ts-tritonscale",
            "pod": "ts-tritonscale-abc",
            "container": "main",
            "endpoint": "metrics",
            "job": "ts-tritonscale",
            "instance": "127.0.9.9:8080",
        }
    ]


def test_service_monitor_numeric_target_port_job_label_target_labels_and_service_meta() -> None:
    monitor = service_monitor(
        relabelings=[{"sourceLabels": ["__meta_kubernetes_service_label_team"], "targetLabel": "team"}]
    )
    monitor["spec"]["jobLabel"] = "app.kubernetes.io/name"
    monitor["spec"]["targetLabels"] = ["app.kubernetes.io/instance", "missing"]
    svc = service(target_port=8080)
    svc["metadata"]["labels"]["team"] = "ml"
    config = generate(service_monitors=[monitor], services=[svc])
    name = "serviceMonitor/tritonscale-system/ts-tritonscale/0/tritonscale-system/ts-tritonscale"
    assert {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_number"],
        "regex": "8080",
    } in job(config, name)["relabel_configs"]
    operator_pod = pod(
        "op", "tritonscale-system", OPERATOR_LABELS, ports=(("http-metrics", 8080), ("health", 8081))
    )
    [target] = scrape_targets(config, name, [operator_pod])
    assert target["job"] == "tritonscale"
    assert target["app_kubernetes_io_instance"] == "ts"
    assert "missing" not in target
    assert target["team"] == "ml"
    assert target["instance"] == "127.0.9.9:8080"


def test_service_monitor_skips_services_without_the_port_or_a_selector_and_honours_namespaces() -> None:
    no_port = service("no-port")
    no_port["spec"]["ports"] = [{"name": "web", "port": 80}]
    headless = service("manual")
    del headless["spec"]["selector"]
    other_namespace = service("elsewhere", namespace="other")
    config = generate(service_monitors=[service_monitor()], services=[no_port, headless, other_namespace])
    assert config.config["scrape_configs"] == []
    assert config.problems == (
        "ServiceMonitor tritonscale-system/ts-tritonscale endpoint 0: Service tritonscale-system/manual has no selector",
    )
    monitor = service_monitor()
    monitor["spec"]["namespaceSelector"] = {"any": True}
    config = generate(service_monitors=[monitor], services=[other_namespace])
    scrape = job(config, "serviceMonitor/tritonscale-system/ts-tritonscale/0/other/elsewhere")
    assert scrape["file_sd_configs"][0]["files"] == [str(TARGETS_DIR / "pods-other.json")]


# ---------------------------------------------------------------- pod discovery


def test_pod_target_groups_carry_the_pod_roles_labels() -> None:
    subject = triton_pod("bert-0", ports=(("metrics", METRICS_PORT),))
    subject["metadata"]["annotations"] = {"example.com/owner": "ml"}
    subject["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "bert-abc", "controller": True}]
    subject["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    ipv6 = triton_pod("bert-1", ip="fd00::1", ports=(("metrics", METRICS_PORT),))
    files = pod_target_groups(
        [subject, ipv6, triton_pod("pending", ip=None), triton_pod("x", namespace="empty", ip=None)]
    )
    assert sorted(files) == ["pods-empty.json", "pods-models.json"]
    assert files["pods-empty.json"] == []
    groups = files["pods-models.json"]
    assert [(g["targets"], g["labels"]["__meta_kubernetes_pod_container_name"]) for g in groups] == [
        (["127.0.9.9:8002"], "main"),
        (["127.0.9.9"], "sidecar"),
        (["127.0.9.9"], "init"),
        (["[fd00::1]:8002"], "main"),
        (["fd00::1"], "sidecar"),
    ]
    labels = groups[0]["labels"]
    assert labels == labels | {
        "__meta_kubernetes_namespace": "models",
        "__meta_kubernetes_pod_name": "bert-0",
        "__meta_kubernetes_pod_ip": "127.0.9.9",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": "node-0",
        "__meta_kubernetes_pod_uid": "uid-bert-0",
        "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
        "__meta_kubernetes_pod_controller_name": "bert-abc",
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "bert",
        "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_instance": "true",
        "__meta_kubernetes_pod_annotation_example_com_owner": "ml",
        "__meta_kubernetes_pod_annotationpresent_example_com_owner": "true",
        "__meta_kubernetes_pod_container_image": "tritonserver",
        "__meta_kubernetes_pod_container_init": "false",
        "__meta_kubernetes_pod_container_port_name": "metrics",
        "__meta_kubernetes_pod_container_port_number": "8002",
        "__meta_kubernetes_pod_container_port_protocol": "TCP",
    }
    assert groups[2]["labels"]["__meta_kubernetes_pod_container_init"] == "true"


# ---------------------------------------------------------------- rules and the whole config


def test_each_prometheus_rule_becomes_a_rule_file_the_config_lists() -> None:
    other = prometheus_rule()
    other["metadata"] = {"name": "extra", "namespace": "models"}
    other["spec"] = {"groups": [{"name": "x", "rules": [{"record": "y", "expr": "1"}]}]}
    config = generate(rules=[prometheus_rule(), other], scrape_interval_s=0.5)
    assert config.rule_files == {
        "models-extra.yaml": {"groups": other["spec"]["groups"]},
        "tritonscale-system-ts-tritonscale.yaml": {"groups": prometheus_rule()["spec"]["groups"]},
    }
    assert config.config["rule_files"] == [
        str(RULES_DIR / "models-extra.yaml"),
        str(RULES_DIR / "tritonscale-system-ts-tritonscale.yaml"),
    ]
    assert config.config["global"] == {"scrape_interval": "500ms", "evaluation_interval": "500ms"}


def test_promtool_accepts_the_config_generated_from_the_charts_objects(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run scripts/install-system-deps.sh"
    config = prometheus_config(
        [pod_monitor("triton"), pod_monitor("router")],
        [service_monitor()],
        [service()],
        [prometheus_rule()],
        rules_dir=tmp_path / "rules",
        targets_dir=tmp_path / "targets",
    )
    (tmp_path / "rules").mkdir()
    for name, content in config.rule_files.items():
        (tmp_path / "rules" / name).write_text(yaml.safe_dump(content))
    path = tmp_path / "prometheus.yml"
    text = yaml.safe_dump(config.config, sort_keys=False)
    assert "&id" not in text  # no YAML anchors from shared rules
    path.write_text(text)
    checked = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    chart_rules = sum(len(group["rules"]) for group in yaml.safe_load(CHART_RULES.read_text())["groups"])
    assert f"SUCCESS: {chart_rules} rules found" in checked.stdout


def test_the_crds_are_namespaced_v1_with_open_specs() -> None:
    assert sorted(c["spec"]["names"]["kind"] for c in MONITORING_CRDS) == [
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    for crd in MONITORING_CRDS:
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.monitoring.coreos.com"
        assert crd["spec"]["scope"] == "Namespaced"
        [version] = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


# ---------------------------------------------------------------- ClusterPrometheus's sync, not started


class FakeApi:
    """The API server as ClusterPrometheus lists it; kinds without a CRD answer 404."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {"/api/v1/services": [], "/api/v1/pods": []}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        assert method == "GET"
        if path not in self.objects:
            raise urllib.error.HTTPError(path, 404, "Not Found", Message(), io.BytesIO(b""))
        return {"items": self.objects[path]}


def test_sync_writes_config_targets_and_rules_and_only_reports_changes(tmp_path: Path) -> None:
    api = FakeApi()
    prometheus = ClusterPrometheus(api, tmp_path / "prometheus", scrape_interval_s=2)
    assert prometheus.sync()  # no CRDs yet: an empty config
    assert yaml.safe_load(prometheus.config_path.read_text())["scrape_configs"] == []
    assert not prometheus.sync()

    base = "/apis/monitoring.coreos.com/v1"
    api.objects[f"{base}/podmonitors"] = [pod_monitor("triton")]
    api.objects[f"{base}/prometheusrules"] = [prometheus_rule()]
    api.objects["/api/v1/pods"] = [triton_pod("bert-0")]
    assert prometheus.sync()
    config = yaml.safe_load(prometheus.config_path.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == [
        "podMonitor/tritonscale-system/ts-tritonscale-triton/0"
    ]
    rule_file = prometheus.rules_dir / "tritonscale-system-ts-tritonscale.yaml"
    assert config["rule_files"] == [str(rule_file)]
    assert yaml.safe_load(rule_file.read_text())["groups"] == prometheus_rule()["spec"]["groups"]
    targets = prometheus.targets_dir / "pods-models.json"
    assert '"127.0.9.9:8002"' in targets.read_text()

    # A new pod changes the targets, not the config: no reload needed.
    api.objects["/api/v1/pods"] = [triton_pod("bert-0"), triton_pod("bert-1", namespace="nlp")]
    assert not prometheus.sync()
    assert (prometheus.targets_dir / "pods-nlp.json").exists()

    api.objects[f"{base}/prometheusrules"] = []
    api.objects["/api/v1/pods"] = [triton_pod("bert-0")]
    assert prometheus.sync()
    assert not rule_file.exists()
    assert not (prometheus.targets_dir / "pods-nlp.json").exists()
    assert "rule files []" in prometheus.sync_log_path.read_text()
    assert prometheus.reloads == 0  # never started: nothing to reload
    prometheus.stop()
    prometheus.stop()
