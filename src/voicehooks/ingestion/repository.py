"""Queries of ingestion: match subscriptions, write events; their deliveries go to the queue."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.engine import session_driver_connection
from voicehooks.queue import enqueue


@dataclass(frozen=True)
class MatchKey:
    workspace_id: uuid.UUID
    event: str
    channel_id: uuid.UUID


@dataclass(frozen=True)
class Candidate:
    """An active subscription whose workspace, event and channel filter fit the key."""

    key: MatchKey
    subscription_id: uuid.UUID
    statuses: tuple[str, ...]


@dataclass(frozen=True)
class NewEvent:
    id: uuid.UUID
    workspace_id: uuid.UUID
    client_id: str | None
    event: str
    call_id: str
    body: str
    delivery_count: int
    occurred_at: datetime | None


# The events of STORE_SQL, column by column: workspace ids, client ids, events, call ids,
# bodies, delivery counts, occurrence times.
EventColumns = tuple[
    list[uuid.UUID],
    list[str | None],
    list[str],
    list[str],
    list[str],
    list[int],
    list[datetime | None],
]
# Its deliveries: the position of each one's event (1-based) and its subscription.
DeliveryColumns = tuple[list[int], list[uuid.UUID]]


@dataclass(frozen=True)
class StoredEvent:
    id: uuid.UUID
    delivery_count: int


# One index probe of ix_subscriptions_match per distinct (workspace, event, channel) key, for
# the channel itself and for "any channel"; other workspaces, events and channels are not read.
MATCH_SQL = """
    SELECT k.workspace_id, k.event, k.channel_id, s.id, s.statuses
    FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS k(workspace_id, event, channel_id)
    CROSS JOIN LATERAL (
        SELECT id, statuses FROM subscriptions
        WHERE status = 'active' AND workspace_id = k.workspace_id AND event = k.event
          AND channel_id = k.channel_id
        UNION ALL
        SELECT id, statuses FROM subscriptions
        WHERE status = 'active' AND workspace_id = k.workspace_id AND event = k.event
          AND channel_id IS NULL
    ) AS s
"""

# A client id is new if its key goes into event_keys (the unique index that events, being
# partitioned by day, cannot hold); events without a client id have no key. A CTE over the
# events to store (`e`), for the statements that store events.
_KEYED = """
    keyed AS (
        INSERT INTO event_keys (workspace_id, client_id, event_id, created_at)
        SELECT e.workspace_id, e.client_id, e.id, now() FROM e WHERE e.client_id IS NOT NULL
        -- One key order for every request: concurrent batches sharing client ids cannot
        -- deadlock.
        ORDER BY e.workspace_id, e.client_id
        ON CONFLICT (workspace_id, client_id) DO NOTHING
        RETURNING event_id
    )"""

_INSERT_EVENTS = f"""
    WITH e AS (
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::timestamptz[])
             AS e(id, workspace_id, client_id, event, call_id, body, delivery_count, occurred_at)
    ), {_KEYED}
    INSERT INTO events (id, workspace_id, client_id, event, call_id, body, delivery_count,
                        occurred_at)
    SELECT e.* FROM e
    WHERE e.client_id IS NULL OR e.id IN (SELECT event_id FROM keyed)
    RETURNING id
"""  # noqa: S608 -- composed of constants

# What ingestion writes, in one statement (one round trip, one plan): the events whose client
# id is new (as _INSERT_EVENTS), and for those their deliveries, given as pairs (position of
# the event in the arrays, subscription), stored and queued by the queue's DELIVER. Ids are
# drawn by the database: the API would otherwise make and send two UUIDs per event. Returns
# the events' ids and whether each was stored, in the order given.
STORE_SQL = f"""
    WITH e AS (
        SELECT gen_random_uuid() AS id, e.*
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                    $7::timestamptz[]) WITH ORDINALITY
             AS e(workspace_id, client_id, event, call_id, body, delivery_count, occurred_at,
                  position)
    ), {_KEYED}, stored AS (
        INSERT INTO events (id, workspace_id, client_id, event, call_id, body, delivery_count,
                            occurred_at)
        SELECT e.id, e.workspace_id, e.client_id, e.event, e.call_id, e.body, e.delivery_count,
               e.occurred_at
        FROM e
        WHERE e.client_id IS NULL OR e.id IN (SELECT event_id FROM keyed)
        RETURNING id, call_id
    ), to_deliver AS (
        SELECT gen_random_uuid() AS delivery_id, stored.id AS event_id, d.subscription_id,
               stored.call_id, d.position
        FROM unnest($8::int[], $9::uuid[]) WITH ORDINALITY
             AS d(event_position, subscription_id, position)
        JOIN e ON e.position = d.event_position
        JOIN stored ON stored.id = e.id
    ), {enqueue.DELIVER}
    -- Two arrays in one row: cheaper to decode than a row per event. (And DELIVER's wake-up.)
    SELECT array_agg(e.id ORDER BY e.position),
           array_agg(e.id IN (SELECT id FROM stored) ORDER BY e.position),
           (SELECT count(*) FROM woken)
    FROM e
"""  # noqa: S608 -- composed of constants

# By the key, then the event by its partition key (the key's created_at is the event's).
_STORED_EVENTS = """
    SELECT k.workspace_id, k.client_id, e.id, e.delivery_count
    FROM unnest($1::uuid[], $2::text[]) AS wanted(w, c)
    JOIN event_keys k ON k.workspace_id = wanted.w AND k.client_id = wanted.c
    JOIN events e ON e.id = k.event_id AND e.created_at = k.created_at
"""

# Every new connection of the API looks up their types first (see db.engine.look_up_types).
HOT_STATEMENTS = (
    MATCH_SQL,
    STORE_SQL,
    _INSERT_EVENTS,
    _STORED_EVENTS,
    *enqueue.HOT_STATEMENTS,
)


class IngestionRepository:
    """Runs on asyncpg directly, ingestion being the API's hot path: on a connection of the
    ingest writer's (each statement commits on its own), or on the one under a session."""

    def __init__(self, on: AsyncSession | asyncpg.Connection) -> None:
        self._on = on

    async def connection(self) -> asyncpg.Connection:
        if isinstance(self._on, asyncpg.Connection):
            return self._on
        return await session_driver_connection(self._on)

    async def candidates(self, keys: Sequence[MatchKey]) -> list[Candidate]:
        if not keys:
            return []
        connection = await self.connection()
        rows = await connection.fetch(
            MATCH_SQL,
            [key.workspace_id for key in keys],
            [key.event for key in keys],
            [key.channel_id for key in keys],
        )
        return [Candidate(MatchKey(row[0], row[1], row[2]), row[3], tuple(row[4])) for row in rows]

    async def insert_events(self, events: Sequence[NewEvent]) -> set[uuid.UUID]:
        """Insert the events whose client id is new; return the ids that were inserted."""
        connection = await self.connection()
        rows = await connection.fetch(
            _INSERT_EVENTS,
            [e.id for e in events],
            [e.workspace_id for e in events],
            [e.client_id for e in events],
            [e.event for e in events],
            [e.call_id for e in events],
            [e.body for e in events],
            [e.delivery_count for e in events],
            [e.occurred_at for e in events],
        )
        return {row[0] for row in rows}

    async def store(
        self, events: "EventColumns", deliveries: "DeliveryColumns"
    ) -> tuple[list[uuid.UUID], list[bool]]:
        """Insert the events whose client id is new and the deliveries of those (STORE_SQL);
        the events' ids and whether each was stored, in order. One statement: atomic by
        itself, in a transaction of the caller's or none. The dispatchers wake on commit."""
        connection = await self.connection()
        ids, stored, _ = await connection.fetchrow(STORE_SQL, *events, *deliveries)
        return ids, stored

    async def stored_events(
        self, keys: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], StoredEvent]:
        connection = await self.connection()
        rows = await connection.fetch(
            _STORED_EVENTS,
            [workspace_id for workspace_id, _ in keys],
            [client_id for _, client_id in keys],
        )
        return {(row[0], row[1]): StoredEvent(row[2], row[3]) for row in rows}
