"""The sandbox's stand-in for the Prometheus Operator: a real Prometheus (Debian's binary)
that scrapes a sandbox :class:`~tritonscale_sandbox.cluster.Cluster` through the Helm chart's
own monitoring objects (``PodMonitor``, ``ServiceMonitor`` and ``PrometheusRule`` of
``monitoring.coreos.com/v1``), with targets discovered from the real kube-apiserver.

- :data:`MONITORING_CRDS` / :func:`install_monitoring_crds`: minimal CRDs for the three kinds
  (schema-less specs), so ``helm install`` with the chart's monitoring switches on works.
- :func:`prometheus_config`: the pure translation of those objects into a Prometheus config
  and rule files, shaped like the operator's (job, namespace, pod, container, endpoint and
  service labels; the monitors' relabelings applied after the operator-style ones).
- :func:`pod_target_groups`: the pure pod discovery (see below).
- :class:`ClusterPrometheus`: Prometheus on a loopback port whose config follows the cluster:
  a thread lists the objects every few seconds and reloads Prometheus when the generated config
  or rules change.

Why every monitor becomes pod discovery: in the sandbox, pods run as local processes with pod
IPs on 127.0.0.0/8, and the API server rejects EndpointSlices (and Endpoints) with loopback
addresses ("may not be in the loopback range"), so the ``endpoints`` and ``endpointslice``
roles the real operator uses for ServiceMonitors would find nothing. A ServiceMonitor is
therefore followed through the Services its selector matches: one scrape job per (endpoint,
Service) keeps the pods that match the Service's ``spec.selector`` and the container port that
the named Service port targets. Limits: a numeric ``targetPort`` only matches ports the pod
declares (as ``containerPort``), Services without a selector give no targets, and TLS or
authentication settings of endpoints are ignored (reported in
:attr:`GeneratedConfig.problems`).

Why the pods reach Prometheus through files: Debian builds Prometheus without Kubernetes
discovery (``kubernetes_sd_configs`` does not parse; Debian dropped client-go), so the sync
thread lists the pods itself and writes, for ``file_sd_configs``, the targets and
``__meta_kubernetes_pod_*`` labels Prometheus's ``role: pod`` would have produced. Targets
follow pod changes within about one sync interval. A Prometheus built with Kubernetes discovery
would use the same relabelings with a ``kubernetes_sd_configs`` job of role ``pod`` instead.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml

from tritonscale_sandbox.cluster import Cluster
from tritonscale_sandbox.net import free_port
from tritonscale_sandbox.process import LocalProcess
from tritonscale_sandbox.process import stop as stop_process
from tritonscale_sandbox.prometheus import launch_prometheus, prometheus_binary

__all__ = [
    "MONITORING_API",
    "MONITORING_CRDS",
    "POD_TARGETS_GLOB",
    "ClusterPrometheus",
    "GeneratedConfig",
    "KubeApi",
    "MonitoringObjects",
    "install_monitoring_crds",
    "list_monitoring_objects",
    "pod_target_groups",
    "pod_targets_file",
    "prometheus_config",
    "relabeling",
    "sanitize_label_name",
    "selector_matches",
    "selector_relabelings",
]

MONITORING_GROUP = "monitoring.coreos.com"
MONITORING_API = f"{MONITORING_GROUP}/v1"

Obj = Mapping[str, Any]


# --------------------------------------------------------------------------------------------
# CRDs


def _crd(kind: str, plural: str, short_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{MONITORING_GROUP}",
            "labels": {"app.kubernetes.io/managed-by": "tritonscale-sandbox"},
        },
        "spec": {
            "group": MONITORING_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["prometheus-operator"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    # Only the translation here reads the specs; it reports what it cannot use.
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


#: Minimal PodMonitor, ServiceMonitor and PrometheusRule CRDs (the real ones' names and kinds).
MONITORING_CRDS: tuple[dict[str, Any], ...] = (
    _crd("PodMonitor", "podmonitors", "pmon"),
    _crd("ServiceMonitor", "servicemonitors", "smon"),
    _crd("PrometheusRule", "prometheusrules", "promrule"),
)


class KubeApi(Protocol):
    """What this module needs of a cluster (:class:`~tritonscale_sandbox.cluster.Cluster` has it)."""

    def request(self, method: str, path: str, body: Any = None) -> Any: ...


def install_monitoring_crds(cluster: Cluster, *, timeout_s: float = 60.0) -> None:
    """Apply :data:`MONITORING_CRDS` to a :class:`~tritonscale_sandbox.cluster.Cluster` and wait
    until they are Established and their lists answer."""
    cluster.apply_yaml(list(MONITORING_CRDS))
    for crd in MONITORING_CRDS:
        cluster.wait_for(f"crd/{crd['metadata']['name']}", "condition=Established", timeout_s=timeout_s)

    # Established comes before the storage answers (429 while it initialises); helm and the
    # sync thread should not see that.
    def lists_answer() -> bool:
        for crd in MONITORING_CRDS:
            cluster.request("GET", f"/apis/{MONITORING_API}/{crd['spec']['names']['plural']}")
        return True

    cluster.wait_until(lists_answer, "the monitoring CRDs' lists to answer", timeout_s=timeout_s)


# --------------------------------------------------------------------------------------------
# Translation (pure)


class MonitoringObjects(NamedTuple):
    """The cluster objects the Prometheus config is generated from (API server JSON)."""

    pod_monitors: list[dict[str, Any]]
    service_monitors: list[dict[str, Any]]
    services: list[dict[str, Any]]
    prometheus_rules: list[dict[str, Any]]


class GeneratedConfig(NamedTuple):
    """:func:`prometheus_config`'s result."""

    #: prometheus.yml as a dict.
    config: dict[str, Any]
    #: Rule file contents (``{"groups": [...]}``) by file name; the config lists them in rules_dir.
    rule_files: dict[str, dict[str, Any]]
    #: Objects or fields that were skipped or ignored, one sentence each.
    problems: tuple[str, ...]


_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
# Endpoint fields the translation cannot honour (they need Secrets or files from the cluster).
_UNSUPPORTED_ENDPOINT_FIELDS = (
    "tlsConfig",
    "bearerTokenSecret",
    "bearerTokenFile",
    "basicAuth",
    "authorization",
    "oauth2",
    "proxyUrl",
)
_POD = "__meta_kubernetes_pod"


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as Prometheus meta labels spell it (non ``[a-zA-Z0-9_]`` -> ``_``)."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def _escape(value: str) -> str:
    # RE2 (Prometheus) accepts a backslash before any punctuation, like Python's re.
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (which takes no fractions: 0.5 -> 500ms)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def selector_relabelings(selector: Obj, prefix: str = _POD) -> list[dict[str, Any]]:
    """``keep``/``drop`` rules that pass exactly the targets whose ``<prefix>_label_*`` match a
    LabelSelector (``matchLabels`` and ``matchExpressions``), as the Prometheus Operator writes
    them. Raises ValueError for an unknown operator or an In/NotIn without values."""
    rules: list[dict[str, Any]] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        name = sanitize_label_name(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"{prefix}_label_{name}", f"{prefix}_labelpresent_{name}"],
                "regex": f"({_escape(str(value))});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        name = sanitize_label_name(str(expression["key"]))
        operator = expression.get("operator")
        values = [str(v) for v in expression.get("values") or []]
        if operator in {"In", "NotIn"}:
            if not values:
                raise ValueError(f"matchExpressions {operator} on {expression['key']!r} needs values")
            rules.append(
                {
                    "action": "keep" if operator == "In" else "drop",
                    "source_labels": [f"{prefix}_label_{name}", f"{prefix}_labelpresent_{name}"],
                    "regex": f"({'|'.join(_escape(v) for v in values)});true",
                }
            )
        elif operator in {"Exists", "DoesNotExist"}:
            rules.append(
                {
                    "action": "keep" if operator == "Exists" else "drop",
                    "source_labels": [f"{prefix}_labelpresent_{name}"],
                    "regex": "true",
                }
            )
        else:
            raise ValueError(f"unknown matchExpressions operator {operator!r}")
    return rules


def selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector selects an object with `labels` (an empty selector selects all)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = str(expression["key"]), expression.get("operator")
        values = {str(v) for v in expression.get("values") or []}
        if operator == "In":
            matched = key in labels and labels[key] in values
        elif operator == "NotIn":
            matched = key not in labels or labels[key] not in values
        elif operator == "Exists":
            matched = key in labels
        elif operator == "DoesNotExist":
            matched = key not in labels
        else:
            raise ValueError(f"unknown matchExpressions operator {operator!r}")
        if not matched:
            return False
    return True


def relabeling(config: Obj) -> dict[str, Any]:
    """One Prometheus Operator ``RelabelConfig`` (camelCase) as a Prometheus ``relabel_config``."""
    unknown = set(config) - set(_RELABEL_KEYS)
    if unknown:
        raise ValueError(f"unknown relabeling fields {sorted(unknown)}")
    converted = {_RELABEL_KEYS[key]: value for key, value in config.items()}
    if "action" in converted:
        # The operator accepts any case (Replace, LabelMap); Prometheus wants lower case.
        converted["action"] = str(converted["action"]).lower()
    return converted


def _set(target_label: str, value: str) -> dict[str, Any]:
    """A rule that sets a label to a constant."""
    return {"target_label": target_label, "replacement": value}


def _copy(source_label: str, target_label: str) -> dict[str, Any]:
    return {"source_labels": [source_label], "target_label": target_label}


def _port_keep(port: str | int) -> dict[str, Any]:
    """Keep the pod targets of one container port, by name or by number."""
    if isinstance(port, int):
        return {"action": "keep", "source_labels": [f"{_POD}_container_port_number"], "regex": str(port)}
    return {"action": "keep", "source_labels": [f"{_POD}_container_port_name"], "regex": _escape(port)}


def _name(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _namespaces(monitor: Obj) -> list[str] | None:
    """The namespaces a monitor's namespaceSelector names; None for any."""
    selector = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    names = [str(n) for n in selector.get("matchNames") or []]
    return sorted(set(names)) if names else [_name(monitor)[0]]


def _file_sd(targets_dir: Path, namespaces: Sequence[str] | None) -> dict[str, Any]:
    """A job's pod discovery: the files :func:`pod_target_groups` describes, in `targets_dir`,
    of the given namespaces (None: all)."""
    if namespaces is None:
        files = [str(targets_dir / POD_TARGETS_GLOB)]
    else:
        files = [str(targets_dir / pod_targets_file(n)) for n in namespaces]
    # Changes arrive through inotify at once; the refresh is a fallback.
    return {"file_sd_configs": [{"files": files, "refresh_interval": "5s"}]}


def _endpoint_fields(endpoint: Obj, where: str, problems: list[str]) -> dict[str, Any]:
    """The scrape_config fields an endpoint sets directly (interval, path, scheme, ...)."""
    fields: dict[str, Any] = {"honor_labels": bool(endpoint.get("honorLabels", False))}
    if endpoint.get("interval"):
        fields["scrape_interval"] = str(endpoint["interval"])
    if endpoint.get("scrapeTimeout"):
        fields["scrape_timeout"] = str(endpoint["scrapeTimeout"])
    fields["metrics_path"] = str(endpoint.get("path") or "/metrics")
    if endpoint.get("scheme"):
        fields["scheme"] = str(endpoint["scheme"])
    if endpoint.get("params"):
        fields["params"] = {str(k): [str(v) for v in vs] for k, vs in endpoint["params"].items()}
    if "honorTimestamps" in endpoint:
        fields["honor_timestamps"] = bool(endpoint["honorTimestamps"])
    if "followRedirects" in endpoint:
        fields["follow_redirects"] = bool(endpoint["followRedirects"])
    if endpoint.get("metricRelabelings"):
        fields["metric_relabel_configs"] = [relabeling(r) for r in endpoint["metricRelabelings"]]
    ignored = [f for f in _UNSUPPORTED_ENDPOINT_FIELDS if endpoint.get(f)]
    if ignored:
        problems.append(f"{where}: ignored {', '.join(ignored)} (not supported by the sandbox)")
    return fields


def _pod_labels_rules(namespace_source: bool = True) -> list[dict[str, Any]]:
    """namespace, container and pod labels, as the operator sets them for pod targets."""
    rules = [_copy("__meta_kubernetes_namespace", "namespace")] if namespace_source else []
    return [*rules, _copy(f"{_POD}_container_name", "container"), _copy(f"{_POD}_name", "pod")]


def _pod_target_labels(names: Iterable[str]) -> list[dict[str, Any]]:
    return [
        {
            "source_labels": [f"{_POD}_label_{sanitize_label_name(name)}"],
            "target_label": sanitize_label_name(name),
            "regex": "(.+)",
            "replacement": "${1}",
        }
        for name in names
    ]


def _running_only() -> dict[str, Any]:
    """Drop pods that are done (a Job's, an evicted one), as the operator does."""
    return {"action": "drop", "source_labels": [f"{_POD}_phase"], "regex": "(Failed|Succeeded)"}


def _pod_monitor_jobs(monitor: Obj, targets_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    namespace, name = _name(monitor)
    spec = monitor.get("spec") or {}
    selector = selector_relabelings(spec.get("selector") or {})
    sd = _file_sd(targets_dir, _namespaces(monitor))
    jobs = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        where = f"PodMonitor {namespace}/{name} endpoint {index}"
        port: str | int | None = endpoint.get("port")
        if port is None and endpoint.get("portNumber") is not None:
            port = int(endpoint["portNumber"])
        if port is None and endpoint.get("targetPort") is not None:
            port = endpoint["targetPort"]
        rules = [*selector, _running_only()]
        if port is not None:
            rules.append(_port_keep(port))
        rules += _pod_labels_rules()
        rules += _pod_target_labels(spec.get("podTargetLabels") or [])
        rules.append(_set("job", f"{namespace}/{name}"))
        if spec.get("jobLabel"):
            rules += [
                {
                    "source_labels": [f"{_POD}_label_{sanitize_label_name(str(spec['jobLabel']))}"],
                    "target_label": "job",
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            ]
        if port is not None:
            rules.append(_set("endpoint", str(port)))
        rules += [relabeling(r) for r in endpoint.get("relabelings") or []]
        jobs.append(
            {
                "job_name": f"podMonitor/{namespace}/{name}/{index}",
                **_endpoint_fields(endpoint, where, problems),
                **sd,
                "relabel_configs": rules,
            }
        )
    return jobs


def _service_target_port(service: Obj, endpoint: Obj) -> tuple[str, str | int] | None:
    """(the endpoint label, the pod port by name or number) an endpoint reaches through a
    Service; None when the Service has no such port."""
    if endpoint.get("port") is not None:
        wanted = str(endpoint["port"])
        for service_port in (service.get("spec") or {}).get("ports") or []:
            if service_port.get("name") == wanted:
                target = service_port.get("targetPort", service_port.get("port"))
                return wanted, int(target) if isinstance(target, int) else str(target)
        return None
    if endpoint.get("targetPort") is not None:
        target = endpoint["targetPort"]
        return str(target), int(target) if isinstance(target, int) else str(target)
    raise ValueError("the endpoint names neither port nor targetPort")


def _service_monitor_jobs(
    monitor: Obj, services: Sequence[Obj], targets_dir: Path, problems: list[str]
) -> list[dict[str, Any]]:
    namespace, name = _name(monitor)
    spec = monitor.get("spec") or {}
    namespaces = _namespaces(monitor)
    service_selector = spec.get("selector") or {}
    selected = [
        s
        for s in services
        if (namespaces is None or _name(s)[0] in namespaces)
        and selector_matches(service_selector, (s.get("metadata") or {}).get("labels") or {})
    ]
    jobs = []
    for index, endpoint in enumerate(spec.get("endpoints") or []):
        where = f"ServiceMonitor {namespace}/{name} endpoint {index}"
        fields = _endpoint_fields(endpoint, where, problems)
        for service in sorted(selected, key=_name):
            service_namespace, service_name = _name(service)
            pod_selector = (service.get("spec") or {}).get("selector") or {}
            if not pod_selector:
                problems.append(f"{where}: Service {service_namespace}/{service_name} has no selector")
                continue
            resolved = _service_target_port(service, endpoint)
            if resolved is None:
                continue
            endpoint_label, pod_port = resolved
            service_labels = (service.get("metadata") or {}).get("labels") or {}
            rules = [
                *selector_relabelings({"matchLabels": pod_selector}),
                _running_only(),
                _port_keep(pod_port),
            ]
            # What the endpoints role would have told the monitor's own relabelings.
            rules += [
                _set("__meta_kubernetes_service_name", service_name),
                _set("__meta_kubernetes_endpoint_port_name", endpoint_label),
                _copy(f"{_POD}_ready", "__meta_kubernetes_endpoint_ready"),
            ]
            for key, value in sorted(service_labels.items()):
                label = sanitize_label_name(key)
                rules += [
                    _set(f"__meta_kubernetes_service_label_{label}", str(value)),
                    _set(f"__meta_kubernetes_service_labelpresent_{label}", "true"),
                ]
            rules += [_copy("__meta_kubernetes_namespace", "namespace"), _set("service", service_name)]
            rules += _pod_labels_rules(namespace_source=False)
            rules += [
                _set(sanitize_label_name(key), str(service_labels[key]))
                for key in spec.get("targetLabels") or []
                if key in service_labels
            ]
            rules += _pod_target_labels(spec.get("podTargetLabels") or [])
            job_label = spec.get("jobLabel")
            job = str(service_labels.get(job_label) or service_name) if job_label else service_name
            rules += [_set("job", job), _set("endpoint", endpoint_label)]
            rules += [relabeling(r) for r in endpoint.get("relabelings") or []]
            jobs.append(
                {
                    "job_name": f"serviceMonitor/{namespace}/{name}/{index}/{service_namespace}/{service_name}",
                    **fields,
                    **_file_sd(targets_dir, [service_namespace]),
                    "relabel_configs": rules,
                }
            )
    return jobs


def prometheus_config(
    pod_monitors: Iterable[Obj],
    service_monitors: Iterable[Obj],
    services: Iterable[Obj],
    prometheus_rules: Iterable[Obj],
    *,
    rules_dir: Path,
    targets_dir: Path,
    scrape_interval_s: float = 5.0,
) -> GeneratedConfig:
    """The Prometheus config (and rule files) that scrape what the monitors select.

    Pods are found in the files :func:`pod_target_groups` describes, in ``targets_dir``.

    Each PodMonitor endpoint is one job ``podMonitor/<ns>/<name>/<i>``; each ServiceMonitor
    endpoint is one job per selected Service, ``serviceMonitor/<ns>/<name>/<i>/<svc ns>/<svc>``
    (see the module docstring for why). Targets get ``namespace``, ``pod``, ``container``,
    ``endpoint`` and ``job`` (``<ns>/<name>`` of a PodMonitor; the Service's name, and a
    ``service`` label, for a ServiceMonitor). Each PrometheusRule becomes
    ``<rules_dir>/<ns>-<name>.yaml``. A monitor that cannot be translated (an unknown selector
    operator or relabeling field) is left out and named in ``problems``.
    """
    problems: list[str] = []
    jobs: list[dict[str, Any]] = []
    all_services = list(services)
    for monitor in sorted(pod_monitors, key=_name):
        try:
            jobs += _pod_monitor_jobs(monitor, targets_dir, problems)
        except (ValueError, KeyError, TypeError) as error:
            problems.append("PodMonitor {}/{} skipped: {}".format(*_name(monitor), error))
    for monitor in sorted(service_monitors, key=_name):
        try:
            jobs += _service_monitor_jobs(monitor, all_services, targets_dir, problems)
        except (ValueError, KeyError, TypeError) as error:
            problems.append("ServiceMonitor {}/{} skipped: {}".format(*_name(monitor), error))
    rule_files = {
        "{}-{}.yaml".format(*_name(rule)): {"groups": list((rule.get("spec") or {}).get("groups") or [])}
        for rule in sorted(prometheus_rules, key=_name)
    }
    interval = _duration(scrape_interval_s)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    if rule_files:
        config["rule_files"] = [str(rules_dir / file_name) for file_name in rule_files]
    # A JSON round trip unshares the rule dicts that jobs have in common, so that YAML output
    # has no anchors and callers may edit one job without touching another.
    return GeneratedConfig(json.loads(json.dumps(config)), rule_files, tuple(problems))


# --------------------------------------------------------------------------------------------
# Pod discovery (pure): what Prometheus's kubernetes pod role would find, as file_sd files

#: The pattern that matches every namespace's pod targets file.
POD_TARGETS_GLOB = "pods-*.json"


def pod_targets_file(namespace: str) -> str:
    """The name of the file_sd file holding one namespace's pod targets."""
    return f"pods-{namespace}.json"


def _pod_ready(pod: Obj) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", "unknown")).lower()
    return "unknown"


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _pod_meta_labels(pod: Obj) -> dict[str, str]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    labels = {
        "__meta_kubernetes_namespace": _name(pod)[0],
        f"{_POD}_name": str(meta.get("name") or ""),
        f"{_POD}_ip": str(status.get("podIP") or ""),
        f"{_POD}_ready": _pod_ready(pod),
        f"{_POD}_phase": str(status.get("phase") or ""),
        f"{_POD}_node_name": str(spec.get("nodeName") or ""),
        f"{_POD}_host_ip": str(status.get("hostIP") or ""),
        f"{_POD}_uid": str(meta.get("uid") or ""),
    }
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{_POD}_controller_kind"] = str(owner.get("kind") or "")
            labels[f"{_POD}_controller_name"] = str(owner.get("name") or "")
    for kind, values in (("label", meta.get("labels")), ("annotation", meta.get("annotations"))):
        for key, value in (values or {}).items():
            name = sanitize_label_name(key)
            labels[f"{_POD}_{kind}_{name}"] = str(value)
            labels[f"{_POD}_{kind}present_{name}"] = "true"
    return labels


def pod_target_groups(pods: Iterable[Obj]) -> dict[str, list[dict[str, Any]]]:
    """file_sd files (name -> target groups), one per namespace, holding the targets and
    ``__meta_kubernetes_*`` labels that Prometheus's kubernetes pod role would discover: for each
    pod with an IP, one target per container port, and one (the bare pod IP) per container
    without ports, init containers included. The relabelings of :func:`prometheus_config`
    then select among them as they would among the pod role's."""
    files: dict[str, list[dict[str, Any]]] = {}
    for pod in sorted(pods, key=_name):
        groups = files.setdefault(pod_targets_file(_name(pod)[0]), [])
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:  # the pod role skips pods without an address too
            continue
        pod_labels = _pod_meta_labels(pod)
        spec = pod.get("spec") or {}
        for init, containers in ((False, spec.get("containers")), (True, spec.get("initContainers"))):
            for container in containers or []:
                container_labels = {
                    **pod_labels,
                    f"{_POD}_container_name": str(container.get("name") or ""),
                    f"{_POD}_container_image": str(container.get("image") or ""),
                    f"{_POD}_container_init": "true" if init else "false",
                }
                ports = container.get("ports") or []
                if not ports:
                    groups.append({"targets": [ip], "labels": container_labels})
                for port in ports:
                    number = int(port["containerPort"])
                    labels = {
                        **container_labels,
                        f"{_POD}_container_port_name": str(port.get("name") or ""),
                        f"{_POD}_container_port_number": str(number),
                        f"{_POD}_container_port_protocol": str(port.get("protocol") or "TCP"),
                    }
                    groups.append({"targets": [_host_port(ip, number)], "labels": labels})
    return files


# --------------------------------------------------------------------------------------------
# The running Prometheus


def _list(api: KubeApi, path: str) -> list[dict[str, Any]]:
    try:
        items: list[dict[str, Any]] = api.request("GET", path)["items"]
    except urllib.error.HTTPError as error:
        if error.code == 404:  # the CRD is not installed (yet): nothing of that kind
            return []
        raise
    return items


def list_monitoring_objects(api: KubeApi) -> MonitoringObjects:
    """The cluster's PodMonitors, ServiceMonitors, Services and PrometheusRules, all namespaces."""
    base = f"/apis/{MONITORING_API}"
    service_monitors = _list(api, f"{base}/servicemonitors")
    return MonitoringObjects(
        pod_monitors=_list(api, f"{base}/podmonitors"),
        service_monitors=service_monitors,
        services=_list(api, "/api/v1/services") if service_monitors else [],
        prometheus_rules=_list(api, f"{base}/prometheusrules"),
    )


class ClusterPrometheus(LocalProcess):
    """Prometheus on a loopback port, configured from a cluster's monitoring objects as the
    Prometheus Operator would configure it, and reloaded when they change. The sync thread
    also lists the pods and writes the targets the pod role would find
    (:func:`pod_target_groups`) for Prometheus's file discovery.

    Its files are in ``work_dir``: ``prometheus.yml``, ``rules/``, ``targets/``, ``data/``,
    the process's ``prometheus.log`` and the sync thread's ``sync.log`` (what changed, what
    failed).
    """

    def __init__(
        self,
        cluster: KubeApi,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        scrape_interval_s: float = 5.0,
        sync_interval_s: float = 2.0,
    ) -> None:
        """`scrape_interval_s` is the global scrape and rule evaluation interval (a monitor's
        own `interval` wins); `sync_interval_s` is how often the objects are listed again."""
        self.cluster = cluster
        self.host = host
        self.port = free_port(host)
        self.scrape_interval_s = scrape_interval_s
        self.sync_interval_s = sync_interval_s
        self.work_dir = work_dir.resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.binary = prometheus_binary()
        self.config_path = self.work_dir / "prometheus.yml"
        self.rules_dir = self.work_dir / "rules"
        self.targets_dir = self.work_dir / "targets"
        self.log_path = self.work_dir / "prometheus.log"
        self.sync_log_path = self.work_dir / "sync.log"
        #: Successful reloads after the first config (for checks).
        self.reloads = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._applied: GeneratedConfig | None = None
        self._targets: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop_sync = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_failure = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def sync(self) -> bool:
        """List the objects (and pods) again; write the pod targets that changed; when the
        config or rules differ from what Prometheus has, write them and (while it runs) reload
        it. Returns whether the config or rules changed. Raises what listing or reloading
        raised (the thread logs it and tries again next time)."""
        with self._lock:
            objects = list_monitoring_objects(self.cluster)
            if objects.pod_monitors or objects.service_monitors:
                self._write_targets(pod_target_groups(_list(self.cluster, "/api/v1/pods")))
            generated = prometheus_config(
                *objects,
                rules_dir=self.rules_dir,
                targets_dir=self.targets_dir,
                scrape_interval_s=self.scrape_interval_s,
            )
            applied = self._applied
            if applied is not None and generated[:2] == applied[:2]:
                return False
            self._write(generated)
            if self.is_running:
                self._reload()
                self.reloads += 1
            self._applied = generated
            self._remove_stale_rule_files(generated)
            jobs = [job["job_name"] for job in generated.config["scrape_configs"]]
            self._log(f"config written: jobs {jobs}, rule files {sorted(generated.rule_files)}")
            for problem in generated.problems:
                self._log(f"problem: {problem}")
            return True

    def _write_targets(self, files: Mapping[str, list[dict[str, Any]]]) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        texts = {name: json.dumps(groups, indent=1, sort_keys=True) for name, groups in files.items()}
        for name, text in texts.items():
            if self._targets.get(name) != text:  # unchanged files are not touched: no inotify churn
                _write_atomically(self.targets_dir / name, text)
        for path in self.targets_dir.glob(POD_TARGETS_GLOB):
            if path.name not in texts:  # a namespace without pods any more
                path.unlink(missing_ok=True)
        self._targets = texts

    def _write(self, generated: GeneratedConfig) -> None:
        # Rules first: the config names them, and a reload reads both.
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        for file_name, content in generated.rule_files.items():
            _write_atomically(self.rules_dir / file_name, yaml.safe_dump(content, sort_keys=False))
        _write_atomically(self.config_path, yaml.safe_dump(generated.config, sort_keys=False))

    def _remove_stale_rule_files(self, generated: GeneratedConfig) -> None:
        for path in self.rules_dir.glob("*.yaml"):
            if path.name not in generated.rule_files:
                path.unlink(missing_ok=True)

    def _reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as error:
            # Prometheus answers 500 with the reason (e.g. a rule that does not parse).
            reason = error.read().decode(errors="replace").strip()
            raise RuntimeError(f"reload refused ({error.code}): {reason}") from None

    def _log(self, message: str) -> None:
        with self.sync_log_path.open("a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")

    def _sync_loop(self) -> None:
        while not self._stop_sync.wait(self.sync_interval_s):
            try:
                self.sync()
                self._last_failure = ""
            except Exception as error:  # logged, and tried again next interval
                message = f"sync failed: {error!r}"
                if message != self._last_failure:  # once per distinct failure, not every interval
                    with contextlib.suppress(OSError):
                        self._log(message)
                self._last_failure = message

    def start(self, timeout_s: float = 30.0) -> ClusterPrometheus:
        """Write the config for the cluster's objects now, start Prometheus, wait until it is
        ready, then keep its config in step with the cluster from a daemon thread."""
        if self.is_running:
            raise RuntimeError("prometheus is already running")
        self._applied = None
        self.sync()
        self._process = launch_prometheus(
            self.binary,
            self.config_path,
            self.work_dir / "data",
            self.host,
            self.port,
            self.log_path,
            timeout_s,
        )
        self._stop_sync = threading.Event()
        self._thread = threading.Thread(target=self._sync_loop, name="cluster-prometheus-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the sync thread, then Prometheus; safe to call twice."""
        self._stop_sync.set()
        if self._thread is not None:
            # A sync in flight ends within its HTTP timeouts.
            self._thread.join(self.sync_interval_s + 60.0)
            self._thread = None
        if self._process is not None:
            stop_process(self._process, 10.0)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (``labels``, ``scrapePool``, ``health``, ``lastError``, ...)."""
        targets: list[dict[str, Any]] = self._get("/api/v1/targets?state=active")["activeTargets"]
        return targets

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups (``name``, ``file``, ``rules``) from ``/api/v1/rules``."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups


def _write_atomically(path: Path, text: str) -> None:
    # Prometheus may read at any moment (inotify, reload): never a half-written file.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
