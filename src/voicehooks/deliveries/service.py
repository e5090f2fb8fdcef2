"""Customers' view of deliveries: attempt logs, delivery states, replay and test events."""

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.engine import session_driver_connection
from voicehooks.db.models import Attempt, Delivery, Subscription
from voicehooks.deliveries.repository import DeliveryRepository
from voicehooks.deliveries.schemas import (
    AttemptDetails,
    AttemptOut,
    AttemptPage,
    DeliveryOut,
    DeliveryPage,
    RecoverOut,
    TestOut,
)
from voicehooks.errors import Conflict, NotFound, invalid_field
from voicehooks.ingestion.repository import IngestionRepository, NewEvent
from voicehooks.ingestion.service import delivery_body
from voicehooks.page_tokens import (
    decode_page_token,
    decode_sequence_token,
    encode_page_token,
    encode_sequence_token,
)
from voicehooks.queue import requeue
from voicehooks.queue.enqueue import NewDelivery, enqueue
from voicehooks.queue.wakeup import wake_dispatchers
from voicehooks.subscriptions.service import get_subscription
from voicehooks.tenancy.scope import WorkspaceScope

_TEST_DIRECTIONS = {"voice.inbound": "incoming", "voice.outbound": "outgoing"}


def attempt_out(row: Attempt) -> AttemptOut:
    return AttemptOut.model_validate(row)


def delivery_out(row: Delivery) -> DeliveryOut:
    return DeliveryOut.model_validate(row)


async def attempt_logs(
    session: AsyncSession,
    scope: WorkspaceScope,
    subscription_id: uuid.UUID,
    *,
    execution_status: str | None,
    page_token: str | None,
    limit: int,
) -> AttemptPage:
    await get_subscription(session, scope, subscription_id)
    rows = await DeliveryRepository(session).attempts_page(
        subscription_id,
        execution_status=execution_status,
        after=decode_page_token(page_token),
        limit=limit + 1,
    )
    token = (
        encode_page_token(rows[limit - 1].created_at, rows[limit - 1].id)
        if len(rows) > limit
        else None
    )
    return AttemptPage(results=[attempt_out(row) for row in rows[:limit]], next_page_token=token)


async def attempt_details(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> AttemptDetails:
    """Bird's log details: every attempt of one delivery (its `requestId`) of the subscription."""
    await get_subscription(session, scope, subscription_id)
    repository = DeliveryRepository(session)
    if not await repository.delivery_exists(subscription_id, delivery_id):
        raise NotFound("no such delivery")
    rows = await repository.attempts_of(subscription_id, delivery_id)
    return AttemptDetails(results=[attempt_out(row) for row in rows])


async def deliveries(
    session: AsyncSession,
    scope: WorkspaceScope,
    subscription_id: uuid.UUID,
    *,
    state: str | None,
    page_token: str | None,
    limit: int,
) -> DeliveryPage:
    await get_subscription(session, scope, subscription_id)
    rows = await DeliveryRepository(session).deliveries_page(
        subscription_id,
        state=state,
        before=decode_sequence_token(page_token),
        limit=limit + 1,
    )
    last = rows[limit - 1] if len(rows) > limit else None
    token = encode_sequence_token(last.seq, last.created_at) if last is not None else None
    return DeliveryPage(results=[delivery_out(row) for row in rows[:limit]], next_page_token=token)


def _require_active(subscription: Subscription) -> None:
    if subscription.status != "active":
        raise Conflict("the subscription is inactive; activate it first")


async def retry_delivery(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryOut:
    subscription = await get_subscription(session, scope, subscription_id)
    repository = DeliveryRepository(session)
    delivery = await repository.get_for_update(subscription_id, delivery_id)
    if delivery is None:
        raise NotFound("no such delivery")
    _require_active(subscription)
    if delivery.state == "pending":
        raise Conflict("the delivery is still pending")
    connection = await session_driver_connection(session)
    await requeue.requeue_one(connection, delivery.id, delivery.created_at)
    await wake_dispatchers(connection)
    await session.refresh(delivery)
    return delivery_out(delivery)


async def recover_failed(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID, since: datetime
) -> RecoverOut:
    subscription = await get_subscription(session, scope, subscription_id)
    if since > datetime.now(UTC):
        raise invalid_field("since", "must not be in the future")
    _require_active(subscription)
    connection = await session_driver_connection(session)
    requeued = await requeue.requeue_failed_since(connection, subscription_id, since)
    if requeued:
        await wake_dispatchers(connection)
    return RecoverOut(requeued=requeued)


def test_payload(subscription: Subscription) -> dict[str, object]:
    """A valid call of the subscription's event that its own filters let through."""
    channel = next(
        (f["value"] for f in subscription.event_filters if f["key"] == "channelId"), None
    )
    status = next(
        (f["value"] for f in subscription.event_filters if f["key"] == "status"), "ringing"
    )
    return {
        "id": f"test-{uuid.uuid4()}",
        "channelId": str(uuid.UUID(channel)) if channel else str(uuid.uuid4()),
        "status": status,
        "direction": _TEST_DIRECTIONS[subscription.event],
        "from": "+31600000000",
        "to": "+31200000000",
        "test": True,
    }


async def send_test_event(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID
) -> TestOut:
    subscription = await get_subscription(session, scope, subscription_id)
    _require_active(subscription)
    payload = test_payload(subscription)
    event_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    repository = IngestionRepository(session)
    await repository.insert_events(
        [
            NewEvent(
                id=event_id,
                workspace_id=scope.workspace_id,
                client_id=None,
                event=subscription.event,
                call_id=str(payload["id"]),
                body=delivery_body(subscription.event, payload),
                delivery_count=1,
                occurred_at=None,
            )
        ]
    )
    await enqueue(
        await session_driver_connection(session),
        [NewDelivery(delivery_id, event_id, subscription.id, str(payload["id"]))],
    )
    return TestOut(delivery_id=delivery_id)
