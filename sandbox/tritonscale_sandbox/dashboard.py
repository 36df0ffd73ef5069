"""The shipped Grafana dashboard's data as a PNG: each time-series panel's queries run as range
queries on a Prometheus and drawn with matplotlib, in the dashboard's layout order. For READMEs,
demos and test reports where no Grafana runs."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _legend(template: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend format: `{{label}}` replaced by the series' label value."""
    return _LEGEND_LABEL.sub(lambda match: labels.get(match.group(1), ""), template)


def _range_query(url: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=30) as response:
        result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
    return result


def render_dashboard_png(
    prometheus_url: str,
    dashboard_path: Path,
    substitutions: Mapping[str, str],
    start: float,
    end: float,
    out: Path,
    step_s: float = 2.0,
) -> int:
    """Draw every time-series panel; returns the number of lines drawn."""
    dashboard = json.loads(dashboard_path.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.2 * rows), squeeze=False)
    lines = 0
    for axis, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            expr = target["expr"]
            for placeholder, value in substitutions.items():
                expr = expr.replace(placeholder, value)
            for series in _range_query(prometheus_url, expr, start, end, step_s):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = _legend(target["legendFormat"], series["metric"])
                axis.plot(times, values, label=label, linewidth=1.4)
                lines += 1
        axis.set_title(panel["title"], fontsize=10, loc="left")
        axis.set_ylabel(panel["fieldConfig"]["defaults"]["unit"], fontsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("seconds", fontsize=8)
    figure.suptitle(
        f"{dashboard['title']}: {', '.join(substitutions.get(k, '') for k in ('$namespace', '$service'))}"
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return lines
