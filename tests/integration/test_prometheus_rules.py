"""deploy/prometheus/: the scrape config and alert rules pass promtool, and so do their tests.

Every alert of alerts.yml has a case in deploy/prometheus/tests/ that makes it
fire and one that keeps it quiet; this runs them with the real promtool
(Debian's `prometheus` package).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_program

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
OPERATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = require_program("promtool")
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def _alert_names() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_scrape_config_and_its_rule_files_are_valid():
    result = _promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_are_valid():
    result = _promtool("check", "rules", PROMETHEUS_DIR / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests_file", RULE_TESTS, ids=lambda path: path.name)
def test_the_alert_rules_unit_tests_pass(tests_file):
    result = _promtool("test", "rules", tests_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_in_the_runbook():
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    runbook = set(re.findall(r"^### (\w+)", OPERATIONS_DOC.read_text(), re.MULTILINE))
    alerts = set(_alert_names())
    assert alerts, "no alerts found"
    assert alerts - tested == set(), "alerts no test makes fire"
    assert alerts ^ runbook == set(), "alerts and docs/operations.md's ### headings differ"
