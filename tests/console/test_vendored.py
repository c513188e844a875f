"""The vendored htmx is the file VENDORED.md names, with its licence beside it."""

import hashlib
import re
from pathlib import Path

import console_service

STATIC = Path(console_service.__file__).parent / "static"


def test_vendored_htmx_matches_its_recorded_hash_and_has_its_licence():
    table = (STATIC / "VENDORED.md").read_text()
    row = re.search(r"\| htmx\.min\.js \|[^|]+\| (?P<version>[\d.]+) \|[^|]+\| (?P<sha256>[0-9a-f]{64}) \|", table)
    assert row is not None, "VENDORED.md names no htmx.min.js row"
    assert hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest() == row["sha256"]
    assert f'version:"{row["version"]}"' in (STATIC / "htmx.min.js").read_text()
    assert "Zero-Clause BSD" in (STATIC / "htmx.LICENSE").read_text()
