"""Group commit: concurrent writes share a commit; one failure is undone alone."""

import asyncio

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shared.db import make_engine
from shared.group_commit import GroupCommitWriter
from shared.migrations import upgrade
from tests.kafka_helpers import effects, test_metadata


async def test_concurrent_writes_commit_together_and_a_failure_stays_alone(database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    writer = GroupCommitWriter(engine, max_batch=50)
    writer.start()
    commits = []
    from sqlalchemy import event

    event.listen(engine, "commit", lambda connection: commits.append(1))
    try:
        def ok(number):
            def work(session: Session) -> int:
                session.execute(insert(effects).values(event_id=f"ok-{number}"))
                return number
            return work

        def failing(session: Session) -> None:
            session.execute(insert(effects).values(event_id="doomed"))
            raise ValueError("refused by the domain")

        works = [ok(n) for n in range(20)] + [failing] + [ok(n) for n in range(20, 40)]
        results = await asyncio.gather(*(writer.run(work) for work in works), return_exceptions=True)
        assert results[:20] == list(range(20)) and results[21:] == list(range(20, 40))
        assert isinstance(results[20], ValueError)
        with Session(engine) as session:
            stored = {row[0] for row in session.execute(select(effects.c.event_id)).all()}
        assert stored == {f"ok-{n}" for n in range(40)}, "the failed operation left nothing"
        assert len(commits) < 40, f"{len(commits)} commits for 40 writes: they were not grouped"
    finally:
        await writer.stop()
        engine.dispose()


async def test_an_operation_that_breaks_a_constraint_fails_alone_and_leaves_nothing(database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    writer = GroupCommitWriter(engine)
    writer.start()
    try:
        def duplicate_primary_key(session: Session) -> None:
            session.execute(insert(effects).values(id=1, event_id="a"))

        await writer.run(duplicate_primary_key)
        with pytest.raises(IntegrityError):
            await writer.run(duplicate_primary_key)
        with Session(engine) as session:
            assert session.execute(select(func.count()).select_from(effects)).scalar() == 1
    finally:
        await writer.stop()
        engine.dispose()
