"""Everything one InferenceService becomes, in the order it is applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tritonscale.api.resource import InferenceService
from tritonscale.policy.placement import Placement
from tritonscale.render.names import COMPONENT_ROUTER, COMPONENT_TRITON, POOL_ON_DEMAND, POOL_SPOT, StackNames
from tritonscale.render.network import NetworkPolicyOptions, guarded, render_network_policies
from tritonscale.render.router import (
    RouterOptions,
    render_endpoint_service,
    render_router_config,
    render_router_configmap,
    render_router_deployment,
    render_variants_map,
)
from tritonscale.render.triton import (
    render_disruption_budget,
    render_headless_service,
    render_triton_deployment,
)


@dataclass(frozen=True)
class RenderOptions:
    """Cluster facts the manifests depend on."""

    cluster_domain: str = "cluster.local"
    router: RouterOptions = field(default_factory=RouterOptions)
    network: NetworkPolicyOptions = field(default_factory=NetworkPolicyOptions)


def owner_reference(service: InferenceService) -> dict[str, Any]:
    assert service.metadata.uid is not None
    return {
        "apiVersion": service.api_version,
        "kind": service.kind,
        "name": service.name,
        "uid": service.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def render_stack(
    service: InferenceService, placement: Placement, options: RenderOptions | None = None
) -> list[dict[str, Any]]:
    """Every child object, dependencies first (config before the pods that mount it).

    The spot Deployment is rendered only when spot is enabled, the NetworkPolicies only when
    the service is guarded (render.network); the reconciler removes what it no longer renders. Owner references are set when the service has a uid (it
    does when read from the API server; `tritonscale render` on a file has none).
    """
    options = options or RenderOptions()
    names = StackNames(service.name, service.namespace, options.cluster_domain)
    config = render_router_config(service, names, options.router)
    # Policies first: pods never run unguarded when they are asked for.
    objects = (
        render_network_policies(service, names, options.network) if guarded(service, options.network) else []
    )
    objects += [
        render_router_configmap(names, config, render_variants_map(service)),
        render_headless_service(names),
        render_triton_deployment(service, names, POOL_ON_DEMAND, placement.on_demand),
    ]
    if service.spec.capacity.spot.enabled:
        objects.append(render_triton_deployment(service, names, POOL_SPOT, placement.spot))
    objects += [
        render_router_deployment(service, names, config),
        render_endpoint_service(names),
        render_disruption_budget(
            names, names.triton_disruption_budget, COMPONENT_TRITON, desired=placement.desired
        ),
        render_disruption_budget(names, names.router_disruption_budget, COMPONENT_ROUTER),
    ]
    if service.metadata.uid is not None:
        reference = owner_reference(service)
        for obj in objects:
            obj["metadata"]["ownerReferences"] = [reference]
    return objects
