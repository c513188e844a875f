"""`caj trace` on log files written as the services write them: the lines
of the request's traces from every file, in time order, and nothing else.
(tests/services/test_tracing.py runs it on a real system's logs.)"""

import json
from pathlib import Path

from typer.testing import CliRunner

from caj.cli import app as caj_app
from caj.trace import follow, read_log_lines, render

TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_TRACE = "11111111111111111111111111111111"


def line(time: str, service: str, message: str, *, trace_id: str | None, request_id: str | None = None,
         event_id: str | None = None, logger: str = "shared.consumer") -> str:
    return json.dumps({"time": f"2026-12-02 {time}", "level": "INFO", "logger": logger, "message": message,
                       "service": service, "request_id": request_id, "event_id": event_id, "trace_id": trace_id,
                       "span_id": None})


def write_logs(directory: Path) -> None:
    (directory / "requests.log").write_text("\n".join([
        line("10:00:00,000", "requests", "GET /v1/offers 200", trace_id=OTHER_TRACE, request_id="req-other",
             logger="caj.access"),
        line("10:00:01,000", "requests", "POST /v1/requests 201", trace_id=TRACE, request_id="req-1",
             logger="caj.access"),
        line("10:00:01,500", "requests", "a line outside any trace", trace_id=None),
    ]) + "\n")
    (directory / "notifications.log").write_text("\n".join([
        "Traceback (most recent call last): not a JSON line",
        line("10:00:01,250", "notifications", "processed request.submitted.v1 from requests.events",
             trace_id=TRACE, event_id="ev-1"),
        line("10:00:02,000", "notifications", "webhook delivery msg_1 to jica: delivered (200) in 3.0 ms",
             trace_id=TRACE),
        '{"time": "broken',
        line("10:00:02,100", "notifications", "processed another event", trace_id=OTHER_TRACE),
    ]) + "\n")


def test_a_request_id_brings_every_line_of_its_trace_in_time_order(tmp_path):
    write_logs(tmp_path)
    lines = follow(read_log_lines(sorted(tmp_path.glob("*.log"))), "req-1")
    assert [(entry.service, entry.message.split()[0]) for entry in lines] == [
        ("requests", "POST"), ("notifications", "processed"), ("notifications", "webhook")]
    assert {entry.trace_id for entry in lines} == {TRACE}
    rows = render(lines)
    assert [row.split()[0] for row in rows] == ["+0.0", "+250.0", "+1000.0"]
    assert "[event ev-1]" in rows[1]
    # A trace id finds the same lines.
    assert follow(read_log_lines(sorted(tmp_path.glob("*.log"))), TRACE) == lines


def test_the_command_prints_the_path_and_fails_for_an_unknown_id(tmp_path):
    write_logs(tmp_path)
    runner = CliRunner()
    found = runner.invoke(caj_app, ["trace", "req-1", "--log-dir", str(tmp_path)])
    assert found.exit_code == 0, found.output
    header, *rows = found.output.splitlines()
    assert header == f"trace {TRACE}: 3 lines from notifications, requests"
    assert "POST /v1/requests 201" in rows[0] and "delivered (200)" in rows[-1]

    missing = runner.invoke(caj_app, ["trace", "req-unknown", "--log-dir", str(tmp_path)])
    assert missing.exit_code == 1
    empty = runner.invoke(caj_app, ["trace", "req-1", "--log-dir", str(tmp_path / "nowhere")])
    assert empty.exit_code == 2
