"""ORM models: every table of the service, in one metadata that Alembic migrates."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        uuid.UUID: UUID(as_uuid=True),
        datetime: DateTime(timezone=True),
        str: Text(),
    }


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=uuid.uuid4)


def _created_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now())


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = _created_at()


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str]
    created_at: Mapped[datetime] = _created_at()


class AccessKey(Base):
    """An organization's API key; only the SHA-256 of the (high-entropy) key is kept."""

    __tablename__ = "access_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = _created_at()


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        # Matching an event is an index lookup on (workspace, event, channel).
        Index(
            "ix_subscriptions_match",
            "workspace_id",
            "event",
            "channel_id",
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_subscriptions_listing", "workspace_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    service: Mapped[str]
    event: Mapped[str]
    url: Mapped[str]
    # Lower-cased host of `url`: the unit of per-destination concurrency.
    target_host: Mapped[str]
    # Encrypted (voicehooks.encryption tokens, bound to the row's id), as is each previous key.
    signing_key: Mapped[str]
    # What responses show of the key: its last 4 characters when it has at least 16, else null.
    signing_key_hint: Mapped[str | None]
    # Replaced keys that still sign until their overlap ends: [{"key", "expiresAt"}].
    previous_signing_keys: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    # As the customer wrote them, [{"key", "value"}]; channel_id and statuses are what matches.
    event_filters: Mapped[list[dict[str, str]]] = mapped_column(JSONB)
    channel_id: Mapped[uuid.UUID | None]
    # Sorted; empty means every status.
    statuses: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    template: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="active")
    status_reason: Mapped[str | None]
    # Start of the current unbroken run of failed attempts; null after any success.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _created_at()


# History (events, deliveries, attempts) is partitioned by day of `created_at`, and expires a
# day at a time (voicehooks.db.partitions): primary keys carry the partition key, and no
# foreign key points into history. A delivery's created_at is its event's (one transaction).
_BY_DAY = {"postgresql_partition_by": "RANGE (created_at)"}


def _partition_key() -> Mapped[datetime]:
    return mapped_column(primary_key=True, server_default=func.now())


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # The portal's delivery search by call id (migration 0003).
        Index("ix_events_portal_call", "workspace_id", "call_id"),
        _BY_DAY,
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[uuid.UUID]
    client_id: Mapped[str | None]
    event: Mapped[str]
    call_id: Mapped[str]
    # The exact JSON body every delivery of this event sends.
    body: Mapped[str]
    delivery_count: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _partition_key()


class EventKey(Base):
    """The idempotency key index of events: a client's event id, once per workspace.

    Not history, a key index: a unique constraint on a partitioned table must include the
    partition key, so (workspace, client id) cannot be unique on `events` itself. Written in the
    statement that writes the event (same `created_at`), trimmed by retention once the event's
    day is gone.
    """

    __tablename__ = "event_keys"
    __table_args__ = (Index("ix_event_keys_created_at", "created_at"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime]


class Delivery(Base):
    """One event for one subscription; its state machine is pending → succeeded | failed."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # Order per call: the next delivery of a call to queue is its earliest pending one.
        Index(
            "ix_deliveries_call_order",
            "subscription_id",
            "call_id",
            "seq",
            postgresql_where=text("state = 'pending'"),
        ),
        Index("ix_deliveries_listing", "subscription_id", "seq"),
        # The portal's pages (migration 0003): newest first and by time, with the state.
        Index(
            "ix_deliveries_portal_recent",
            "subscription_id",
            "created_at",
            "seq",
            postgresql_include=["state"],
        ),
        Index(
            "ix_deliveries_portal_failed",
            "subscription_id",
            "created_at",
            "seq",
            postgresql_where=text("state = 'failed'"),
        ),
        Index("ix_deliveries_event_id", "event_id"),
        # Its partitions leave room on each page for HOT updates (voicehooks.db.partitions).
        _BY_DAY,
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID]
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    call_id: Mapped[str]
    # Ingestion order, for the order per call.
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    state: Mapped[str] = mapped_column(server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # When the next attempt is due, as customers see it; null while the delivery waits for an
    # earlier delivery of the same call (its queue row has no due time), and once it is final.
    next_attempt_at: Mapped[datetime | None]
    # Null: the retry schedule decides. A number: final after that many (retry and recover).
    attempts_allowed: Mapped[int | None] = mapped_column(Integer)
    # Why a delivery ended without an attempt (e.g. "subscription inactive").
    last_error: Mapped[str | None]
    created_at: Mapped[datetime] = _partition_key()
    updated_at: Mapped[datetime] = _created_at()


class QueuedDelivery(Base):
    """The hot table: every pending delivery, and nothing else (voicehooks.queue).

    Of each call (subscription, call id) one row is the head: due (`due_at`), claimable. The
    others wait behind it with no due time, in sequence order, and the next becomes the head
    when it is final. Claims and the order per call read this table only, never the history.
    """

    __tablename__ = "delivery_queue"
    __table_args__ = (
        # One head per call: the order-per-call rule, kept by the database.
        Index(
            "uq_delivery_queue_head",
            "subscription_id",
            "call_id",
            unique=True,
            postgresql_where=text("due_at IS NOT NULL"),
        ),
        # A call's rows, for "does the call have pending work?" when a delivery is added.
        Index("ix_delivery_queue_call", "subscription_id", "call_id", "seq"),
        # The waiting rows: the next of a call, and calls left without a head.
        Index(
            "ix_delivery_queue_waiting",
            "subscription_id",
            "call_id",
            "seq",
            postgresql_where=text("due_at IS NULL"),
        ),
        # Per-host ready lists: the claim walks the hosts with room, each in due order.
        Index(
            "ix_delivery_queue_host_due",
            "target_host",
            "due_at",
            postgresql_where=text("due_at IS NOT NULL"),
        ),
        {"postgresql_with": {"fillfactor": "50"}},
    )

    delivery_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The delivery's created_at: its partition, so that a claim reads one day's indexes.
    delivery_created_at: Mapped[datetime]
    subscription_id: Mapped[uuid.UUID]
    call_id: Mapped[str]
    target_host: Mapped[str]
    # The delivery's sequence number: the order of the call.
    seq: Mapped[int] = mapped_column(BigInteger)
    # The head's: due for a claim from then on (a claim moves it to the end of its lease).
    # Null while the delivery waits behind the head of its call.
    due_at: Mapped[datetime | None]
    # Set by a claim; a result is recorded only by the worker holding the current token.
    claim_token: Mapped[uuid.UUID | None]


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_logs", "subscription_id", "created_at", "id"),
        # The portal overview's latency percentiles (migration 0003).
        Index(
            "ix_attempts_portal_latency",
            "subscription_id",
            "created_at",
            postgresql_include=["duration_ms"],
        ),
        Index("ix_attempts_delivery_id", "delivery_id"),
        _BY_DAY,
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID]
    subscription_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    event: Mapped[str]
    attempt: Mapped[int] = mapped_column(Integer)
    execution_status: Mapped[str]
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None]
    response_body: Mapped[str | None]
    # The request's headers as sent (signatures included: they are MACs, not keys).
    request_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # When the attempt started.
    created_at: Mapped[datetime] = _partition_key()


class DeliveryHour(Base):
    """The portal's hourly figures of a subscription (voicehooks.portal.rollups): a cache."""

    __tablename__ = "delivery_hours"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    pending: Mapped[int] = mapped_column(BigInteger)
    # Attempts per duration bucket (portal.rollups.LATENCY_BOUNDS_MS).
    latency: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    refreshed_at: Mapped[datetime]


class PortalSession(Base):
    """A customer portal session (SPEC §6): a one-time link, then a browser cookie.

    Only SHA-256 digests of the link's token and of the cookie are kept (both carry 256
    random bits). The link works once: exchanging it sets `entered_at` and the cookie's digest.
    """

    __tablename__ = "portal_sessions"

    id: Mapped[uuid.UUID] = _uuid_pk()
    link_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    cookie_hash: Mapped[bytes | None] = mapped_column(LargeBinary, unique=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    # Set when the link names one subscription: the session sees that one only.
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    read_only: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    entered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()


class MetricCounter(Base):
    """Counters shared by every process, so /metrics is right wherever it is scraped."""

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(primary_key=True)
    labels: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[float] = mapped_column(Double, server_default="0")
