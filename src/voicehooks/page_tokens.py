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


def encode_sequence_token(sequence: int) -> str:
    """A page token for lists ordered by a sequence number (ingestion order)."""
    return base64.urlsafe_b64encode(json.dumps([sequence]).encode()).decode().rstrip("=")


def decode_sequence_token(token: str | None) -> int | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        (sequence,) = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("pageToken", "not a page token of this list") from None
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise invalid_field("pageToken", "not a page token of this list")
    return sequence
