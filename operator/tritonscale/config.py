"""Operator-wide settings, from `tritonscale run` flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonscale.permissions import LEADER_LEASE
from tritonscale.render.network import NetworkPolicyOptions


@dataclass(frozen=True)
class OperatorConfig:
    """How one operator process runs.

    `namespaces` empty means cluster-wide. `prometheus_url` is the default metrics source for
    InferenceServices that name none. Ports of 0 turn that endpoint off.
    """

    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    prometheus_url: str | None = None
    prometheus_window: str = "1m"  # range of rate() and friends; at least four scrape intervals
    # CA bundle an https Prometheus's certificate is verified against; None: the system's.
    prometheus_ca_file: str | None = None
    cluster_domain: str = "cluster.local"
    metrics_port: int = 8080
    health_port: int = 8081
    listen_address: str = "0.0.0.0"
    """Where the metrics and health servers bind; the sandbox gives each pod its own address."""
    read_triton_pods: bool = True  # off where pod addresses are not reachable (e.g. kwok nodes)
    read_routers: bool = True  # the routers' counts every 2 s for the autoscaler (policy.surge)
    # Threads for reconciles (kopf's executor) and for autoscaling ticks: fixed, whatever the
    # number of InferenceServices, since no handler holds a thread for longer than one pass.
    reconcile_workers: int = 8
    autoscale_workers: int = 16
    leader_election_namespace: str | None = None
    """Where the leader Lease lives; None runs without leader election (one replica only)."""
    leader_election_name: str = LEADER_LEASE
    """The leader Lease's name: each operator deployment in one namespace needs its own."""
    identity: str = ""
    """This replica's name in the Lease (the pod's name in a cluster)."""
    network_policies: NetworkPolicyOptions = field(default_factory=NetworkPolicyOptions)
