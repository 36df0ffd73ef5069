"""Names and labels of the objects one InferenceService becomes.

An InferenceService name is a DNS-1123 subdomain (up to 253 characters, dots allowed, may start
with a digit); Service names must be DNS-1035 labels (63 characters, a letter first, no dots) and
label values are limited to 63 characters. Names that do not fit are shortened and given a hash
of the original, so two long names never collide.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from tritonscale.ports import HTTP_PORT

MAX_NAME: Final = 63
HASH_LENGTH: Final = 8
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_POOL: Final = "tritonscale.io/pool"
MANAGED_BY: Final = "tritonscale"
FIELD_MANAGER: Final = "tritonscale"  # the server-side apply field manager of every write

COMPONENT_TRITON: Final = "triton"
COMPONENT_ROUTER: Final = "router"
POOL_ON_DEMAND: Final = "on-demand"
POOL_SPOT: Final = "spot"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def child_name(owner: str, suffix: str = "") -> str:
    """A DNS-1035 name (valid for every kind we create) for the owner's child `suffix`.

    Kept readable when it fits: `resnet` + `router` -> `resnet-router`.
    """
    wanted = f"{owner}-{suffix}" if suffix else owner
    if len(wanted) <= MAX_NAME and _DNS_1035.match(wanted):
        return wanted
    stem = owner.replace(".", "-")
    if not stem[0].isalpha():
        stem = "tis-" + stem
    tail = f"-{_short_hash(owner)}" + (f"-{suffix}" if suffix else "")
    stem = stem[: MAX_NAME - len(tail)].rstrip("-")
    return stem + tail


def label_value(value: str) -> str:
    """`value` as a valid label value: unchanged when it fits, else shortened with a hash."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    tail = "-" + _short_hash(value)
    return value[: MAX_NAME - len(tail)].rstrip("-._") + tail


class StackNames:
    """Every name and label set of one InferenceService's children."""

    def __init__(self, name: str, namespace: str, cluster_domain: str = "cluster.local") -> None:
        self.owner = name
        self.namespace = namespace
        self.cluster_domain = cluster_domain
        self.instance = label_value(name)
        self.endpoint_service = child_name(name)
        self.headless_service = child_name(name, "triton")
        self.on_demand_deployment = child_name(name, "ondemand")
        self.spot_deployment = child_name(name, "spot")
        self.router_deployment = child_name(name, "router")
        self.router_config = child_name(name, "router")
        self.triton_disruption_budget = child_name(name, "triton")
        self.router_disruption_budget = child_name(name, "router")
        self.triton_network_policy = child_name(name, "triton")
        self.router_network_policy = child_name(name, "router")

    def common_labels(self, component: str) -> dict[str, str]:
        return {
            LABEL_NAME: "tritonscale",
            LABEL_INSTANCE: self.instance,
            LABEL_COMPONENT: component,
            LABEL_PART_OF: "tritonscale",
            LABEL_MANAGED_BY: MANAGED_BY,
        }

    def stack_selector(self) -> dict[str, str]:
        """Labels that select every pod (and Deployment) of the stack, all components."""
        return {LABEL_INSTANCE: self.instance, LABEL_MANAGED_BY: MANAGED_BY}

    def component_selector(self, component: str) -> dict[str, str]:
        """Labels that select one component's pods across pools."""
        return {LABEL_INSTANCE: self.instance, LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}

    def pool_selector(self, pool: str) -> dict[str, str]:
        """Labels that select one pool's Triton pods (a Deployment's immutable selector)."""
        return {**self.component_selector(COMPONENT_TRITON), LABEL_POOL: pool}

    @property
    def triton_selector_string(self) -> str:
        """The Triton pods' selector as a string, for the scale subresource."""
        return ",".join(
            f"{key}={value}" for key, value in sorted(self.component_selector(COMPONENT_TRITON).items())
        )

    @property
    def headless_dns_name(self) -> str:
        """Fully qualified DNS name resolving to every ready Triton pod."""
        return f"{self.headless_service}.{self.namespace}.svc.{self.cluster_domain}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint_service}.{self.namespace}.svc:{HTTP_PORT}"
