"""The ports Triton serves on (its defaults) and the router's metrics port: one definition for
the rendered pods and Services, the operator's clients, `bench` and the sandbox."""

from typing import Final

HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002  # Triton's Prometheus /metrics
ROUTER_METRICS_PORT: Final = 8404  # HAProxy's Prometheus exporter and stats page
ROUTER_CONTROL_PORT: Final = 8406  # the routers' variant shares, set by the operator only


def variant_ports(index: int) -> tuple[int, int, int]:
    """HTTP, gRPC and metrics ports of the Triton process serving spec.model.variants[index]."""
    base = 8010 + 10 * index
    return base, base + 1, base + 2
