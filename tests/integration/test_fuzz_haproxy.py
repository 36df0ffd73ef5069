"""Bad input (issue 13): every haproxy.cfg rendered from a fuzzed InferenceService passes the
real `haproxy -c`.

200 derandomized InferenceServices from tests/fuzzing.py, each also with a hostile name and with
a hostile namespace (the model refuses those today), are rendered twice, with the in-cluster
router options and with local ones (nameservers, bind address, ports), and each distinct
haproxy.cfg (about 150: simple names recur) is checked by /usr/sbin/haproxy, two at a time;
10-15 s on two cores. tests/unit/test_fuzz_spec.py checks the same configs' structure
against a benign config's, faster and with more examples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.builders import make_inference_service
from tests.fuzzing import accepted_bodies, hostile_text, with_hostile_names
from tests.reliability import record
from tritonscale.api.resource import InvalidInferenceService, parse_inference_service
from tritonscale.api.spec import MAX_VARIANTS
from tritonscale.policy.placement import split_replicas
from tritonscale.policy.replicas import reconciled_replicas
from tritonscale.render.router import CONFIG_DIR as ROUTER_CONFIG_DIR
from tritonscale.render.router import CONFIG_FILE, VARIANTS_MAP_FILE, RouterOptions
from tritonscale.render.stack import RenderOptions, render_stack

pytestmark = pytest.mark.integration

EXAMPLES = 200
CONFIG_DIR = "/tmp/tritonscale-fuzz-haproxy"  # where the configs with variants find their map
LOCAL = RenderOptions(
    cluster_domain="cluster.test",
    router=RouterOptions(
        nameservers=("127.0.0.1:5353", "[::1]:53"),
        bind_address="127.0.0.1",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18404,
        runtime_socket="/tmp/tritonscale-fuzz-admin.sock",
        threads=2,
        max_connections=100,
        config_dir=CONFIG_DIR,
    ),
)


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.fail("haproxy is not installed: run scripts/install-system-deps.sh")
    return binary


def rendered_configs() -> dict[str, dict[str, Any]]:
    """Each distinct haproxy.cfg of the fuzzed services, with the body it came from."""
    configs: dict[str, dict[str, Any]] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=accepted_bodies(), name=hostile_text, namespace=hostile_text)
    def collect(body: dict[str, Any], name: str, namespace: str) -> None:
        for variant in with_hostile_names(body, name, namespace):
            try:
                service = parse_inference_service(variant)
            except InvalidInferenceService:
                continue
            placement = split_replicas(reconciled_replicas(service), service.spec.capacity)
            for options in (RenderOptions(), LOCAL):
                objects = render_stack(service, placement, options)
                (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
                configs.setdefault(configmap["data"][CONFIG_FILE], variant)

    collect()
    # Services serving one to MAX_VARIANTS variants, whatever the fuzzing happened to draw.
    for count in range(1, MAX_VARIANTS + 1):
        body = make_inference_service(
            spec__model={
                "repository": "/models",
                "names": ["m"],
                "variants": [
                    {"name": f"m-{index}", "accuracy": 0.99, "speedup": 2 + index} for index in range(count)
                ],
            },
            spec__autoscaling={"accuracy": {"floor": 0.995}},
        )
        service = parse_inference_service(body)
        placement = split_replicas(reconciled_replicas(service), service.spec.capacity)
        for options in (RenderOptions(), LOCAL):
            (configmap,) = [o for o in render_stack(service, placement, options) if o["kind"] == "ConfigMap"]
            configs.setdefault(configmap["data"][CONFIG_FILE], body)
    return configs


def test_every_fuzzed_haproxy_cfg_passes_haproxy_check(tmp_path: Path) -> None:
    binary = haproxy_binary()
    Path(CONFIG_DIR).mkdir(exist_ok=True)
    # The map every variant key can be in (render_variants_map writes it beside a real config).
    (Path(CONFIG_DIR) / VARIANTS_MAP_FILE).write_text("".join(f"v{i} 0\n" for i in range(MAX_VARIANTS)))
    started = time.monotonic()
    configs = rendered_configs()
    with_variants = sum("frontend control" in config for config in configs)
    assert with_variants >= 2 * MAX_VARIANTS, f"only {with_variants} configs have variants"
    rendered = time.monotonic()
    paths = []
    for index, config in enumerate(configs):
        path = tmp_path / f"haproxy-{index:04d}.cfg"
        # The in-cluster configs' map is in the router pod's config directory: here, ours.
        path.write_text(
            config.replace(f"{ROUTER_CONFIG_DIR}/{VARIANTS_MAP_FILE}", f"{CONFIG_DIR}/{VARIANTS_MAP_FILE}")
        )
        paths.append(path)

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False
        )

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(check, paths))
    checked = time.monotonic()
    print(
        f"{len(paths)} distinct configs from {EXAMPLES} services: rendered in "
        f"{rendered - started:.1f} s, checked in {checked - rendered:.1f} s"
    )
    failures = [
        f"{path.name} (from {body['metadata']!r}):\n{result.stdout}{result.stderr}"
        for path, body, result in zip(paths, configs.values(), results, strict=True)
        if result.returncode != 0
    ]
    assert not failures, f"{len(failures)} of {len(paths)} configs fail `haproxy -c`:\n" + "\n".join(
        failures[:5]
    )
    assert len(paths) >= EXAMPLES // 2  # most examples differ in name, namespace, policy or size
    record(
        "bad input",
        f"{EXAMPLES} fuzzed services, hostile names and namespaces included, rendered to haproxy.cfg",
        "every distinct config passes the real `haproxy -c`",
        configs_checked=len(paths),
    )
