"""The batched result recorder: outcomes of attempts, their subscriptions' health, and what
follows from it (auto-disabled subscriptions stop their pending work), committed together."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg

from voicehooks.db.outage import DRIVER_ERRORS
from voicehooks.queue import requeue, results
from voicehooks.queue.results import AttemptRecord
from voicehooks.states import INACTIVE_ERROR
from voicehooks.subscriptions import health


async def record_batch(
    connection: asyncpg.Connection, records: Sequence[AttemptRecord], *, auto_disable_after: float
) -> tuple[list[tuple[uuid.UUID, str]], int]:
    """Returns the subscriptions it made inactive, with the reason ("failing" or "gone"), and
    how many waiting deliveries it queued because the one before them in their call ended."""
    async with _unflushed_transaction(connection):
        # Subscriptions first, then deliveries: the order in which PATCH and DELETE lock them.
        await health.mark_healthy(connection, results.subscription_ids(records, succeeded=True))
        disabled = [
            (subscription_id, "failing")
            for subscription_id in await health.mark_failing(
                connection,
                results.subscription_ids(records, succeeded=False),
                disable_after=auto_disable_after,
            )
        ]
        gone = sorted({r.delivery.subscription_id for r in records if r.endpoint_gone})
        disabled += [(sid, "gone") for sid in await health.disable_gone(connection, gone)]
        queued = await results.record(connection, records)
        if disabled:
            # Every worker (this one too, on the echo) drops what it holds of them.
            await requeue.stop(connection, [sid for sid, _ in disabled], INACTIVE_ERROR)
    return disabled, queued


@contextlib.asynccontextmanager
async def _unflushed_transaction(connection: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction whose commit does not wait for the WAL flush: losing it in a database
    crash only means its deliveries are sent again after their lease (at least once still
    holds). Begun with that setting in one round trip (asyncpg's `transaction()` and a
    `SET LOCAL` are two)."""
    await connection.execute("BEGIN; SET LOCAL synchronous_commit TO off")
    try:
        yield
    except BaseException:
        try:
            await connection.execute("ROLLBACK")
        except BaseException:
            # Left in the failed transaction, it must not serve anyone else.
            connection.terminate()
        raise
    await connection.execute("COMMIT")


ConnectionSource = Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]
RETRY_DELAY = 0.2


class Recorder:
    """Collects the outcomes of attempts and records them in batches: what gathers while one
    batch is written goes into the next. On a database fault the batch is kept and retried."""

    def __init__(
        self,
        connection: ConnectionSource,
        *,
        auto_disable_after: float,
        stopping: asyncio.Event,
        on_recorded: Callable[[list[AttemptRecord], list[tuple[uuid.UUID, str]], int], None],
        on_fault: Callable[[Exception], None],
    ) -> None:
        self._connection = connection
        self._auto_disable_after = auto_disable_after
        self._stopping = stopping
        self._on_recorded = on_recorded
        self._on_fault = on_fault
        self._ready = asyncio.Event()
        self._results: list[AttemptRecord] = []

    def add(self, record: AttemptRecord) -> None:
        self._results.append(record)
        self._ready.set()

    def wake(self) -> None:
        """Let `run` see that the dispatcher stops."""
        self._ready.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self._ready.wait()
            self._ready.clear()
            await self.flush()

    async def flush(self, *, give_up: Callable[[], bool] = lambda: False) -> None:
        """Record every collected outcome; `give_up` ends the retries after a fault."""
        while self._results:
            batch, self._results = self._results, []
            try:
                async with self._connection() as connection:
                    disabled, queued = await record_batch(
                        connection, batch, auto_disable_after=self._auto_disable_after
                    )
            except DRIVER_ERRORS as exc:
                self._on_fault(exc)
                self._results = batch + self._results
                if give_up():
                    return
                await asyncio.sleep(RETRY_DELAY)
                continue
            self._on_recorded(batch, disabled, queued)
