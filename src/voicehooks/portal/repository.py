"""The portal's own queries: overview aggregates, delivery search, a delivery with its attempts.

Everything the portal changes, and every list the API already has, goes through the domain
services; this module holds only the reads that no API needs. Each one reaches rows through
an index (migration 0003): per subscription of the workspace, newest first, bounded by a
keyset cursor and a LIMIT, so a page costs the same at any number of deliveries. These are
the statements to move when the queue's tables change.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    any_,
    func,
    literal,
    or_,
    select,
    text,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from voicehooks.db.engine import session_driver_connection
from voicehooks.db.keyset import newest, newest_first
from voicehooks.db.models import Delivery, Event, EventKey, Subscription
from voicehooks.page_tokens import decode_position, encode_position
from voicehooks.portal import rollups

# A delivery list's position: (created_at, seq) of the last row shown.
DeliveryCursor = tuple[datetime, int]

STATES = ("pending", "succeeded", "failed")
# Counted exactly up to this many; beyond, the overview says "more than".
BACKLOG_COUNT_CAP = 10_000
FAILING_SHOWN = 20


def encode_cursor(cursor: DeliveryCursor) -> str:
    return encode_position(*cursor)


def decode_cursor(token: str) -> DeliveryCursor:
    """Raises ValueError for anything that is not a cursor of a delivery list."""
    created_at, seq = decode_position(token, datetime, int)
    return created_at, seq  # type: ignore[return-value]


@dataclass(frozen=True)
class DeliveryFilter:
    subscription_id: uuid.UUID | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None


@dataclass(frozen=True)
class DeliveryRow:
    id: uuid.UUID
    subscription_id: uuid.UUID
    subscription_url: str
    event_id: uuid.UUID
    event: str
    call_id: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    seq: int

    @property
    def cursor(self) -> DeliveryCursor:
        return self.created_at, self.seq


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: DeliveryRow
    event_client_id: str | None
    event_occurred_at: datetime | None
    body: str


@dataclass(frozen=True)
class AttemptRow:
    id: uuid.UUID
    attempt: int
    execution_status: str
    created_at: datetime
    duration_ms: int
    response_status_code: int | None
    error: str | None
    response_body: str | None
    # As sent; None for attempts recorded before they were kept.
    request_headers: dict[str, str] | None


@dataclass(frozen=True)
class HourCounts:
    hour: datetime
    counts: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class FailingSubscription:
    id: uuid.UUID
    url: str
    event: str
    status: str
    status_reason: str | None
    failing_since: datetime | None


@dataclass(frozen=True)
class Overview:
    hours: list[HourCounts]
    totals: dict[str, int]
    backlog: int
    failing: list[FailingSubscription]

    @property
    def delivered(self) -> int:
        return sum(self.totals.values())


_ARRAY_OF_UUIDS = ARRAY(UUID(as_uuid=True))
# A list's order: newest first, ties (one batch shares one created_at) by ingestion order.
_ORDER = (Delivery.created_at, Delivery.seq)


def _row_columns(deliveries: Any) -> tuple[Any, ...]:
    """A DeliveryRow's columns, from `deliveries` (the table or a subquery of it)."""
    d = deliveries
    return (
        d.id,
        d.subscription_id,
        Subscription.url.label("subscription_url"),
        d.event_id,
        Subscription.event,
        d.call_id,
        d.state,
        d.attempts,
        d.next_attempt_at,
        d.last_error,
        d.created_at,
        d.seq,
    )


def _row(mapping: Any) -> DeliveryRow:
    return DeliveryRow(**{field: mapping[field] for field in DeliveryRow.__dataclass_fields__})


def _range_conditions(where: DeliveryFilter) -> list[ColumnElement[bool]]:
    conditions = []
    if where.state in STATES:
        # Inlined, not bound, so that the planner can use the partial index of failed ones.
        conditions.append(Delivery.state == literal(where.state, literal_execute=True))
    if where.since is not None:
        conditions.append(Delivery.created_at >= where.since)
    if where.until is not None:
        conditions.append(Delivery.created_at < where.until)
    return conditions


def _found_by_search(workspace_id: uuid.UUID, search: str) -> Select[Any]:
    """The ids of the deliveries a search names: of the events with that call id, client id
    or event id (by ix_events_portal_call, event_keys, the primary key), or that delivery."""
    try:
        search_id: uuid.UUID | None = uuid.UUID(search)
    except ValueError:
        search_id = None
    named = Event.call_id == search
    if search_id is not None:
        named = or_(named, Event.id == search_id)
    events = union_all(
        select(Event.id).where(Event.workspace_id == workspace_id, named),
        select(EventKey.event_id).where(
            EventKey.workspace_id == workspace_id, EventKey.client_id == search
        ),
    )
    found = aliased(Delivery, name="found")
    ids: Select[Any] = select(found.id).where(found.event_id.in_(events))
    if search_id is not None:
        return union_all(ids, select(literal(search_id, UUID(as_uuid=True))))  # type: ignore[return-value]
    return ids


class PortalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def deliveries_page(
        self,
        workspace_id: uuid.UUID,
        where: DeliveryFilter,
        *,
        cursor: DeliveryCursor | None,
        limit: int,
    ) -> list[DeliveryRow]:
        """Deliveries of the workspace, newest first, after `cursor`.

        Without a search: the newest `limit` of each subscription (ix_deliveries_portal_recent
        or, for failed ones, ix_deliveries_portal_failed), merged. A search names a call id, a
        client event id, or an event or delivery UUID: the events found by
        ix_events_portal_call, the client id's key (event_keys) or the primary key.
        """
        in_scope = [Subscription.workspace_id == workspace_id]
        if where.subscription_id is not None:
            in_scope.append(Subscription.id == where.subscription_id)
        conditions = _range_conditions(where)
        statement: Select[Any]
        if where.search:
            # The ids first (events by index, then their deliveries by ix_deliveries_event_id),
            # then the rows by primary key: an OR across the two would scan every delivery.
            named = func.array(_found_by_search(workspace_id, where.search).scalar_subquery())
            statement = select(*_row_columns(Delivery)).join(
                Subscription, Subscription.id == Delivery.subscription_id
            )
            statement = newest_first(
                statement.where(
                    Delivery.id == any_(type_coerce(named, _ARRAY_OF_UUIDS)), *in_scope, *conditions
                ),
                _ORDER,
                cursor,
                limit,
            )
        else:
            each = newest_first(
                select(Delivery).where(Delivery.subscription_id == Subscription.id, *conditions),
                _ORDER,
                cursor,
                limit,
            ).lateral("d")
            statement = (
                select(*_row_columns(each.c))
                .select_from(Subscription)
                .join(each, true())
                .where(*in_scope)
                .order_by(*newest((each.c.created_at, each.c.seq)))
                .limit(limit)
            )
        result = await self.session.execute(statement)
        return [_row(row) for row in result.mappings()]

    async def delivery(
        self, workspace_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> DeliveryDetail | None:
        result = await self.session.execute(
            select(*_row_columns(Delivery), Event.client_id, Event.occurred_at, Event.body)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .join(
                Event, and_(Event.id == Delivery.event_id, Event.created_at == Delivery.created_at)
            )
            .where(Delivery.id == delivery_id, Subscription.workspace_id == workspace_id)
        )
        row = result.mappings().first()
        if row is None:
            return None
        return DeliveryDetail(_row(row), row["client_id"], row["occurred_at"], row["body"])

    async def attempts(self, delivery_id: uuid.UUID) -> list[AttemptRow]:
        """Every attempt of a delivery, newest first (ix_attempts_delivery_id)."""
        result = await self.session.execute(
            text("""
                SELECT id, attempt, execution_status, created_at, duration_ms,
                       response_status_code, error, response_body, request_headers
                FROM attempts WHERE delivery_id = :delivery_id
                ORDER BY attempt DESC, created_at DESC
            """),
            {"delivery_id": delivery_id},
        )
        return [AttemptRow(**row) for row in result.mappings()]

    async def forget_hours(
        self, subscription_id: uuid.UUID, since: datetime, until: datetime | None = None
    ) -> None:
        """After a retry or a recover: the hours it reopened are counted on the next page."""
        connection = await session_driver_connection(self.session)
        await rollups.forget(connection, subscription_id, since, until)

    async def overview(
        self, workspace_id: uuid.UUID, subscription_id: uuid.UUID | None, now: datetime
    ) -> Overview:
        """The last 24 hours: deliveries per hour by state, attempt latency, backlog, failing.

        Closed hours come from the hourly figures (portal.rollups), the current one is counted.
        """
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
        subscriptions = await self._subscription_ids(workspace_id, subscription_id)
        connection = await session_driver_connection(self.session)
        figures = await rollups.hourly_figures(connection, subscriptions, start, now)
        per_hour: dict[datetime, rollups.HourFigures] = {}
        for (_, hour), hour_figures in figures.items():
            per_hour.setdefault(hour, rollups.HourFigures()).add(hour_figures)
        hours = []
        totals = dict.fromkeys(STATES, 0)
        for index in range(24):
            hour = start + timedelta(hours=index)
            f = per_hour.get(hour, rollups.HourFigures())
            counts = {
                state: n
                for state, n in (
                    ("pending", f.pending),
                    ("succeeded", f.succeeded),
                    ("failed", f.failed),
                )
                if n
            }
            for state, n in counts.items():
                totals[state] += n
            hours.append(HourCounts(hour, counts, f.percentile(0.5), f.percentile(0.95)))
        backlog = await self._backlog(workspace_id, subscription_id)
        failing = await self._failing(workspace_id, subscription_id)
        return Overview(hours=hours, totals=totals, backlog=backlog, failing=failing)

    async def _subscription_ids(
        self, workspace_id: uuid.UUID, subscription_id: uuid.UUID | None
    ) -> list[uuid.UUID]:
        subscription, params = self._scope(workspace_id, subscription_id)
        query = "SELECT s.id FROM subscriptions s WHERE s.workspace_id = :workspace_id "
        result = await self.session.execute(text(query + subscription), params)
        return list(result.scalars())

    @staticmethod
    def _scope(
        workspace_id: uuid.UUID, subscription_id: uuid.UUID | None, **params: Any
    ) -> tuple[str, dict[str, Any]]:
        params["workspace_id"] = workspace_id
        if subscription_id is None:
            return "", params
        params["subscription_id"] = subscription_id
        return "AND s.id = :subscription_id", params

    async def _backlog(self, workspace_id: uuid.UUID, subscription_id: uuid.UUID | None) -> int:
        subscription, params = self._scope(workspace_id, subscription_id, cap=BACKLOG_COUNT_CAP + 1)
        count = await self.session.scalar(
            text(f"""
                SELECT count(*) FROM (
                    SELECT 1 FROM subscriptions s
                    JOIN deliveries d ON d.subscription_id = s.id AND d.state = 'pending'
                    WHERE s.workspace_id = :workspace_id {subscription}
                    LIMIT :cap) AS pending
            """),  # noqa: S608 - a fixed condition
            params,
        )
        return int(count or 0)

    async def _failing(
        self, workspace_id: uuid.UUID, subscription_id: uuid.UUID | None
    ) -> list[FailingSubscription]:
        subscription, params = self._scope(workspace_id, subscription_id, shown=FAILING_SHOWN)
        result = await self.session.execute(
            text(f"""
                SELECT s.id, s.url, s.event, s.status, s.status_reason, s.failing_since
                FROM subscriptions s
                WHERE s.workspace_id = :workspace_id {subscription}
                  AND (s.failing_since IS NOT NULL OR s.status_reason IS NOT NULL)
                ORDER BY s.failing_since NULLS LAST, s.created_at DESC
                LIMIT :shown
            """),  # noqa: S608 - a fixed condition
            params,
        )
        return [FailingSubscription(**row) for row in result.mappings()]

    async def finished_shares(
        self, subscription_ids: list[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, tuple[int, int]]:
        """(succeeded, finished) deliveries of the last 24 hours (from the start of the hour 23
        hours ago), per subscription, from the hourly figures."""
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
        connection = await session_driver_connection(self.session)
        figures = await rollups.hourly_figures(connection, subscription_ids, start, now)
        shares: dict[uuid.UUID, tuple[int, int]] = {}
        for (sid, _), f in figures.items():
            succeeded, finished = shares.get(sid, (0, 0))
            shares[sid] = (succeeded + f.succeeded, finished + f.succeeded + f.failed)
        return {sid: share for sid, share in shares.items() if share[1]}

    async def subscription_choices(
        self, workspace_id: uuid.UUID, subscription_id: uuid.UUID | None
    ) -> list[tuple[uuid.UUID, str, str]]:
        """(id, event, url) of the workspace's subscriptions, for the delivery filter."""
        params: dict[str, Any] = {"workspace_id": workspace_id}
        subscription = ""
        if subscription_id is not None:
            subscription = "AND id = :subscription_id"
            params["subscription_id"] = subscription_id
        result = await self.session.execute(
            text(f"""
                SELECT id, event, url FROM subscriptions
                WHERE workspace_id = :workspace_id {subscription}
                ORDER BY created_at DESC, id DESC
                LIMIT 200
            """),  # noqa: S608 - a fixed condition
            params,
        )
        return [(row.id, row.event, row.url) for row in result]
