"""Ingestion: validate call events, match subscriptions, store event + deliveries atomically."""

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from voicehooks.errors import FieldError, InvalidInput
from voicehooks.ingestion.repository import (
    Candidate,
    EventColumns,
    IngestionRepository,
    MatchKey,
)
from voicehooks.ingestion.schemas import EventIn
from voicehooks.observability.metrics import EVENTS_INGESTED, counters
from voicehooks.voice import CALL_STATUSES, SERVICE

MAX_CALL_ID_LENGTH = 255


class CallFacts(NamedTuple):
    """What matching and storing need of an event's payload. A named tuple: made once per
    event on the hot path, where a frozen dataclass's __init__ costs several times more."""

    call_id: str
    channel_id: uuid.UUID
    status: str
    body: str = ""


def _storable_text(value: str) -> bool:
    """Postgres text holds no NUL, and UTF-8 has no lone surrogates (JSON can carry both)."""
    if "\x00" in value:
        return False
    if value.isascii():  # the usual case, without encoding a copy
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _channel_uuid(text: str) -> uuid.UUID | None:
    """The channel id as a UUID, None if it is none. Cached: the events of a batch mostly
    share their channels, and uuid.UUID() parses in Python (a microsecond per event)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


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
    channel_id = _channel_uuid(channel_raw) if isinstance(channel_raw, str) else None
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


# What json.dumps(..., ensure_ascii=False, separators=(",", ":"), allow_nan=False) builds on
# every call: made once, as ingestion renders a body per event.
_BODY_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,  # NaN, Infinity and overflowing numbers are not JSON to receivers
)


def delivery_body(event: str, payload: dict[str, Any]) -> str:
    """The JSON every delivery of the event sends (SPEC §4), rendered once at ingestion:
    compact, as sent, which is what receivers that re-serialize compare against (see
    voicehooks.receiver). orjson writes it in a seventh of the stdlib encoder's time, byte for
    byte the same for strings, integers, booleans and null; a payload with a float (written
    differently: 1e16 against 1e+16, and NaN as null instead of refused) or what orjson
    refuses (an integer beyond 64 bits, a lone surrogate) goes through the stdlib encoder."""
    document = {"service": SERVICE, "event": event, "payload": payload}
    if not _holds_float(payload):
        try:
            return orjson.dumps(document).decode()
        except TypeError:
            pass
    return _BODY_ENCODER.encode(document)


def _holds_float(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


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
            facts.append(CallFacts(found.call_id, found.channel_id, found.status, body))
    if errors:
        raise InvalidInput(errors)
    return facts


class Accepted(NamedTuple):
    """What ingestion answers for one event (schemas.IngestResult): a named tuple, as results
    are made per event on the hot path and rendered straight to JSON."""

    id: uuid.UUID
    deliveries: int
    duplicate: bool


@dataclass(slots=True)
class _Item:
    """One event of the transaction as `store` takes it through: the earlier item it repeats
    (a client id seen before in the transaction), its deliveries, its stored id."""

    event: EventIn
    repeats: "_Item | None" = None
    deliveries: int = 0
    id: uuid.UUID | None = None
    stored: bool = False


def _items(events: Sequence[EventIn]) -> list[_Item]:
    """Per-item records; a repeated client id points at its first occurrence (also one of
    another request in the same transaction)."""
    items: list[_Item] = []
    first: dict[tuple[uuid.UUID, str], _Item] = {}
    for event in events:
        item = _Item(event)
        if event.id is not None:
            original = first.setdefault((event.workspace_id, event.id), item)
            if original is not item:
                item.repeats = original
        items.append(item)
    return items


async def store(
    repository: IngestionRepository, events: Sequence[EventIn], facts: Sequence[CallFacts]
) -> list[Accepted]:
    """Store validated events (`validate_events`) and one delivery per matching subscription,
    in one statement (in the caller's transaction, if any); one result per event, in order.
    The events may come from several requests (the ingest writer's shared commit): each
    statement covers them all. Matching and the look-up of earlier duplicates only read.
    """
    items = _items(events)
    fresh = [(item, fact) for item, fact in zip(items, facts, strict=True) if item.repeats is None]
    keys = {(item.event.workspace_id, item.event.event, fact.channel_id) for item, fact in fresh}
    candidates: dict[tuple[uuid.UUID, str, uuid.UUID], list[Candidate]] = {}
    for candidate in await repository.candidates([MatchKey(*key) for key in keys]):
        key = candidate.key
        candidates.setdefault((key.workspace_id, key.event, key.channel_id), []).append(candidate)

    # Column by column, as the statement takes them: no per-row objects on the way.
    columns: EventColumns = ([], [], [], [], [], [], [])
    workspaces, client_ids, names, call_ids, bodies, counts, occurred = columns
    positions: list[int] = []
    subscriptions: list[uuid.UUID] = []
    for position, (item, fact) in enumerate(fresh, 1):
        event = item.event
        matched = [
            c.subscription_id
            for c in candidates.get((event.workspace_id, event.event, fact.channel_id), ())
            if _matches(c, fact.status)
        ]
        item.deliveries = len(matched)
        positions.extend([position] * len(matched))
        subscriptions.extend(matched)
        workspaces.append(event.workspace_id)
        client_ids.append(event.id)
        names.append(event.event)
        call_ids.append(fact.call_id)
        bodies.append(fact.body)
        counts.append(len(matched))
        occurred.append(event.occurred_at)
    if fresh:
        ids, stored = await repository.store(columns, (positions, subscriptions))
        for (item, _), event_id, inserted in zip(fresh, ids, stored, strict=True):
            item.id, item.stored = event_id, inserted

    # Client ids stored by an earlier transaction: their events are the originals.
    earlier = (
        await repository.stored_events(
            [
                (item.event.workspace_id, item.event.id)
                for item, _ in fresh
                if item.event.id is not None and not item.stored
            ]
        )
        if not all(item.stored for item, _ in fresh)
        else {}
    )

    results: list[Accepted] = []
    for item in items:
        original = item.repeats or item
        if original.stored:
            assert original.id is not None
            duplicate = original is not item
            results.append(Accepted(original.id, original.deliveries, duplicate))
            if not duplicate:
                counters.increment(EVENTS_INGESTED, event=item.event.event)
            continue
        assert item.event.id is not None  # only events with a client id can be duplicates
        found = earlier[(item.event.workspace_id, item.event.id)]
        results.append(Accepted(found.id, found.delivery_count, True))
    return results
