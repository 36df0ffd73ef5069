"""Bad input (issue 13): the PromQL the Prometheus source runs, with hostile label values,
parses in the real Prometheus (`promtool check rules`, Debian's Prometheus 2.42).

300 derandomized targets (namespace, name, model names and pod prefixes of hostile text, and
latencyQuery and rateQuery overrides with every placeholder inside quotes) make 2,100 queries,
all checked by one promtool run: about 3 s on two cores. tests/unit/test_fuzz_spec.py reads the same queries'
label matchers back and compares their values.

U+FFFD is in: Prometheus refuses it raw inside quotes, so promql_string escapes it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import hostile_text
from tests.reliability import record
from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import prometheus_queries

pytestmark = pytest.mark.integration

EXAMPLES = 300
OVERRIDE = 'custom{namespace="$namespace",svc="${name}",pod=~"$pods",model=~"${models}"}'
text = hostile_text
# JSON is YAML, once the characters YAML refuses raw (DEL, C1 controls, U+FFFE, U+FFFF) are escaped.
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x9f\ufffe\uffff]")


def yaml_text(obj: object) -> str:
    return _NOT_YAML_PRINTABLE.sub(
        lambda found: f"\\u{ord(found.group()):04x}", json.dumps(obj, ensure_ascii=False)
    )


def fuzzed_queries() -> list[str]:
    queries: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        namespace=text,
        name=text,
        models=st.lists(text.filter(bool), min_size=1, max_size=3, unique=True),
        prefixes=st.lists(text.filter(bool), min_size=1, max_size=2, unique=True),
        percentile=st.floats(50.0, 99.9),
    )
    def collect(namespace: str, name: str, models: list[str], prefixes: list[str], percentile: float) -> None:
        target = ScalingTarget(
            namespace=namespace,
            name=name,
            models=tuple(models),
            percentile=percentile,
            pod_prefixes=tuple(prefixes),
            ready_replicas=1,
            pod_selector={},
            latency_query=OVERRIDE,
            rate_query=OVERRIDE,
        )
        queries.extend(prometheus_queries(target).values())

    collect()
    return queries


def test_fuzzed_queries_parse_in_prometheus(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/install-system-deps.sh")
    queries = fuzzed_queries()
    rules = {
        "groups": [
            {"name": "fuzz", "rules": [{"record": f"fuzz_{i}", "expr": q} for i, q in enumerate(queries)]}
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml_text(rules), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[:4000]
    assert f"SUCCESS: {len(queries)} rules found" in output, output[:4000]
    record(
        "bad input",
        "PromQL for fuzzed targets (hostile names, namespaces, pod and model names)",
        "every query passes the real `promtool check rules`",
        queries_checked=len(queries),
    )
