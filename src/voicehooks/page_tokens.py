"""Keyset pagination: opaque page tokens that point after the last row of a page.

A token that does not decode is the client's mistake: a 422 naming `pageToken`.
"""

import base64
import binascii
import json
import uuid
from datetime import datetime

from voicehooks.db.keyset import Cursor
from voicehooks.errors import invalid_field
from voicehooks.timestamps import in_utc


def encode_page_token(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str | None) -> Cursor | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, row_id = json.loads(raw)
        cursor = (in_utc(datetime.fromisoformat(created_at)), uuid.UUID(row_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("pageToken", "not a page token of this list") from None
    return cursor


# A position in a list ordered by sequence number: the last row's sequence and created_at
# (None in tokens issued before rows carried a time bound).
SequenceCursor = tuple[int, datetime | None]


def encode_sequence_token(sequence: int, created_at: datetime | None = None) -> str:
    """A page token for lists ordered by a sequence number (ingestion order)."""
    position: list[object] = [sequence]
    if created_at is not None:
        position.append(created_at.isoformat())
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_sequence_token(token: str | None) -> SequenceCursor | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        sequence, *rest = json.loads(raw)
        created_at = in_utc(datetime.fromisoformat(rest[0])) if rest else None
        if len(rest) > 1:
            raise ValueError("too long")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("pageToken", "not a page token of this list") from None
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise invalid_field("pageToken", "not a page token of this list")
    return sequence, created_at
