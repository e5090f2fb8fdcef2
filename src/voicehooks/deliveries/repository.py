"""Reads of deliveries and their attempts, as customers see them (the queue writes them)."""

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.keyset import Cursor, newest_first
from voicehooks.db.models import Attempt, Delivery
from voicehooks.page_tokens import SequenceCursor

# How much later than a delivery's created_at one with a lower sequence number may be created:
# created_at is its transaction's start, the sequence number is drawn at the insert, so a
# transaction that began earlier can draw a higher number. Ingestion transactions last
# milliseconds; an hour covers any of them and still reads one or two days of history.
SEQUENCE_CLOCK_SKEW = timedelta(hours=1)


class DeliveryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def attempts_page(
        self,
        subscription_id: uuid.UUID,
        *,
        execution_status: str | None,
        after: Cursor | None,
        limit: int,
    ) -> Sequence[Attempt]:
        query = select(Attempt).where(Attempt.subscription_id == subscription_id)
        if execution_status is not None:
            query = query.where(Attempt.execution_status == execution_status)
        query = newest_first(query, (Attempt.created_at, Attempt.id), after, limit)
        return (await self.session.scalars(query)).all()

    async def delivery_exists(self, subscription_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(Delivery.id).where(
                Delivery.id == delivery_id, Delivery.subscription_id == subscription_id
            )
        )
        return found is not None

    async def attempts_of(
        self, subscription_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> Sequence[Attempt]:
        """Every attempt of one delivery, newest (highest attempt number) first."""
        query = (
            select(Attempt)
            .where(Attempt.delivery_id == delivery_id, Attempt.subscription_id == subscription_id)
            .order_by(Attempt.attempt.desc(), Attempt.created_at.desc(), Attempt.id.desc())
        )
        return (await self.session.scalars(query)).all()

    async def deliveries_page(
        self,
        subscription_id: uuid.UUID,
        *,
        state: str | None,
        before: SequenceCursor | None,
        limit: int,
    ) -> Sequence[Delivery]:
        """Newest first by ingestion order (one batch shares one created_at), before the
        cursor's sequence number and no later than its created_at allows (partitions newer than
        that are not read)."""
        query = select(Delivery).where(Delivery.subscription_id == subscription_id)
        if state is not None:
            query = query.where(Delivery.state == state)
        after = None
        if before is not None:
            before_sequence, created_at = before
            after = (before_sequence,)
            if created_at is not None:
                query = query.where(Delivery.created_at <= created_at + SEQUENCE_CLOCK_SKEW)
        query = newest_first(query, (Delivery.seq,), after, limit)
        return (await self.session.scalars(query)).all()

    async def get_for_update(
        self, subscription_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> Delivery | None:
        return await self.session.scalar(
            select(Delivery)
            .where(Delivery.id == delivery_id, Delivery.subscription_id == subscription_id)
            .with_for_update()
        )
