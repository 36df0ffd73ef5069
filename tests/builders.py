"""Test builders shared by every tier: a valid InferenceService with overrides, and a table of
invalid ones with the field each must be rejected for (by the model and by the API server)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DELETE = object()


def set_path(obj: dict[str, Any], dotted: str, value: Any) -> None:
    """Set (or delete, with DELETE) a dotted path, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def make_inference_service(name: str = "svc", namespace: str = "default", **overrides: Any) -> dict[str, Any]:
    """A valid InferenceService; overrides are dotted paths with '__' for '.', e.g.
    make_inference_service(spec__replicas=3)."""
    obj: dict[str, Any] = {
        "apiVersion": "tritonscale.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"repository": "s3://models/demo", "names": ["simulated"]}, "replicas": 2},
    }
    for key, value in overrides.items():
        set_path(obj, key.replace("__", "."), value if value is DELETE else copy.deepcopy(value))
    return obj


CUSTOM_PRESET = {"nodePoolPreset": "custom", "custom": {"onDemand": {"nodeSelector": {"pool": "od"}}}}

# (case id, overrides as {dotted path: value}, the field path the error must name)
INVALID_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("name-is-another-services-child", {"metadata.name": "echo-triton"}, "metadata.name"),
    ("model-missing", {"spec.model": DELETE}, "spec.model"),
    ("model-names-empty", {"spec.model.names": []}, "spec.model.names"),
    (
        "variants-of-two-models",
        {
            "spec.model.names": ["a", "b"],
            "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}],
        },
        "spec.model.variants",
    ),
    (
        "variant-named-as-the-model",
        {"spec.model.names": ["a"], "spec.model.variants": [{"name": "a", "accuracy": 0.99, "speedup": 2}]},
        "spec.model.variants",
    ),
    (
        "variant-accuracy-above-one",
        {"spec.model.names": ["a"], "spec.model.variants": [{"name": "a8", "accuracy": 1.2, "speedup": 2}]},
        "spec.model.variants[0].accuracy",
    ),
    (
        "variant-linked-from-an-object-store",
        {"spec.model.names": ["a"], "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}]},
        "spec.model.variants",
    ),
    (
        "variant-not-faster",
        {"spec.model.names": ["a"], "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 1}]},
        "spec.model.variants[0].speedup",
    ),
    (
        "four-variants",
        {
            "spec.model.names": ["a"],
            "spec.model.variants": [{"name": f"a{i}", "accuracy": 0.9, "speedup": 2} for i in range(4)],
        },
        "spec.model.variants",
    ),
    (
        "accuracy-budget-without-variants",
        {"spec.autoscaling": {"accuracy": {"floor": 0.99}}},
        "spec.autoscaling.accuracy",
    ),
    (
        "accuracy-floor-of-one",
        {
            "spec.model.names": ["a"],
            "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}],
            "spec.autoscaling": {"accuracy": {"floor": 1.0}},
        },
        "spec.autoscaling.accuracy.floor",
    ),
    (
        "accuracy-steady-spend-above-one",
        {
            "spec.model.names": ["a"],
            "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}],
            "spec.autoscaling": {"accuracy": {"floor": 0.99, "steadySpend": 1.5}},
        },
        "spec.autoscaling.accuracy.steadySpend",
    ),
    (
        "accuracy-steady-variant-not-a-variant",
        {
            "spec.model.names": ["a"],
            "spec.model.repository": "/models",
            "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}],
            "spec.autoscaling": {"accuracy": {"floor": 0.99, "steadySpend": 0.25, "steadyVariant": "a4"}},
        },
        "spec.autoscaling.accuracy.steadyVariant",
    ),
    (
        "accuracy-steady-variant-without-spend",
        {
            "spec.model.names": ["a"],
            "spec.model.repository": "/models",
            "spec.model.variants": [{"name": "a8", "accuracy": 0.99, "speedup": 2}],
            "spec.autoscaling": {"accuracy": {"floor": 0.99, "steadyVariant": "a8"}},
        },
        "spec.autoscaling.accuracy.steadyVariant",
    ),
    ("model-names-duplicate", {"spec.model.names": ["a", "a"]}, "spec.model.names"),
    ("model-name-has-space", {"spec.model.names": ["res net"]}, "spec.model.names[0]"),
    ("repository-has-space", {"spec.model.repository": "s3://a b"}, "spec.model.repository"),
    (
        "min-above-max",
        {"spec.autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling.maxReplicas",
    ),
    ("max-replicas-zero", {"spec.autoscaling": {"maxReplicas": 0}}, "spec.autoscaling.maxReplicas"),
    (
        "on-demand-base-above-max",
        {"spec.autoscaling": {"maxReplicas": 2}, "spec.capacity": {"onDemandBase": 3}},
        "spec.capacity.onDemandBase",
    ),
    (
        "spot-fraction-above-one",
        {"spec.capacity": {"spot": {"maxFraction": 1.5}}},
        "spec.capacity.spot.maxFraction",
    ),
    (
        "spot-fraction-negative",
        {"spec.capacity": {"spot": {"maxFraction": -0.1}}},
        "spec.capacity.spot.maxFraction",
    ),
    (
        "spot-enabled-fraction-zero",
        {"spec.capacity": {"spot": {"enabled": True, "maxFraction": 0}}},
        "spec.capacity.spot.maxFraction",
    ),
    (
        "latency-target-zero",
        {"spec.autoscaling": {"latency": {"targetMilliseconds": 0}}},
        "spec.autoscaling.latency.targetMilliseconds",
    ),
    (
        "percentile-hundred",
        {"spec.autoscaling": {"latency": {"percentile": 100}}},
        "spec.autoscaling.latency.percentile",
    ),
    ("policy-unknown", {"spec.loadBalancing": {"policy": "Random"}}, "spec.loadBalancing.policy"),
    ("preset-unknown", {"spec.capacity": {"nodePoolPreset": "azure"}}, "spec.capacity.nodePoolPreset"),
    ("custom-preset-without-custom", {"spec.capacity": {"nodePoolPreset": "custom"}}, "spec.capacity.custom"),
    (
        "custom-without-custom-preset",
        {"spec.capacity": {"custom": {"onDemand": {"nodeSelector": {"pool": "od"}}}}},
        "spec.capacity.custom",
    ),
    (
        "custom-spot-without-selector",
        {"spec.capacity": {**CUSTOM_PRESET, "spot": {"enabled": True}}},
        "spec.capacity.custom.spot.nodeSelector",
    ),
    ("accelerator-without-resource", {"spec.accelerator": {"count": 1}}, "spec.accelerator.resource"),
    (
        "accelerator-count-zero",
        {"spec.accelerator": {"resource": "nvidia.com/gpu", "count": 0}},
        "spec.accelerator.count",
    ),
    (
        "accelerator-resource-invalid",
        {"spec.accelerator": {"resource": "NVIDIA GPU"}},
        "spec.accelerator.resource",
    ),
    (
        "product-without-label-for-custom",
        {
            "spec.capacity": CUSTOM_PRESET,
            "spec.accelerator": {"resource": "nvidia.com/gpu", "product": "A100"},
        },
        "spec.accelerator.product",
    ),
    ("args-override-port", {"spec.triton": {"args": ["--http-port=9000"]}}, "spec.triton.args"),
    # tritonserver takes any unambiguous prefix of a long option for the option.
    ("args-abbreviate-port", {"spec.triton": {"args": ["--http-po=9000"]}}, "spec.triton.args"),
    (
        "args-override-repository",
        {"spec.triton": {"args": ["--model-repository", "/x"]}},
        "spec.triton.args",
    ),
    (
        "request-not-a-quantity",
        {"spec.triton": {"resources": {"requests": {"cpu": "two"}}}},
        "spec.triton.resources.requests.cpu",
    ),
    (
        "router-replicas-zero",
        {"spec.loadBalancing": {"router": {"replicas": 0}}},
        "spec.loadBalancing.router.replicas",
    ),
    ("unknown-field", {"spec.autoscale": {"min": 1}}, "spec.autoscale"),
    ("replicas-negative", {"spec.replicas": -1}, "spec.replicas"),
    (
        "query-with-triton-source",
        {"spec.autoscaling": {"metrics": {"source": "triton", "latencyQuery": "up"}}},
        "spec.autoscaling.metrics.latencyQuery",
    ),
    (
        "prometheus-url-not-http",
        {"spec.autoscaling": {"metrics": {"prometheusURL": "ftp://prom:9090"}}},
        "spec.autoscaling.metrics.prometheusURL",
    ),
    (
        "toleration-exists-with-value",
        {
            "spec.capacity": {
                "nodePoolPreset": "custom",
                "custom": {
                    "spot": {
                        "nodeSelector": {"pool": "spot"},
                        "tolerations": [{"key": "spot", "operator": "Exists", "value": "x"}],
                    }
                },
            }
        },
        "spec.capacity.custom.spot.tolerations[0].value",
    ),
    (
        "stabilization-negative",
        {"spec.autoscaling": {"scaleDown": {"stabilizationSeconds": -5}}},
        "spec.autoscaling.scaleDown.stabilizationSeconds",
    ),
    (
        "env-duplicate-names",
        {"spec.triton": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.triton.env",
    ),
    ("image-has-space", {"spec.triton": {"image": "triton server"}}, "spec.triton.image"),
    ("shared-memory-zero", {"spec.triton": {"sharedMemory": "0Gi"}}, "spec.triton.sharedMemory"),
    ("shared-memory-not-a-quantity", {"spec.triton": {"sharedMemory": "lots"}}, "spec.triton.sharedMemory"),
    (
        "shared-memory-fractional-exponent",
        {"spec.triton": {"sharedMemory": "1e1.5"}},
        "spec.triton.sharedMemory",
    ),
    (
        "shared-memory-huge-exponent",
        {"spec.triton": {"sharedMemory": "1e99999999999999999999"}},
        "spec.triton.sharedMemory",
    ),
    (
        "startup-timeout-too-short",
        {"spec.triton": {"startupTimeoutSeconds": 10}},
        "spec.triton.startupTimeoutSeconds",
    ),
    (
        "env-value-and-value-from",
        {
            "spec.triton": {
                "env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
            }
        },
        "spec.triton.env[0].valueFrom",
    ),
    (
        "env-value-from-names-no-source",
        {"spec.triton": {"env": [{"name": "A", "valueFrom": {}}]}},
        "spec.triton.env[0].valueFrom.secretKeyRef",
    ),
    (
        "env-secret-name-invalid",
        {
            "spec.triton": {
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]
            }
        },
        "spec.triton.env[0].valueFrom.secretKeyRef.name",
    ),
    (
        "image-has-no-break-space",
        {"spec.triton": {"image": "nvcr.io/triton\u00a0server"}},
        "spec.triton.image",
    ),
    (
        "quantity-negative",
        {"spec.triton": {"resources": {"requests": {"cpu": "-1"}}}},
        "spec.triton.resources.requests.cpu",
    ),
    (
        "quantity-negative-integer",
        {"spec.triton": {"resources": {"limits": {"memory": -5}}}},
        "spec.triton.resources.limits.memory",
    ),
    (
        "quantity-too-long",
        {"spec.triton": {"resources": {"requests": {"memory": "1." + "0" * 70 + "Gi"}}}},
        "spec.triton.resources.requests.memory",
    ),
    (
        "resource-name-unqualified",
        {"spec.triton": {"resources": {"requests": {"fpga": 1}}}},
        "spec.triton.resources.requests",
    ),
    (
        "extended-resource-fractional",
        {"spec.triton": {"resources": {"limits": {"example.com/fpga": "0.5"}}}},
        "spec.triton.resources.limits",
    ),
    (
        "extended-resource-in-requests-only",
        {"spec.triton": {"resources": {"requests": {"example.com/fpga": 1}}}},
        "spec.triton.resources.requests",
    ),
    (
        "requests-over-limits",
        {"spec.triton": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1500m"}}}},
        "spec.triton.resources.requests",
    ),
    (
        "accelerator-resource-in-triton-resources",
        {
            "spec.accelerator": {"resource": "nvidia.com/gpu", "count": 1},
            "spec.triton": {"resources": {"limits": {"nvidia.com/gpu": 4}}},
        },
        "spec.triton.resources",
    ),
]


def make_invalid(overrides: dict[str, Any]) -> dict[str, Any]:
    obj = make_inference_service(name="invalid")
    for dotted, value in overrides.items():
        set_path(obj, dotted, value if value is DELETE else copy.deepcopy(value))
    return obj


def load_example(path: Path) -> dict[str, Any]:
    """The InferenceService of an example file (which may also hold its Namespace)."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    services = [d for d in documents if d.get("kind") == "InferenceService"]
    assert len(services) == 1, f"{path}: expected one InferenceService, found {len(services)}"
    return services[0]
