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
from voicehooks.queue.enqueue import NewDelivery
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


async def store(
    repository: IngestionRepository, events: Sequence[EventIn], facts: Sequence[CallFacts]
) -> list[IngestResult]:
    """Store validated events (`validate_events`) and one delivery per matching subscription,
    in the caller's transaction; one result per event, in order. The events may come from
    several requests (the ingest writer's shared transaction): each statement covers them all.
    """
    # A repeated client id is a duplicate of its first occurrence (also of another request).
    first_of: dict[tuple[uuid.UUID, str], int] = {}
    fresh: list[int] = []
    for index, item in enumerate(events):
        if item.id is not None:
            key = (item.workspace_id, item.id)
            if key in first_of:
                continue
            first_of[key] = index
        fresh.append(index)

    keys = list(
        dict.fromkeys(
            MatchKey(events[i].workspace_id, events[i].event, facts[i].channel_id) for i in fresh
        )
    )
    candidates_by_key: dict[MatchKey, list[Candidate]] = {}
    for candidate in await repository.candidates(keys):
        candidates_by_key.setdefault(candidate.key, []).append(candidate)

    new_events: list[NewEvent] = []
    matched: dict[uuid.UUID, list[uuid.UUID]] = {}
    for i in fresh:
        item, fact = events[i], facts[i]
        match_key = MatchKey(item.workspace_id, item.event, fact.channel_id)
        subscription_ids = [
            c.subscription_id
            for c in candidates_by_key.get(match_key, [])
            if _matches(c, fact.status)
        ]
        event_id = uuid.uuid4()
        matched[event_id] = subscription_ids
        new_events.append(
            NewEvent(
                id=event_id,
                workspace_id=item.workspace_id,
                client_id=item.id,
                event=item.event,
                call_id=fact.call_id,
                body=fact.body,
                delivery_count=len(subscription_ids),
                occurred_at=item.occurred_at,
            )
        )

    inserted = await repository.insert_events(new_events)
    await repository.insert_deliveries(
        [
            NewDelivery(uuid.uuid4(), new.id, subscription_id, new.call_id)
            for new in new_events
            if new.id in inserted
            for subscription_id in matched[new.id]
        ]
    )
    stored = (
        await repository.stored_events([(e.workspace_id, e.id) for e in events if e.id is not None])
        if len(inserted) < len(events)
        else {}
    )

    results: list[IngestResult] = []
    by_index = dict(zip(fresh, new_events, strict=True))
    for index, item in enumerate(events):
        new = by_index.get(index)
        if new is not None and new.id in inserted:
            results.append(IngestResult(id=new.id, deliveries=new.delivery_count, duplicate=False))
            counters.increment(EVENTS_INGESTED, event=item.event)
            continue
        assert item.id is not None  # only events with a client id can be duplicates
        first = by_index.get(first_of[(item.workspace_id, item.id)])
        original = stored.get((item.workspace_id, item.id))
        if first is not None and first.id in inserted:
            results.append(
                IngestResult(id=first.id, deliveries=first.delivery_count, duplicate=True)
            )
        else:
            assert original is not None
            results.append(
                IngestResult(id=original.id, deliveries=original.delivery_count, duplicate=True)
            )
    return results
