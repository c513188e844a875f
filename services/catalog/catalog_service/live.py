"""The snapshot the API serves, kept in step with the database.

- After a report commits in this process, its request renews the snapshot
  before it answers: the caller reads its own write (list, detail, IATI).
- Reports taken by other replicas reach this one by polling: every few
  seconds one small query compares each commitment's revision with the
  snapshot's, and only what moved is rebuilt.

Polling rather than following catalog.progress: the snapshot is built from the
database anyway, so an event could only say "look again"; and it would need
one more reader without a consumer group in every replica, where the runtime
has only the key store. A replica shows another's report within
`snapshot_refresh_seconds`.
"""

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.engine import Engine

from catalog_service.snapshot import CatalogSnapshot, refresh_snapshot
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)


class LiveCatalog:
    def __init__(self, engine: Engine, *, interval: float,
                 on_new: Callable[[CatalogSnapshot], None] = lambda snapshot: None) -> None:
        self.engine = engine
        self.interval = interval
        self.on_new = on_new  # told of every new snapshot (the app serves it)
        self.snapshot: CatalogSnapshot | None = None
        # One refresh at a time, so a slower one never replaces a newer snapshot.
        self._lock = asyncio.Lock()
        self.worker = SupervisedWorker("catalog-refresh", self._poll)

    def serve(self, snapshot: CatalogSnapshot) -> None:
        self.snapshot = snapshot
        self.on_new(snapshot)

    async def refresh(self) -> None:
        async with self._lock:
            if self.snapshot is None:
                return  # still loading: the first snapshot will read everything
            fresh = await asyncio.to_thread(refresh_snapshot, self.engine, self.snapshot)
            if fresh is not self.snapshot:
                self.serve(fresh)

    async def refresh_after_write(self) -> None:
        """After a commit: a failure here must not turn a stored report into
        an error; the next poll catches up."""
        try:
            await self.refresh()
        except Exception:
            log.warning("could not renew the catalog snapshot after a write", exc_info=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
