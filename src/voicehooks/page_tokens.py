"""Keyset pagination's page tokens, for every list: an opaque position after the last row.

A position is a tuple of the sort key's values (times, ids, sequence numbers) of the last
row shown, as base64url JSON. Every list's token is one of these; a token that does not
decode as the list's position is the client's mistake: a 422 naming `pageToken`.
"""

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from voicehooks.db.keyset import Cursor
from voicehooks.errors import ProblemError, invalid_field
from voicehooks.timestamps import in_utc

Value = datetime | uuid.UUID | int


def encode_position(*values: Value) -> str:
    raw = json.dumps(
        [
            v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
            for v in values
        ]
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _value(raw: Any, kind: type) -> Value:
    if kind is datetime and isinstance(raw, str):
        return in_utc(datetime.fromisoformat(raw))
    if kind is uuid.UUID and isinstance(raw, str):
        return uuid.UUID(raw)
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise ValueError("not a value of this position")


def decode_position(token: str, *kinds: type) -> tuple[Value, ...]:
    """The position in `token`, its values of `kinds`; ValueError for anything else."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a page token") from exc
    if not isinstance(raw, list) or len(raw) != len(kinds):
        raise ValueError("not a page token of this list")
    return tuple(_value(value, kind) for value, kind in zip(raw, kinds, strict=True))


def _not_this_list() -> ProblemError:
    return invalid_field("pageToken", "not a page token of this list")


def encode_page_token(created_at: datetime, row_id: uuid.UUID) -> str:
    """Lists newest first by (created_at, id): subscriptions, attempt logs."""
    return encode_position(created_at, row_id)


def decode_page_token(token: str | None) -> Cursor | None:
    if token is None:
        return None
    try:
        created_at, row_id = decode_position(token, datetime, uuid.UUID)
    except ValueError:
        raise _not_this_list() from None
    return created_at, row_id  # type: ignore[return-value]


# A position in a list ordered by sequence number: the last row's sequence and created_at
# (None in tokens issued before rows carried a time bound).
SequenceCursor = tuple[int, datetime | None]


def encode_sequence_token(sequence: int, created_at: datetime | None = None) -> str:
    """Lists by ingestion order (deliveries)."""
    return (
        encode_position(sequence) if created_at is None else encode_position(sequence, created_at)
    )


def decode_sequence_token(token: str | None) -> SequenceCursor | None:
    if token is None:
        return None
    for kinds in ((int, datetime), (int,)):
        try:
            position = decode_position(token, *kinds)
        except ValueError:
            continue
        return position[0], position[1] if len(position) > 1 else None  # type: ignore[return-value]
    raise _not_this_list()
