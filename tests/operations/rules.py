"""The project's Prometheus rules, alerts and runbook, as the tests read them."""

import re
import shutil
from pathlib import Path

import yaml

from shared.settings import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


def promtool() -> str:
    """Debian's promtool; its absence fails the test that needs it (CI installs it)."""
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    assert found, "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
    return found


def rules(files: list[Path] = RULE_FILES) -> list[dict]:
    return [rule for path in files for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def runbook_sections() -> set[str]:
    """The anchors of the runbook's second-level headings, as GitHub makes them."""
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
