"""More InferenceServices than the operator has threads: spec changes still land.

The old operator gave every InferenceService a synchronous kopf daemon that held a worker thread
for ever; with 16 services no spec change was applied within 94 s. The figures at 1,000 services
come from benchmarks/operator_scale.py; this test only guards the property.
"""

from __future__ import annotations

import time

import pytest

from tests.builders import make_inference_service
from tests.e2e.conftest import OperatorThread
from tests.e2e.test_operator import _deployment, _yaml
from tritonscale.config import OperatorConfig
from tritonscale_sandbox.cluster import Cluster

pytestmark = pytest.mark.e2e

# Far beyond any sane reaction time, far below "never": the old operator failed this outright.
SPEC_CHANGE_DEADLINE_S = 30.0


def test_a_spec_change_lands_with_more_services_than_threads(
    cluster: Cluster, operator: OperatorThread
) -> None:
    config: OperatorConfig = operator.config
    count = config.reconcile_workers + config.autoscale_workers + 8
    ns = "e2e-many"
    cluster.create_namespace(ns)
    services = []
    for index in range(count):
        # Half autoscaled from a Prometheus that does not answer, half fixed: both kinds used to
        # hold a thread each.
        autoscaling = (
            {
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": {"source": "prometheus", "prometheusURL": "http://127.0.0.1:9/"},
            }
            if index % 2 == 0
            else None
        )
        overrides = {"spec__replicas": 1}
        if autoscaling is not None:
            overrides["spec__autoscaling"] = autoscaling  # type: ignore[assignment]
        services.append(make_inference_service(f"many-{index}", ns, **overrides))
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(_yaml(s) for s in services))
    cluster.wait_until(
        lambda: all(
            cluster.kubectl("get", "deployment", f"many-{i}-ondemand", "-n", ns, check=False).returncode == 0
            for i in (0, count // 2, count - 1)
        ),
        f"the stacks of {count} InferenceServices",
        timeout_s=120,
    )
    time.sleep(10)  # every autoscaled service is ticking by now

    target = f"many-{count - 1}"  # not autoscaled: spec.replicas is what it runs
    started = time.monotonic()
    cluster.kubectl("patch", "tis", target, "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    cluster.wait_until(
        lambda: _deployment(cluster, ns, f"{target}-ondemand")["spec"]["replicas"] == 2,
        f"the spec change of {target} to reach its Deployment",
        timeout_s=SPEC_CHANGE_DEADLINE_S,
    )
    print(f"spec change applied in {time.monotonic() - started:.1f}s with {count} InferenceServices")
    operator.assert_healthy()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
