"""A real Kubernetes control plane on loopback, for tests and the local sandbox.

The binaries come from ``scripts/build-testenv.sh`` (built from the Go module proxy into a
versioned folder under :func:`tritonscale_sandbox.paths.cache_root`). This module starts:

- **etcd** (data dir in the work dir, ``--unsafe-no-fsync`` because it is throw-away),
- **kube-apiserver** on ``https://127.0.0.1:<free port>`` with self-signed serving certs
  (``--cert-dir``), ``--authorization-mode=Node,RBAC``, the default admission plugins
  (PodSecurity included), a service-account signing key, and a static admin token
  (user ``tritonscale-admin`` in group ``system:masters``),
- **kube-controller-manager** (all default controllers: deployment, replicaset, garbage
  collector, namespace, serviceaccount, token, endpoints, endpointslice, disruption, ...),
- **kube-scheduler**,
- **kwok**, which plays the kubelet for the fake nodes described by :class:`NodePool`: nodes
  become Ready, and pods scheduled onto them become Running and Ready (Job pods Succeeded).

Nothing here imports a Kubernetes client library: the cluster is driven with the built
``kubectl`` (and urllib for the health endpoint).

Typical use::

    with Cluster.start(tmp_path / "cluster") as cluster:
        cluster.apply_yaml([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}])
        cluster.kubectl("get", "nodes")
        sa_config = cluster.service_account_kubeconfig("x", "operator", tmp_path / "sa.kubeconfig")

All servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from tritonscale_sandbox.net import free_ports, wait_for_port
from tritonscale_sandbox.paths import cache_root
from tritonscale_sandbox.process import die_with_parent, log_tail, spawn
from tritonscale_sandbox.process import stop as stop_process

__all__ = [
    "AKS_GPU_PRODUCT",
    "CAPACITY_TYPE_LABEL",
    "EKS_GPU_PRODUCT",
    "GAUDI_PRODUCT",
    "GAUDI_PRODUCT_LABEL",
    "GKE_GPU_PRODUCT",
    "GPU_PRODUCT",
    "KARPENTER_GPU_NAME",
    "KWOK_ANNOTATION",
    "KWOK_NODE_LABEL",
    "REQUIRED_BINARIES",
    "TPU_PRODUCT",
    "TPU_TOPOLOGY",
    "Cluster",
    "ClusterError",
    "KubectlError",
    "NodePool",
    "Taint",
    "default_node_pools",
    "find_bin_dir",
    "node_manifests",
]

REQUIRED_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
#: The annotation kwok is told to select: only nodes carrying it are faked by kwok.
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
#: The label every fake node carries (handy as a selector).
KWOK_NODE_LABEL = ("type", "kwok")
PROCESS_NODE_LABEL = ("tritonscale.io/sandbox-node", "process")
"""Marks nodes whose pods run as local processes (`tritonscale_sandbox.node_agent`), not in kwok."""

ADMIN_USER = "tritonscale-admin"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Addresses kwok writes into node and pod status; no traffic is ever sent to them.
KWOK_POD_CIDR = "10.244.0.0/16"
KWOK_NODE_IP = "10.243.0.1"

_LOG_TAIL_LINES = 40
# What the API server's audit log keeps: every request by a ServiceAccount (operators under
# test run as one), with metadata only; nothing of the control plane's own chatter.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}
_T = TypeVar("_T")


class ClusterError(RuntimeError):
    """The cluster (or one of its components) failed to start or misbehaved."""


class KubectlError(ClusterError):
    """A kubectl command exited non-zero; the message carries its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip() or stdout.strip()}")


# --------------------------------------------------------------------------------------------
# Fake node pools


@dataclass(frozen=True)
class Taint:
    """A node taint, e.g. ``Taint("karpenter.sh/capacity-type", "spot", "NoSchedule")``."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def to_manifest(self) -> dict[str, str]:
        """The taint as it appears in ``Node.spec.taints``."""
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class NodePool:
    """A group of identical fake (kwok) nodes.

    Nodes are named ``<name>-<i>`` (i from 0), spread round-robin over ``zones`` (label
    ``topology.kubernetes.io/zone``), and labelled with ``labels`` plus the standard
    ``kubernetes.io/hostname``/``os``/``arch``, ``node.kubernetes.io/instance-type``,
    ``topology.kubernetes.io/region``, ``karpenter.sh/nodepool: <name>`` and ``type: kwok``.
    ``allocatable`` is also used as capacity, e.g. ``{"cpu": "16", "memory": "64Gi",
    "pods": "110", "nvidia.com/gpu": "8"}``.
    """

    name: str
    count: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    allocatable: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "200Gi", "pods": "110"}
    )
    zones: tuple[str, ...] = ("zone-a", "zone-b")
    instance_type: str = "kwok.standard"
    region: str = "sandbox-1"
    process_backed: bool = False
    """Pods bound to these nodes run as real local processes under a
    `tritonscale_sandbox.node_agent.NodeAgent` (which also keeps the nodes Ready); kwok leaves
    them alone."""

    def node_names(self) -> list[str]:
        """Names of the nodes of this pool."""
        return [f"{self.name}-{i}" for i in range(self.count)]


ON_DEMAND = "on-demand"
SPOT = "spot"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
GPU_PRODUCT = "NVIDIA-A100-SXM4-40GB"
#: The accelerator products of the pools below, as each preset names them.
KARPENTER_GPU_NAME = "a100"
GKE_GPU_PRODUCT = "nvidia-tesla-a100"
EKS_GPU_PRODUCT = "NVIDIA-L4"
AKS_GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
TPU_PRODUCT = "tpu-v5-lite-podslice"
TPU_TOPOLOGY = "2x4"
GAUDI_PRODUCT = "gaudi2"
#: The node label the on-premises Gaudi pool names its product with (a custom preset's).
GAUDI_PRODUCT_LABEL = "accelerator.example.com/product"


def _gpu_allocatable(cpu: str, memory: str, resource: str = "nvidia.com/gpu") -> dict[str, str]:
    return {"cpu": cpu, "memory": memory, "ephemeral-storage": "800Gi", "pods": "110", resource: "8"}


def default_node_pools() -> list[NodePool]:
    """The node pools of a small Karpenter-on-EKS-like cluster, spread over zone-a and zone-b,
    with tainted pools that look like GKE, EKS managed node groups, AKS and an on-premises
    custom cluster beside them (a real cluster has one provider; these let one control plane
    check every preset).

    - ``cpu-ondemand``: 2 on-demand CPU nodes (m5.4xlarge: 16 CPU, 64Gi).
    - ``gpu-ondemand``: 2 on-demand GPU nodes (p4d.24xlarge: 96 CPU, 1152Gi, 8 x A100), not
      tainted (Karpenter taints nothing by itself).
    - ``gpu-spot``: 2 spot GPU nodes like the above, tainted
      ``karpenter.sh/capacity-type=spot:NoSchedule``.

    Every node of these three has ``karpenter.sh/capacity-type: on-demand|spot``; GPU nodes have
    ``nvidia.com/gpu.product: NVIDIA-A100-SXM4-40GB``, ``nvidia.com/gpu.count: "8"`` and
    ``karpenter.k8s.aws/instance-gpu-name: a100``.

    - ``gke-a100``, ``gke-a100-spot``: GKE A100 nodes (a2-highgpu-8g), tainted
      ``nvidia.com/gpu=present:NoSchedule`` as GKE does; the spot ones labelled
      ``cloud.google.com/gke-spot: "true"`` and tainted with it, as GKE recommends.
    - ``gke-tpu-v5e``: GKE TPU v5e nodes (ct5lp-hightpu-8t, 2x4, 8 ``google.com/tpu``), tainted
      ``google.com/tpu=present:NoSchedule`` as GKE does.
    - ``eks-l4-spot``: an EKS managed spot node group (``eks.amazonaws.com/capacityType: SPOT``)
      of L4 nodes (g6.48xlarge) with GPU feature discovery's labels, tainted
      ``nvidia.com/gpu=true:NoSchedule`` by its owner (EKS adds no taint).
    - ``aks-a100-spot``: an AKS spot pool of A100 80GB nodes (Standard_ND96amsr_A100_v4) with
      AKS's ``kubernetes.azure.com/scalesetpriority=spot:NoSchedule`` taint and label, the
      ``kubernetes.azure.com/accelerator: nvidia`` label, GPU feature discovery's labels and the
      ``sku=gpu:NoSchedule`` taint of AKS's GPU guide.
    - ``gaudi``: on-premises nodes with 8 ``habana.ai/gaudi`` each, labelled
      ``accelerator.example.com/product: gaudi2`` by their owner and tainted
      ``habana.ai/gaudi:NoSchedule``.
    """
    gpu_labels = {
        "nvidia.com/gpu.product": GPU_PRODUCT,
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.present": "true",
        "karpenter.k8s.aws/instance-gpu-name": KARPENTER_GPU_NAME,
        "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia",
        "karpenter.k8s.aws/instance-gpu-count": "8",
    }
    gpu_allocatable = _gpu_allocatable("96", "1152Gi")
    gke_gpu_labels = {"cloud.google.com/gke-accelerator": GKE_GPU_PRODUCT}
    gke_gpu_taint = Taint("nvidia.com/gpu", "present", "NoSchedule")
    return [
        NodePool(
            name="cpu-ondemand",
            count=2,
            labels={CAPACITY_TYPE_LABEL: ON_DEMAND},
            # Room for the stacks earlier e2e tests leave while their namespaces are deleted (a
            # later test found 16 CPUs each full once, by the timing of that clean-up).
            allocatable={"cpu": "32", "memory": "128Gi", "ephemeral-storage": "200Gi", "pods": "110"},
            instance_type="m5.8xlarge",
        ),
        NodePool(
            name="gpu-ondemand",
            count=2,
            labels={CAPACITY_TYPE_LABEL: ON_DEMAND, **gpu_labels},
            allocatable=gpu_allocatable,
            instance_type="p4d.24xlarge",
        ),
        NodePool(
            name="gpu-spot",
            count=2,
            labels={CAPACITY_TYPE_LABEL: SPOT, **gpu_labels},
            taints=(Taint(CAPACITY_TYPE_LABEL, SPOT, "NoSchedule"),),
            allocatable=gpu_allocatable,
            instance_type="p4d.24xlarge",
        ),
        NodePool(
            name="gke-a100",
            count=2,
            labels={**gke_gpu_labels, "cloud.google.com/gke-nodepool": "gke-a100"},
            taints=(gke_gpu_taint,),
            allocatable=_gpu_allocatable("96", "680Gi"),
            instance_type="a2-highgpu-8g",
        ),
        NodePool(
            name="gke-a100-spot",
            count=2,
            labels={
                **gke_gpu_labels,
                "cloud.google.com/gke-nodepool": "gke-a100-spot",
                "cloud.google.com/gke-spot": "true",
                "cloud.google.com/gke-provisioning": "spot",
            },
            taints=(gke_gpu_taint, Taint("cloud.google.com/gke-spot", "true", "NoSchedule")),
            allocatable=_gpu_allocatable("96", "680Gi"),
            instance_type="a2-highgpu-8g",
        ),
        NodePool(
            name="gke-tpu-v5e",
            count=2,
            labels={
                "cloud.google.com/gke-nodepool": "gke-tpu-v5e",
                "cloud.google.com/gke-tpu-accelerator": TPU_PRODUCT,
                "cloud.google.com/gke-tpu-topology": TPU_TOPOLOGY,
            },
            taints=(Taint("google.com/tpu", "present", "NoSchedule"),),
            allocatable=_gpu_allocatable("224", "384Gi", resource="google.com/tpu"),
            instance_type="ct5lp-hightpu-8t",
        ),
        NodePool(
            name="eks-l4-spot",
            count=2,
            labels={
                "eks.amazonaws.com/capacityType": "SPOT",
                "eks.amazonaws.com/nodegroup": "eks-l4-spot",
                "nvidia.com/gpu.product": EKS_GPU_PRODUCT,
                "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.present": "true",
            },
            taints=(Taint("nvidia.com/gpu", "true", "NoSchedule"),),
            allocatable=_gpu_allocatable("192", "768Gi"),
            instance_type="g6.48xlarge",
        ),
        NodePool(
            name="aks-a100-spot",
            count=2,
            labels={
                "kubernetes.azure.com/scalesetpriority": "spot",
                "kubernetes.azure.com/accelerator": "nvidia",
                "kubernetes.azure.com/agentpool": "a100spot",
                "nvidia.com/gpu.product": AKS_GPU_PRODUCT,
                "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.present": "true",
            },
            taints=(
                Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
                Taint("sku", "gpu", "NoSchedule"),
            ),
            allocatable=_gpu_allocatable("96", "1900Gi"),
            instance_type="Standard_ND96amsr_A100_v4",
        ),
        NodePool(
            name="gaudi",
            count=2,
            labels={GAUDI_PRODUCT_LABEL: GAUDI_PRODUCT},
            taints=(Taint("habana.ai/gaudi", "", "NoSchedule"),),
            allocatable=_gpu_allocatable("160", "1000Gi", resource="habana.ai/gaudi"),
            instance_type="gaudi2-server",
        ),
    ]


def node_manifests(pools: Iterable[NodePool]) -> list[dict[str, Any]]:
    """Node objects (with status capacity/allocatable) for the given pools, ready to apply."""
    nodes: list[dict[str, Any]] = []
    for pool in pools:
        if not pool.zones:
            raise ValueError(f"node pool {pool.name!r} has no zones")
        for i, name in enumerate(pool.node_names()):
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": pool.instance_type,
                "topology.kubernetes.io/region": pool.region,
                "topology.kubernetes.io/zone": pool.zones[i % len(pool.zones)],
                "karpenter.sh/nodepool": pool.name,
                **dict([PROCESS_NODE_LABEL if pool.process_backed else KWOK_NODE_LABEL]),
                **pool.labels,
            }
            annotations = {"node.alpha.kubernetes.io/ttl": "0"}
            if not pool.process_backed:
                annotations[KWOK_ANNOTATION[0]] = KWOK_ANNOTATION[1]
            spec: dict[str, Any] = {}
            if pool.taints:
                spec["taints"] = [t.to_manifest() for t in pool.taints]
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": annotations,
                    },
                    "spec": spec,
                    "status": {
                        "allocatable": dict(pool.allocatable),
                        "capacity": dict(pool.allocatable),
                    },
                }
            )
    return nodes


# --------------------------------------------------------------------------------------------
# kwok stages (written for this project; kwok >= 0.8 ships no default stages)

_NODE_CONDITIONS = """\
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok fake kubelet is ready",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $since | Quote }}}
      - {type: MemoryPressure, status: "False", reason: KubeletHasSufficientMemory, message: "",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $since | Quote }}}
      - {type: DiskPressure, status: "False", reason: KubeletHasNoDiskPressure, message: "",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $since | Quote }}}
      - {type: PIDPressure, status: "False", reason: KubeletHasSufficientPID, message: "",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $since | Quote }}}
      - {type: NetworkUnavailable, status: "False", reason: RouteCreated, message: "",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $since | Quote }}}
"""

_STAGES = """\
# Node: not Ready yet -> Ready, with addresses, node info, capacity kept from the object.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: tritonscale-node-initialize}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $since := or .metadata.creationTimestamp $now }}
__NODE_CONDITIONS__      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      - {type: Hostname, address: {{ NodeName | Quote }}}
      {{ with NodePort }}
      daemonEndpoints: {kubeletEndpoint: {Port: {{ . }}}}
      {{ end }}
      {{ with .status.allocatable }}
      allocatable:
      {{ YAML . 1 }}
      {{ end }}
      {{ with .status.capacity }}
      capacity:
      {{ YAML . 1 }}
      {{ end }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        osImage: kwok
        bootID: ""
        machineID: ""
        systemUUID: ""
      phase: Running
---
# Node: Ready -> refresh the heartbeats every 10-15 s so the node lifecycle controller keeps it.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: tritonscale-node-heartbeat}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ['True']
  delay: {durationMilliseconds: 10000, jitterDurationMilliseconds: 15000}
  immediateNextStage: true
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $since := or .metadata.creationTimestamp $now }}
__NODE_CONDITIONS__---
# Pod: scheduled and Pending -> Running and Ready, every container running.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: tritonscale-pod-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      {{ range .spec.readinessGates }}
      - {type: {{ .conditionType | Quote }}, status: "True", lastTransitionTime: {{ $now | Quote }}}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $hostNet := or .spec.hostNetwork false }}
      {{ $uid := or .metadata.uid "" }}
      {{ with PodIPsWith .spec.nodeName $hostNet $uid .metadata.name .metadata.namespace }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
---
# Pod owned by a Job and Running -> Succeeded.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: tritonscale-pod-complete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.metadata.ownerReferences.[].kind'
      operator: In
      values: ['Job']
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Succeeded
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
---
# Pod being deleted -> gone (what a kubelet does once its containers stopped).
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: tritonscale-pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    delete: true
"""


def kwok_stages_yaml() -> str:
    """The kwok Stage documents the harness passes to ``kwok --config``."""
    return _STAGES.replace("__NODE_CONDITIONS__", _NODE_CONDITIONS)


# --------------------------------------------------------------------------------------------
# Binaries


def find_bin_dir(bin_dir: Path | None = None) -> Path:
    """Where the control-plane binaries are.

    Order: the argument, ``$TRITONSCALE_TESTENV_BIN``, else the newest
    ``<cache_root>/testenv-*/bin`` holding every binary of :data:`REQUIRED_BINARIES`.
    Raises :class:`ClusterError` (telling how to build them) when none is found.
    """
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    elif env := os.environ.get("TRITONSCALE_TESTENV_BIN"):
        candidates.append(Path(env))
    else:
        root = cache_root()
        found = sorted(root.glob("testenv-*/bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        candidates.extend(found)
    for candidate in candidates:
        if all(os.access(candidate / b, os.X_OK) for b in REQUIRED_BINARIES):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or f"{cache_root()}/testenv-*/bin"
    raise ClusterError(
        f"no complete Kubernetes test environment in {looked}; build it with scripts/build-testenv.sh"
    )


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class _Component:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


class Cluster:
    """A running control plane plus kwok. Create it with :meth:`Cluster.start`.

    Attributes:
        workdir: everything the cluster writes (etcd data, certs, kubeconfigs, logs).
        bin_dir: the folder holding kube-apiserver, kubectl, kwok, ... (and helm if built).
        logs_dir: one ``<component>.log`` per process.
        kubeconfig: an admin kubeconfig (static token, user in ``system:masters``).
        server: the API server URL, ``https://127.0.0.1:<port>``.
        ca_file: the CA bundle that verifies the API server's self-signed certificate.
        node_pools: the fake node pools created at start.
        startup_seconds: wall time :meth:`start` took until everything was ready.
    """

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path,
        node_pools: Sequence[NodePool],
        *,
        kill_with_parent: bool = True,
    ) -> None:
        """Prepare (but do not start) a cluster; prefer :meth:`Cluster.start`."""
        self.workdir = workdir.resolve()
        self.bin_dir = bin_dir.resolve()
        self.node_pools = list(node_pools)
        self.logs_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.ca_file = self.workdir / "pki" / "apiserver" / "apiserver.crt"
        self.audit_log = self.logs_dir / "audit.jsonl"
        self.server = ""
        self.startup_seconds = 0.0
        self._admin_token = secrets.token_hex(24)
        self._components: list[_Component] = []
        # (started, ready) in UTC of each API server restart: until /readyz passes it may refuse
        # requests its RBAC informers have not synced the grants for (kubernetes#101422).
        self.apiserver_unready: list[tuple[datetime, datetime]] = []
        self._kill_with_parent = kill_with_parent
        self._stopped = False

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        workdir: Path,
        bin_dir: Path | None = None,
        node_pools: Sequence[NodePool] | None = None,
        *,
        timeout_s: float = 120.0,
        kill_with_parent: bool = True,
    ) -> Cluster:
        """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

        Returns once ``/readyz`` is ok, the ``default`` ServiceAccount exists in ``default``,
        and every node of ``node_pools`` (default: :func:`default_node_pools`; pass ``[]``
        for none) is Ready. ``bin_dir`` defaults to :func:`find_bin_dir`. On failure every
        process is stopped (logs kept in ``workdir/logs``) and :class:`ClusterError` is raised
        with the tail of the failing component's log.

        ``workdir`` should be a folder of its own: any previous etcd data in it is discarded
        (every start is a fresh cluster), and :meth:`stop` removes it unless logs are kept.

        ``kill_with_parent`` makes Linux kill the processes if the calling thread dies
        (so a crashed test run leaves no strays); call ``start`` from a long-lived thread.
        """
        pools = default_node_pools() if node_pools is None else list(node_pools)
        cluster = cls(workdir, find_bin_dir(bin_dir), pools, kill_with_parent=kill_with_parent)
        try:
            cluster._start(timeout_s)
        except BaseException:
            cluster.stop(keep_logs=True)
            raise
        return cluster

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep_logs=exc_type is not None)

    def stop(self, keep_logs: bool = False) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s), newest first.

        With ``keep_logs`` the work dir (logs, etcd data, kubeconfigs) stays and its location
        is printed to stderr; otherwise the work dir is removed. Safe to call twice.
        """
        if self._stopped:
            return
        self._stopped = True
        # Signal all first, then wait on each against one deadline: they stop in parallel.
        for comp in reversed(self._components):
            if comp.alive():
                with contextlib.suppress(ProcessLookupError):
                    comp.process.terminate()
        deadline = time.monotonic() + 10.0
        for comp in reversed(self._components):
            stop_process(comp.process, max(0.1, deadline - time.monotonic()))
        if keep_logs:
            print(f"tritonscale cluster: logs kept in {self.logs_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self, timeout_s: float) -> None:
        began = time.monotonic()
        deadline = began + timeout_s
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        for sub in ("logs", "pki", "etcd", "kwok"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        ports = _Ports(*free_ports(6, "127.0.0.1"))
        self.server = f"https://127.0.0.1:{ports.apiserver}"
        self._write_pki()
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))

        self._spawn("etcd", self._etcd_argv(ports))
        self._wait(lambda: _port_open(ports.etcd_client), "etcd to listen", deadline)

        self._spawn("kube-apiserver", self._apiserver_argv(ports))
        self._wait(
            lambda: self.ca_file.exists() and _port_open(ports.apiserver),
            "kube-apiserver to listen",
            deadline,
        )
        self._write_kubeconfig(self.kubeconfig, user=ADMIN_USER, token=self._admin_token)
        self._wait(self._readyz, "kube-apiserver /readyz", deadline)

        self._spawn("kube-controller-manager", self._controller_manager_argv(ports))
        self._spawn("kube-scheduler", self._scheduler_argv(ports))
        stages = self.workdir / "kwok" / "stages.yaml"
        stages.write_text(kwok_stages_yaml())
        self._spawn("kwok", self._kwok_argv(ports, stages))

        if self.node_pools:
            self.apply_yaml(node_manifests(self.node_pools))
        self._wait(self._default_service_account_exists, "the default ServiceAccount", deadline)
        if self.node_pools:
            self._wait(self._nodes_ready, "every kwok node to be Ready", deadline)
        self._wait(lambda: _healthz(ports.scheduler), "kube-scheduler /healthz", deadline)
        self._wait(lambda: _healthz(ports.controller_manager), "kube-controller-manager /healthz", deadline)
        self.startup_seconds = time.monotonic() - began

    # ---------------------------------------------------------------- component command lines

    def _etcd_argv(self, p: _Ports) -> list[str]:
        client = f"http://127.0.0.1:{p.etcd_client}"
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=tritonscale",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=tritonscale={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, p: _Ports) -> list[str]:
        pki = self.workdir / "pki"
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p.apiserver}",
            f"--cert-dir={pki / 'apiserver'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # The kubernetes Service's endpoints would point at a loopback address, which
            # Endpoints validation rejects; nothing in-cluster needs them.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
            "--v=1",
        ]

    def _common_component_flags(self, name: str, port: int) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            # No --authentication/authorization-kubeconfig: their /healthz is always allowed,
            # and nothing else needs to call them.
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Without it they would write self-signed certs to /var/run/kubernetes.
            f"--cert-dir={self.workdir / 'pki' / name}",
            "--v=1",
        ]

    def _controller_manager_argv(self, p: _Ports) -> list[str]:
        return [
            str(self.bin_dir / "kube-controller-manager"),
            *self._common_component_flags("kube-controller-manager", p.controller_manager),
            "--controllers=*",
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=false",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ]

    def _scheduler_argv(self, p: _Ports) -> list[str]:
        return [
            str(self.bin_dir / "kube-scheduler"),
            *self._common_component_flags("kube-scheduler", p.scheduler),
        ]

    def _kwok_argv(self, p: _Ports, stages: Path) -> list[str]:
        return [
            str(self.bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
            f"--node-ip={KWOK_NODE_IP}",
            f"--cidr={KWOK_POD_CIDR}",
            f"--server-address=127.0.0.1:{p.kwok}",
        ]

    # ---------------------------------------------------------------- files

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        key = pki / "sa.key"
        _run_checked(["openssl", "genrsa", "-out", str(key), "2048"], "openssl genrsa")
        key.chmod(0o600)
        tokens = pki / "tokens.csv"
        tokens.write_text(f'{self._admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)

    def _write_kubeconfig(self, path: Path, *, user: str, token: str, namespace: str = "default") -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tritonscale",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "tritonscale",
                    "context": {"cluster": "tritonscale", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "tritonscale",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    # ---------------------------------------------------------------- process helpers

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.logs_dir / f"{name}.log"
        process = spawn(
            argv,
            log_path,
            cwd=self.workdir,
            banner=f"$ {' '.join(argv)}",
            preexec_fn=die_with_parent if self._kill_with_parent else None,
        )
        self._components.append(_Component(name, argv, log_path, process))

    def _check_alive(self) -> None:
        for comp in self._components:
            if not comp.alive():
                raise ClusterError(
                    f"{comp.name} exited with code {comp.process.returncode}; "
                    f"last lines of {comp.log_path}:\n{comp.log_tail()}"
                )

    def _wait(self, check: Callable[[], bool], what: str, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                if check():
                    return
            except (OSError, ClusterError, ValueError):
                pass
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {c.name} ({c.log_path}):\n{c.log_tail(15)}" for c in self._components)
                raise ClusterError(f"timed out waiting for {what}; component logs:\n{tails}")
            time.sleep(0.2)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _readyz(self) -> bool:
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self._admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2, context=self._ssl_context()) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False

    def _default_service_account_exists(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    def _nodes_ready(self) -> bool:
        nodes = self.get_json("nodes", "-l", f"{KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}")["items"]
        # Process-backed nodes turn Ready when their node agent runs, which starts later.
        expected = {n for pool in self.node_pools if not pool.process_backed for n in pool.node_names()}
        # Ready, and the node lifecycle controller has lifted its not-ready taint, so the
        # scheduler can use the node.
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if _condition_true(n, "Ready")
            and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints") or [])
        }
        return expected <= ready

    # ---------------------------------------------------------------- public helpers

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` (admin) and the bin dir first on ``PATH``.

        Handy for running helm, kubectl or an operator process against this cluster.
        """
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout_s: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with the admin kubeconfig (or ``kubeconfig``).

        Returns the completed process (text stdout/stderr). With ``check`` a non-zero exit
        raises :class:`KubectlError` carrying stderr.
        """
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result.returncode, result.stdout, result.stderr)
        return result

    def helm(
        self, *args: str, check: bool = True, timeout_s: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster (admin kubeconfig)."""
        helm = self.bin_dir / "helm"
        if not helm.exists():
            raise ClusterError(f"helm is not in {self.bin_dir}; build it with scripts/build-testenv.sh")
        env = self.env()
        helm_home = self.workdir / "helm"
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(helm_home / sub)
        result = subprocess.run(
            [str(helm), *args], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        """``kubectl get <args> -o json``, parsed. Raises :class:`KubectlError` if it fails."""
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", *args, *ns, "-o", "json").stdout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout_s: float = 10.0,
    ) -> Any:
        """One call to the API server as the admin, without a kubectl process (for loops that
        poll every second): ``path`` such as ``/api/v1/pods``; ``body`` is sent as JSON (use
        ``content_type="application/merge-patch+json"`` for a merge patch). Returns the parsed
        response; raises :class:`urllib.error.HTTPError` (``.code``) when the server refuses."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._admin_token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=timeout_s, context=self._ssl_context()) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def get_raw(self, path: str) -> Any:
        """``kubectl get --raw <path>`` parsed as JSON, e.g. ``get_raw("/version")``."""
        return json.loads(self.kubectl("get", "--raw", path).stdout)

    def apply_yaml(
        self,
        docs: str | Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        server_side: bool = False,
        kubeconfig: Path | None = None,
    ) -> str:
        """``kubectl apply -f -`` with a YAML string, one manifest dict, or a list of them.

        Returns kubectl's stdout. ``server_side`` uses server-side apply (field manager
        ``tritonscale-sandbox``).
        """
        if isinstance(docs, str):
            text = docs
        elif isinstance(docs, Mapping):
            text = yaml.safe_dump(dict(docs), sort_keys=False)
        else:
            text = yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        if server_side:
            args += ["--server-side", "--field-manager=tritonscale-sandbox", "--force-conflicts"]
        return self.kubectl(*args, input=text, kubeconfig=kubeconfig).stdout

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None, *, timeout_s: float = 30.0
    ) -> None:
        """Create (or update the labels of) a namespace, and wait for its ``default``
        ServiceAccount (until it exists, the API server rejects pods in the namespace)."""
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        self.apply_yaml({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        self.wait_until(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
            f"the default ServiceAccount in namespace {name}",
            timeout_s=timeout_s,
            interval_s=0.2,
        )

    def wait_for(
        self,
        resource: str,
        condition: str,
        *,
        namespace: str | None = None,
        selector: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """``kubectl wait`` for ``condition`` on ``resource``.

        ``condition`` is what ``kubectl wait --for`` accepts: ``condition=Ready``,
        ``condition=Available``, ``delete``, ``jsonpath={.status.phase}=Running``.
        ``resource`` is ``kind/name`` or a kind plus ``selector``. Raises
        :class:`KubectlError` on timeout.
        """
        args = ["wait", resource, f"--for={condition}", f"--timeout={int(timeout_s)}s"]
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        self.kubectl(*args, timeout_s=timeout_s + 30)

    def wait_until(
        self,
        predicate: Callable[[], _T],
        description: str,
        *,
        timeout_s: float = 60.0,
        interval_s: float = 0.5,
    ) -> _T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Raises :class:`TimeoutError` naming ``description`` (and the last error the predicate
        raised, if any); also raises :class:`ClusterError` if a component died meanwhile.
        """
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while True:
            self._check_alive()
            try:
                value = predicate()
                if value:
                    return value
            except (ClusterError, OSError, ValueError, KeyError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {description}{detail}")
            time.sleep(interval_s)

    def service_account_kubeconfig(
        self,
        namespace: str,
        service_account: str,
        path: Path,
        *,
        duration: str = "24h",
        create: bool = True,
    ) -> Path:
        """Write a kubeconfig at ``path`` that authenticates as a ServiceAccount.

        The token comes from the TokenRequest API (``kubectl create token``), so the identity
        ``system:serviceaccount:<namespace>:<service_account>`` has exactly the permissions
        RBAC grants it (e.g. a Helm chart's Role/ClusterRole bindings). With ``create`` the
        ServiceAccount is created first if missing. The kubeconfig's default namespace is
        ``namespace``.
        """
        if create:
            self.apply_yaml(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": service_account, "namespace": namespace},
                }
            )
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise ClusterError(f"the TokenRequest for {namespace}/{service_account} returned no token")
        user = f"system:serviceaccount:{namespace}:{service_account}"
        self._write_kubeconfig(Path(path), user=user, token=token, namespace=namespace)
        return Path(path)

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The API server's audit log (requests by ServiceAccounts: AUDIT_POLICY), oldest first;
        only ``user``'s when given. Each event has verb, objectRef, user (with the token's
        ``authentication.kubernetes.io/credential-id`` in ``extra``), responseStatus and times."""
        events = []
        for path in self.audit_files():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if user is None or event.get("user", {}).get("username") == user:
                        events.append(event)
        return events

    def audit_files(self) -> list[Path]:
        """The audit log's files, oldest first: the API server renames a full one (at 200 MB)
        to audit-<time>.jsonl and goes on in audit.jsonl."""
        rotated = sorted(self.audit_log.parent.glob(f"{self.audit_log.stem}-*{self.audit_log.suffix}"))
        return [*rotated, self.audit_log] if self.audit_log.exists() else rotated

    def restart(self, name: str, *, downtime_s: float = 0.0, timeout_s: float = 60.0) -> float:
        """Stop one component (SIGTERM, then SIGKILL), wait ``downtime_s``, start it again with
        the same command line; returns the seconds it was unreachable. For the API server,
        waits for /readyz."""
        began = time.monotonic()
        component = self._component(name)
        stop_process(component.process, 10.0)
        self._components.remove(component)
        time.sleep(downtime_s)
        spawned = datetime.now(UTC)
        self._spawn(name, component.argv)
        if name == "kube-apiserver":
            self._wait(self._readyz, "kube-apiserver /readyz after a restart", time.monotonic() + timeout_s)
            self.apiserver_unready.append((spawned, datetime.now(UTC)))
        return time.monotonic() - began

    def pause(self, name: str) -> None:
        """Freeze a component (SIGSTOP): its sockets stay open and nothing answers."""
        os.kill(self._component(name).process.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Thaw a component frozen by :meth:`pause` (SIGCONT)."""
        os.kill(self._component(name).process.pid, signal.SIGCONT)

    def _component(self, name: str) -> _Component:
        found = next((c for c in self._components if c.name == name), None)
        if found is None:
            raise ClusterError(f"no component {name!r}; there are {[c.name for c in self._components]}")
        return found

    def component_logs(self) -> dict[str, Path]:
        """The log file of each component, by name."""
        return {c.name: c.log_path for c in self._components}

    def processes(self) -> Iterator[tuple[str, int]]:
        """(component name, pid) of each process started."""
        for comp in self._components:
            yield comp.name, comp.process.pid


# --------------------------------------------------------------------------------------------
# small helpers


def _port_open(port: int) -> bool:
    try:
        wait_for_port("127.0.0.1", port, timeout_s=0.0)
    except TimeoutError:
        return False
    return True


def _healthz(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the component's own throw-away self-signed cert
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _condition_true(obj: Mapping[str, Any], condition: str) -> bool:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == condition:
            return bool(cond.get("status") == "True")
    return False


def _run_checked(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")
