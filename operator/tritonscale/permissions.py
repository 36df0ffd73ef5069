"""Every Kubernetes permission the operator needs, and why: the one list the chart's RBAC
(templates/clusterrole.yaml, templates/role.yaml) must equal, and the API server's audit of what
the operator actually did must stay within (both checked by tests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    group: str  # "" for the core API group
    resource: str  # with its subresource, e.g. "inferenceservices/status"
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()


# In every namespace the operator watches (a ClusterRole, bound cluster-wide or, with
# operator.watchNamespaces, by a RoleBinding in each).
OPERATOR_NEEDS: tuple[Need, ...] = (
    Need("tritonscale.io", "inferenceservices", ("get", "list", "watch", "patch"),
         "kopf lists and watches them and patches its annotations; the reconciler reads each"),
    Need("tritonscale.io", "inferenceservices/status", ("patch",), "status, conditions"),
    Need("tritonscale.io", "inferenceservices/finalizers", ("update",),
         "children carry blockOwnerDeletion owner references (OwnerReferencesPermissionEnforcement)"),
    Need("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete"),
         "Triton and router Deployments: read before writing (never adopt), server-side apply, "
         "list to prune and for status, watch for readiness, delete a spot Deployment no longer wanted"),
    Need("", "services", ("get", "list", "watch", "create", "patch"),
         "the router and headless Services; watched, so one deleted by hand is put back at once"),
    Need("", "configmaps", ("get", "create", "patch"), "the router's haproxy.cfg"),
    Need("policy", "poddisruptionbudgets", ("get", "create", "patch"), "Triton and router PDBs"),
    Need("networking.k8s.io", "networkpolicies", ("get", "create", "patch", "delete"),
         "Triton and router NetworkPolicies of guarded services; removed when guarding is switched off"),
    Need("", "events", ("create", "patch"), "Events; a repeated one raises its count"),
    Need("", "pods", ("list", "watch"),
         "scheduling failures in status; the routers' and Triton pods' addresses and starts, watched"),
    Need("", "pods/eviction", ("create",),
         "spot pods on interrupted nodes are evicted (PodDisruptionBudgets honoured), not deleted"),
)  # fmt: skip

# Cluster-wide, whatever namespaces are watched (a ClusterRole of its own): nodes have no namespace.
NODE_NEEDS: tuple[Need, ...] = (
    Need("", "nodes", ("list", "watch"), "interruption taints, cordon, NotReady"),
)

LEADER_LEASE = "tritonscale-operator"

# In the operator's own namespace only (a Role), with leader election on.
LEADER_NEEDS: tuple[Need, ...] = (
    Need("coordination.k8s.io", "leases", ("create",), "create the leader Lease once"),
    Need("coordination.k8s.io", "leases", ("get", "update"), "read, renew or take over the leader Lease",
         resource_names=(LEADER_LEASE,)),
)  # fmt: skip


def grants(needs: tuple[Need, ...]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of each verb of each need."""
    return {(n.group, n.resource, verb) for n in needs for verb in n.verbs}
