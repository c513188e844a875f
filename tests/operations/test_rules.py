"""Objectives, alerts and their runbook: the generated rules are the
generator's output, promtool accepts the config and the rules and passes
the rule tests, every alert fires in one test case and stays quiet in
another, and every alert has its runbook section (and every section an alert)."""

import shutil
import subprocess

import pytest
import yaml

from caj import slo
from tests.operations.rules import (
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    alerts,
    promtool,
    rules,
    runbook_sections,
)


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def test_the_committed_slo_rules_are_the_generators_output():
    assert slo.RULES_FILE.read_text() == slo.render(), "run `caj slo rules --write` after editing deploy/slo.yaml"


def test_every_objective_has_each_window_recorded_and_both_burn_alerts():
    objectives = slo.load()["objectives"]
    generated = rules([slo.RULES_FILE])
    for objective in objectives:
        mine = [rule for rule in generated if rule["labels"].get("slo") == objective["name"]]
        recorded = {rule["record"] for rule in mine if "record" in rule}
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
            assert f"caj_slo:error_ratio:rate{window}" in recorded
        assert slo.BUDGET_REMAINING in recorded
        burn_alerts = {rule["alert"] for rule in mine if "alert" in rule}
        assert burn_alerts == {"SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow"}


@pytest.mark.parametrize(("change", "message"), [
    ({"sli": {"kind": "latency", "threshold_seconds": 0.3}}, "not a bucket"),
    ({"sli": {"kind": "throughput"}}, "unknown indicator kind"),
    ({"objective": 99.9}, "between 0 and 1"),
])
def test_the_generator_refuses_an_objective_it_cannot_measure(change, message):
    objective = {"name": "x", "service": "catalog", "description": "d", "objective": 0.99,
                 "sli": {"kind": "availability"}} | change
    with pytest.raises(slo.SLOError, match=message):
        slo.render({"period": "30d", "objectives": [objective]})


def test_promtool_accepts_the_config_and_every_rule_file():
    checked = run_promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The config's rule_files glob finds every rule file.
    for path in RULE_FILES:
        assert path.name in checked.stdout + checked.stderr
    checked = run_promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_rule_tests_pass():
    tested = run_promtool("test", "rules", *map(str, RULE_TEST_FILES))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rule_tests_fail_when_an_alert_changes(tmp_path):
    """The rule tests can fail: the same tests on a copy whose ServiceDown never fires."""
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    broken = tmp_path / "prometheus" / "rules" / "alerts.yml"
    broken.write_text(broken.read_text().replace('up{job=~"catalog|requests|notifications"} == 0',
                                                 'up{job=~"catalog|requests|notifications"} == 2'))
    tested = run_promtool("test", "rules", str(tmp_path / "prometheus" / "tests" / "alerts.test.yml"))
    assert tested.returncode != 0
    assert "ServiceDown" in tested.stdout + tested.stderr


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another():
    fires, quiet = set(), set()
    for path in RULE_TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - fires == set(), "alerts no rule test sees firing"
    assert names - quiet == set(), "alerts no rule test sees quiet"


def test_every_alert_has_a_severity_a_summary_and_its_runbook_section():
    sections = runbook_sections()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"page", "ticket"}, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in sections, f"docs/runbook.md has no section for {name}"


def test_every_runbook_section_but_the_objectives_is_an_alert():
    names = {alert["alert"].lower() for alert in alerts()}
    assert runbook_sections() - names == {"objectives"}
