"""Tritonscale: a Kubernetes operator for latency-autoscaled NVIDIA Triton serving stacks."""

__version__ = "0.1.0"
