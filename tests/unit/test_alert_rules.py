"""The chart's recording rules and alerts, checked with the real promtool (Debian's prometheus
package, installed by scripts/install-system-deps.sh): syntax, unit tests of every alert, and a
runbook for each."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
RULES = ROOT / "charts" / "tritonscale" / "files" / "rules.yaml"
RULE_TESTS = ROOT / "tests" / "rules" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/tritonscale/tritonscale/blob/main/docs/runbooks/"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: run scripts/install-system-deps.sh"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_test_a_severity_and_a_runbook_that_exists() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    for rule in alerts():
        name = rule["alert"]
        assert name in fired, f"{name} has no unit test in which it fires"
        assert name in quiet, f"{name} has no unit test in which it stays quiet"
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in {"critical", "warning"}
        assert isinstance(annotations, dict) and annotations["summary"]
        url = str(annotations["runbook_url"])
        assert url.startswith(RUNBOOK_BASE), url
        runbook = RUNBOOKS / url.removeprefix(RUNBOOK_BASE)
        assert runbook.is_file(), f"{name}: no runbook at {runbook}"
        assert str(name).removesuffix("Fast").removesuffix("Slowly") in runbook.read_text()
