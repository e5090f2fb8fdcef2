"""Ingestion: validate call events, match subscriptions, store event + deliveries atomically."""

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voicehooks.errors import FieldError, InvalidInput
from voicehooks.ingestion.repository import (
    Candidate,
    IngestionRepository,
    MatchKey,
    NewEvent,
)
from voicehooks.ingestion.schemas import EventIn, IngestResult
from voicehooks.observability.metrics import EVENTS_INGESTED, counters
from voicehooks.queue.enqueue import NewDelivery, enqueue
from voicehooks.voice import CALL_STATUSES, SERVICE

MAX_CALL_ID_LENGTH = 255


@dataclass(frozen=True)
class CallFacts:
    call_id: str
    channel_id: uuid.UUID
    status: str
    body: str = ""


def _storable_text(value: str) -> bool:
    """Postgres text holds no NUL, and UTF-8 has no lone surrogates (JSON can carry both)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def call_facts(
    event: str, payload: dict[str, Any], field: str
) -> tuple[CallFacts | None, list[FieldError]]:
    """The three payload fields that matching needs, checked against SPEC §1 and §3."""
    errors = []
    call_id = payload.get("id")
    if (
        not isinstance(call_id, str)
        or not call_id
        or len(call_id) > MAX_CALL_ID_LENGTH
        or not _storable_text(call_id)
    ):
        errors.append(
            FieldError(field=f"{field}.id", message="required: the call id, 1–255 characters")
        )
    channel_raw = payload.get("channelId")
    channel_id = None
    if isinstance(channel_raw, str):
        with contextlib.suppress(ValueError):
            channel_id = uuid.UUID(channel_raw)
    if channel_id is None:
        errors.append(FieldError(field=f"{field}.channelId", message="required: a UUID"))
    status = payload.get("status")
    if not isinstance(status, str) or status not in CALL_STATUSES[event]:
        errors.append(
            FieldError(
                field=f"{field}.status",
                message=f"required: one of {', '.join(CALL_STATUSES[event])}",
            )
        )
    if errors or channel_id is None:
        return None, errors
    return CallFacts(call_id, channel_id, status), []  # type: ignore[arg-type]


def delivery_body(event: str, payload: dict[str, Any]) -> str:
    """The JSON every delivery of the event sends (SPEC §4), rendered once at ingestion."""
    return json.dumps(
        {"service": SERVICE, "event": event, "payload": payload},
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,  # NaN, Infinity and overflowing numbers are not JSON to receivers
    )


def _matches(candidate: Candidate, status: str) -> bool:
    return not candidate.statuses or status in candidate.statuses


def validate_events(events: Sequence[EventIn], *, batch: bool) -> list[CallFacts]:
    facts: list[CallFacts] = []
    errors: list[FieldError] = []
    for index, item in enumerate(events):
        prefix = f"events[{index}]." if batch else ""
        where = f"{prefix}payload"
        found, item_errors = call_facts(item.event, item.payload, where)
        errors.extend(item_errors)
        if item.id is not None and not _storable_text(item.id):
            errors.append(FieldError(field=f"{prefix}id", message="must be valid Unicode text"))
        try:
            body = delivery_body(item.event, item.payload)
        except ValueError:
            errors.append(FieldError(field=where, message="numbers must be finite"))
            continue
        if not _storable_text(body):
            errors.append(FieldError(field=where, message="must be valid Unicode text"))
        if found is not None:
            facts.append(dataclasses.replace(found, body=body))
    if errors:
        raise InvalidInput(errors)
    return facts


@dataclass(slots=True)
class _Item:
    """One event of the transaction as `store` takes it through: its facts, its new row (or
    the earlier item it repeats), its subscriptions, its result."""

    event: EventIn
    facts: CallFacts
    repeats: "_Item | None" = None
    row: NewEvent | None = None
    subscriptions: list[uuid.UUID] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> MatchKey:
        return MatchKey(self.event.workspace_id, self.event.event, self.facts.channel_id)


def _items(events: Sequence[EventIn], facts: Sequence[CallFacts]) -> list[_Item]:
    """Per-item records; a repeated client id points at its first occurrence (also one of
    another request in the same transaction)."""
    items: list[_Item] = []
    first: dict[tuple[uuid.UUID, str], _Item] = {}
    for event, fact in zip(events, facts, strict=True):
        item = _Item(event, fact)
        if event.id is not None:
            item.repeats = first.setdefault((event.workspace_id, event.id), item)
            if item.repeats is item:
                item.repeats = None
        items.append(item)
    return items


async def store(
    repository: IngestionRepository, events: Sequence[EventIn], facts: Sequence[CallFacts]
) -> list[IngestResult]:
    """Store validated events (`validate_events`) and one delivery per matching subscription,
    in the caller's transaction; one result per event, in order. The events may come from
    several requests (the ingest writer's shared transaction): each statement covers them all.
    """
    items = _items(events, facts)
    fresh = [item for item in items if item.repeats is None]
    candidates: dict[MatchKey, list[Candidate]] = {}
    for candidate in await repository.candidates(list({item.key: None for item in fresh})):
        candidates.setdefault(candidate.key, []).append(candidate)
    for item in fresh:
        item.subscriptions = [
            c.subscription_id
            for c in candidates.get(item.key, [])
            if _matches(c, item.facts.status)
        ]
        item.row = NewEvent(
            id=uuid.uuid4(),
            workspace_id=item.event.workspace_id,
            client_id=item.event.id,
            event=item.event.event,
            call_id=item.facts.call_id,
            body=item.facts.body,
            delivery_count=len(item.subscriptions),
            occurred_at=item.event.occurred_at,
        )

    inserted = await repository.insert_events([item.row for item in fresh if item.row])
    await enqueue(
        await repository.connection(),
        [
            NewDelivery(uuid.uuid4(), item.row.id, subscription_id, item.row.call_id)
            for item in fresh
            if item.row and item.row.id in inserted
            for subscription_id in item.subscriptions
        ],
    )
    # Client ids stored by an earlier transaction: their events are the originals.
    earlier = (
        await repository.stored_events(
            [(item.event.workspace_id, item.event.id) for item in fresh if item.event.id]
        )
        if len(inserted) < len(fresh)
        else {}
    )

    results: list[IngestResult] = []
    for item in items:
        original = item.repeats or item
        assert original.row is not None
        if original.row.id in inserted:
            duplicate = original is not item
            results.append(
                IngestResult(
                    id=original.row.id, deliveries=original.row.delivery_count, duplicate=duplicate
                )
            )
            if not duplicate:
                counters.increment(EVENTS_INGESTED, event=item.event.event)
            continue
        assert item.event.id is not None  # only events with a client id can be duplicates
        stored = earlier[(item.event.workspace_id, item.event.id)]
        results.append(IngestResult(id=stored.id, deliveries=stored.delivery_count, duplicate=True))
    return results
