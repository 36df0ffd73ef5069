"""The shipped Grafana dashboard, checked against the rules of Grafana's dashboard-linter (its
Go module is not served by the module proxy here, so they are written out): every panel and
query uses the datasource variable, rates use $__rate_interval, each query selects the chosen
namespace and service, and every panel says what it shows and in what unit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).parents[2] / "charts" / "tritonscale" / "files" / "dashboard.json"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


PANELS = dashboard()["panels"]


def test_the_dashboard_has_a_datasource_variable_and_service_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name in ("namespace", "service"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert len({p["id"] for p in PANELS}) == len(PANELS)
    assert dashboard()["uid"] and not dashboard()["editable"]


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_panel_follows_the_linter_rules(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == "${datasource}"
    assert panel["title"] and panel["description"]
    if panel["type"] == "timeseries":
        assert panel["fieldConfig"]["defaults"]["unit"]
    for target in panel["targets"]:
        expr = target["expr"]
        assert target["datasource"]["uid"] == "${datasource}"
        assert 'namespace="$namespace"' in expr
        assert 'name="$service"' in expr or 'inferenceservice="$service"' in expr
        for window in re.findall(r"\b(?:rate|irate|increase)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{panel['title']}: {expr}"
