"""Benchmark: a review meeting's report (GET /v1/plans/{plan_id}/reviews/{review_id}/report)
for a plan with 10,000 progress reports, against the plain commitments list
(GET /v1/commitments?limit=50) of the same catalog process, in the same run,
loaded with wrk (apt-get install wrk), rounds interleaved, medians.

Goal (issue 10): measure what the report's time travel costs over 10,000
append-only reports beside the list every client reads. The reports are
seeded straight into the catalog's database before the process starts (ORM
rows, as the catalog's write path stores them), spread unevenly over the
plan's commitments, `as_of` dates from the plan's adoption to late 2026,
recorded some days to a year later, one in twenty a correction; each
commitment's stored current progress is set from them, as the write path
does. The review is the last loaded Dialogue meeting (16th Senior Officials'
Meeting, 2024-05-14), so most reports count and the previous review's date
(2022-12-24) is computed as well. The CSV form is fetched 5 times and the
JSON form 20 times one request at a time (latency without queueing), before
the wrk rounds. The process keeps a rendered report until a progress report,
an activity or a meeting is added, so those repeated requests (and wrk's)
are served from it after the first; what computing a report costs without
it is measured apart, in this process, on the same database: `review_report`
called 10 times after the HTTP rounds.

Usage: .venv/bin/python -m bench.review_report [--reports 10000] [--seconds 10] [--connections 8] [--rounds 3]
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from sqlmodel import Session, select

from bench.catalog_list import wait_ok
from bench.support import KAFKA, REPO, free_port, percentile_ms, requests_per_second, serve
from catalog_service.models import CommitmentRow, PlanRow, ProgressReportRow
from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from catalog_service.progress import current_progress, plan_text_progress
from catalog_service.reviews import load_dialogue_meetings, review_report
from catalog_service.snapshot import load_snapshot
from catalog_service.sync import sync_plans
from shared.contracts.catalog import CommitmentDocument
from shared.db import make_engine

PLAN_ID = "caj-2006"
REVIEW_ID = "caj-2006-senior-officials-16"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
LAST_AS_OF = date(2026, 11, 30)
# Reports move a commitment mostly through implementation; a few close, stall or lapse.
STATUS_WEIGHTS = {"pipeline": 10, "implementation": 55, "finalisation": 12, "closed": 15, "cancelled": 3,
                  "suspended": 5}


def seed_reports(database_url: str, count: int, rng: random.Random) -> tuple[int, int]:
    """Sync the plan files and the Dialogue's meetings, then store `count`
    progress reports. Returns (commitments reported on, corrections)."""
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(path) for path in DEFAULT_PLAN_FILES], lambda: NOW)
    load_dialogue_meetings(engine, NOW)
    with Session(engine) as session:
        adopted = session.exec(select(PlanRow.adopted).where(PlanRow.id == PLAN_ID)).one()
        commitments = list(session.exec(select(CommitmentRow).where(CommitmentRow.plan_id == PLAN_ID)).all())
        # Uneven attention: a few commitments get many reports, most a handful.
        weights = [rng.paretovariate(1.2) for _ in commitments]
        span = (LAST_AS_OF - adopted).days
        drafts: list[dict] = []
        uncorrected: dict[str, list[dict]] = {}
        for number in range(count):
            commitment = rng.choices(commitments, weights)[0]
            earlier = uncorrected.setdefault(commitment.id, [])
            if earlier and rng.random() < 0.05:  # a correction: same day, another status, recorded later
                corrected = earlier.pop(rng.randrange(len(earlier)))
                as_of, supersedes = corrected["as_of"], corrected["id"]
                reported_at = min(corrected["reported_at"] + timedelta(days=rng.randint(1, 60)), NOW)
            else:
                as_of, supersedes = adopted + timedelta(days=rng.randint(0, span)), None
                recorded = datetime.combine(as_of, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
                reported_at = min(recorded + timedelta(days=rng.randint(0, 365), minutes=number % 600), NOW)
            draft = {
                "id": f"00000000-0000-4000-8000-{number:012d}", "commitment_id": commitment.id,
                "status": rng.choices(list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values()))[0], "as_of": as_of,
                "summary": f"Progress on {commitment.id} as of {as_of}: report {number}, "
                           "with the activities done, the participants and what comes next.",
                "evidence": [{"title": "Embassy press release", "url": f"https://example.org/reports/{number}"}],
                "figures": {"participants": rng.randint(5, 500)}, "supersedes": supersedes,
                "reporter_key_id": "bench-coord", "reporter_role": "coordinator", "reported_at": reported_at,
            }
            drafts.append(draft)
            earlier.append(draft)
        drafts.sort(key=lambda draft: draft["reported_at"])  # insertion order follows recording, as in the service
        rows = [ProgressReportRow(**draft) for draft in drafts]
        session.add_all(rows)
        session.flush()
        by_commitment: dict[str, list[ProgressReportRow]] = {}
        for row in rows:
            by_commitment.setdefault(row.commitment_id, []).append(row)
        for commitment in commitments:
            plan_text = plan_text_progress(CommitmentDocument.model_validate(commitment.document), adopted)
            commitment.progress = current_progress(by_commitment.get(commitment.id, []), plan_text).model_dump(
                mode="json")
            session.add(commitment)
        session.commit()
    engine.dispose()
    return len(by_commitment), sum(1 for draft in drafts if draft["supersedes"])


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency in ms."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    if "Non-2xx or 3xx responses" in output:
        raise RuntimeError(f"{url}: non-2xx responses\n{output}")
    return requests_per_second(output), percentile_ms(output, 50), percentile_ms(output, 99)


def compute_times(database_url: str, count: int) -> list[float]:
    """Milliseconds to compute the report from the database, `count` times, with no rendered report kept."""
    engine = make_engine(database_url)
    snapshot = load_snapshot(engine)
    times = []
    for _ in range(count):
        with Session(engine) as session:
            began = time.perf_counter()
            review_report(session, snapshot, PLAN_ID, REVIEW_ID)
            times.append((time.perf_counter() - began) * 1000)
    engine.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-review-"))
    kafka_port, controller_port = free_port(), free_port()
    kafka_env = dict(os.environ, KAFKA_PORT=str(kafka_port), KAFKA_CONTROLLER_PORT=str(controller_port),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, stdout=subprocess.DEVNULL)

    catalog_port = free_port()
    database_url = f"sqlite:///{scratch / 'catalog.sqlite3'}"
    env = dict(os.environ, CATALOG_DATABASE_URL=database_url, CATALOG_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}",
               CATALOG_LOG_LEVEL="WARNING")
    subprocess.run([str(REPO / ".venv/bin/caj"), "db", "upgrade", "--service", "catalog"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    started = time.monotonic()
    reported_on, corrections = seed_reports(database_url, args.reports, random.Random(10))
    print(f"seeded {args.reports} reports on {reported_on} commitments ({corrections} corrections) "
          f"in {time.monotonic() - started:.1f}s")
    process = serve("--factory catalog_service.main:app", catalog_port, env, scratch / "catalog.log")
    base = f"http://127.0.0.1:{catalog_port}"
    targets = {
        "catalog /v1/commitments?limit=50": f"{base}/v1/commitments?limit=50",
        "review report (JSON)": f"{base}/v1/plans/{PLAN_ID}/reviews/{REVIEW_ID}/report",
    }
    try:
        wait_ok(f"{base}/readyz")
        report = httpx.get(targets["review report (JSON)"], timeout=60).json()
        counted = sum(report["counts"].values())
        from_reports = sum(1 for pillar in report["pillars"] for item in pillar["commitments"]
                           if item["status_source"] == "report")
        print(f"report: {counted} commitments, {from_reports} with a reported status, "
              f"{sum(len(p['changes']) for p in report['pillars'])} changed since {report['previous_review']['id']}")
        assert len(httpx.get(targets["catalog /v1/commitments?limit=50"]).json()["items"]) == 50
        csv_times, json_times = [], []
        for _ in range(5):
            began = time.perf_counter()
            csv = httpx.get(f"{targets['review report (JSON)']}?format=csv", timeout=60)
            csv_times.append((time.perf_counter() - began) * 1000)
            csv.raise_for_status()
        for _ in range(20):  # without wrk's queueing: what one reader waits
            began = time.perf_counter()
            httpx.get(targets["review report (JSON)"], timeout=60).raise_for_status()
            json_times.append((time.perf_counter() - began) * 1000)
        for url in targets.values():
            wrk(url, 2, args.connections)  # warm-up (after the single requests: wrk leaves a queue behind)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits both alike
            for name, url in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)
    computed = compute_times(database_url, 10)

    print(f"CSV form: {len(csv.content)} bytes, {csv.text.count(chr(10)) - 1} rows, one request at a time: "
          f"first {csv_times[0]:.1f} ms, median of 5 {statistics.median(csv_times):.1f} ms")
    print(f"JSON form, one request at a time: median of 20 {statistics.median(json_times):.1f} ms, "
          f"max {max(json_times):.1f} ms")
    print(f"computing the report in-process, no rendered report kept: median of 10 "
          f"{statistics.median(computed):.1f} ms, max {max(computed):.1f} ms")
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds, medians")
    medians = {name: tuple(statistics.median(run[index] for run in runs) for index in range(3))
               for name, runs in results.items()}
    list_rps = medians["catalog /v1/commitments?limit=50"][0]
    for name, (rps, p50, p99) in medians.items():
        print(f"{name:<34} {rps:8.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   this/list {rps / list_rps:6.3f}")


if __name__ == "__main__":
    main()
