"""The recorder's transaction: a batch of attempts, their subscriptions' health, and what
follows from it (auto-disabled subscriptions stop their pending work), committed together."""

import uuid
from collections.abc import Sequence

import asyncpg

from voicehooks.queue import requeue, results
from voicehooks.queue.results import AttemptRecord
from voicehooks.states import INACTIVE_ERROR
from voicehooks.subscriptions import health


async def record_batch(
    connection: asyncpg.Connection, records: Sequence[AttemptRecord], *, auto_disable_after: float
) -> tuple[list[tuple[uuid.UUID, str]], int]:
    """Returns the subscriptions it made inactive, with the reason ("failing" or "gone"), and
    how many waiting deliveries it queued because the one before them in their call ended."""
    async with connection.transaction():
        # Losing this commit in a database crash only means the deliveries are sent again
        # after their lease (at least once still holds), so it need not wait for the WAL flush.
        await connection.execute("SET LOCAL synchronous_commit TO off")
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
