"""Which metrics source the operator reads for a service (app.SourceChooser)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tests.builders import make_inference_service
from tritonscale.api.resource import parse_inference_service
from tritonscale.app import SourceChooser
from tritonscale.clients.observations import TritonSource
from tritonscale.config import OperatorConfig


def _choose(metrics: dict[str, Any], prometheus_url: str | None = None) -> tuple[Any, str]:
    chooser = SourceChooser(OperatorConfig(prometheus_url=prometheus_url), SimpleNamespace(core=None))  # type: ignore[arg-type]
    service = parse_inference_service(make_inference_service(spec__autoscaling={"metrics": metrics}))
    return chooser(service)


def test_auto_without_a_url_reads_triton() -> None:
    source, kind = _choose({"source": "auto"})
    assert kind == "triton" and isinstance(source, TritonSource)


def test_auto_with_a_query_and_no_url_says_prometheus_is_missing_instead_of_dropping_the_query() -> None:
    source, kind = _choose({"source": "auto", "latencyQuery": "histogram_quantile(0.95, x)"})
    assert kind == "prometheus"
    observation = source.observe(SimpleNamespace(ready_replicas=2))  # type: ignore[arg-type]
    assert observation.missing is not None
    assert "queries" in observation.missing and "prometheusURL" in observation.missing
