"""The alert rules, checked by Prometheus's own tool: `promtool check rules` for syntax and
`promtool test rules` firing each alert from sample series (deploy/prometheus/alerts.test.yml).
.ci/run installs promtool (Debian's prometheus package); without it these say so and skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)


@needs_promtool
@pytest.mark.parametrize("check", [["check", "rules", "alerts.yml"],
                                   ["test", "rules", "alerts.test.yml"]])  # fmt: skip
def test_promtool_accepts_the_rules_and_every_alert_fires_as_its_test_says(
    check: list[str],
) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *check], cwd=RULES, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if case.get("exp_alerts")}  # fmt: skip
    assert alerts == fired
