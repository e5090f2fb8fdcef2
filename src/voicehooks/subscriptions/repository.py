"""Queries on subscriptions."""

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.keyset import Cursor, newest_first
from voicehooks.db.models import Subscription


class SubscriptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, subscription: Subscription) -> None:
        self.session.add(subscription)
        await self.session.flush()

    async def get(self, workspace_id: uuid.UUID, subscription_id: uuid.UUID) -> Subscription | None:
        return await self.session.scalar(
            select(Subscription).where(
                Subscription.id == subscription_id, Subscription.workspace_id == workspace_id
            )
        )

    async def get_for_update(
        self, workspace_id: uuid.UUID, subscription_id: uuid.UUID
    ) -> Subscription | None:
        return await self.session.scalar(
            select(Subscription)
            .where(Subscription.id == subscription_id, Subscription.workspace_id == workspace_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: ingestion's FK locks may pass
        )

    async def page(
        self,
        workspace_id: uuid.UUID,
        *,
        event: str | None,
        status: str | None,
        after: Cursor | None,
        limit: int,
    ) -> Sequence[Subscription]:
        query = select(Subscription).where(Subscription.workspace_id == workspace_id)
        if event is not None:
            query = query.where(Subscription.event == event)
        if status is not None:
            query = query.where(Subscription.status == status)
        query = newest_first(query, (Subscription.created_at, Subscription.id), after, limit)
        return (await self.session.scalars(query)).all()

    async def lock_filter_group(self, workspace_id: uuid.UUID, event: str) -> None:
        """Serialize writers of one (workspace, event) so the limit of identical sets holds."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"subscriptions:{workspace_id}:{event}"},
        )

    async def count_identical(
        self,
        workspace_id: uuid.UUID,
        event: str,
        channel_id: uuid.UUID | None,
        statuses: Sequence[str],
        *,
        excluding: uuid.UUID | None = None,
    ) -> int:
        query = select(func.count()).where(
            Subscription.workspace_id == workspace_id,
            Subscription.event == event,
            Subscription.channel_id.is_not_distinct_from(channel_id),
            Subscription.statuses == list(statuses),
        )
        if excluding is not None:
            query = query.where(Subscription.id != excluding)
        return int(await self.session.scalar(query) or 0)

    async def delete(self, subscription: Subscription) -> None:
        await self.session.delete(subscription)
        await self.session.flush()
